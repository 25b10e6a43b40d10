"""The customer side of a scenario: scripted, rule-driven, or a model playing the customer.

A user answers ``next_message(transcript)`` with its next message, or None to
end the conversation. ``transcript`` is the conversation so far as
``[(role, text)]`` with role ``user`` / ``agent``.

- ``ScriptedUser``: the scenario's ``user.turns``, one per turn.
- ``RuleUser``: ``user.simulated``: the opening message, then the first rule
  whose phrases occur in the agent's last reply (each rule once unless
  ``once: false``), else ``otherwise``, else it stops; it also stops when the
  agent says one of ``stop_when_agent_says`` or after ``max_turns``.
- ``ModelUser``: a model (any backend handler) playing the customer from the
  scenario's goal, persona and rules; the rule user is its scripted fallback,
  used for the opening message (so every backend starts the same
  conversation), when the model fails, or answers nothing usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from agents.model_io import ChatMessage, ModelRequest
from evals.scenario import Scenario

Transcript = Sequence[tuple[str, str]]
STOP_TOKEN = "###DONE###"


class SimUser(Protocol):
    def next_message(self, transcript: Transcript) -> str | None: ...


def _last_agent(transcript: Transcript) -> str:
    for role, text in reversed(transcript):
        if role == "agent":
            return text
    return ""


def _user_turns(transcript: Transcript) -> int:
    return sum(1 for role, _ in transcript if role == "user")


class ScriptedUser:
    def __init__(self, turns: Sequence[str]) -> None:
        self._turns = list(turns)

    def next_message(self, transcript: Transcript) -> str | None:
        n = _user_turns(transcript)
        return self._turns[n] if n < len(self._turns) else None


class RuleUser:
    def __init__(self, scenario: Scenario) -> None:
        spec = scenario.user.simulated
        if spec is None:
            raise ValueError(f"scenario {scenario.id} has no simulated user")
        self.spec = spec
        self._used: set[int] = set()

    def next_message(self, transcript: Transcript) -> str | None:
        n = _user_turns(transcript)
        if n == 0:
            return self.spec.opening
        if n >= self.spec.max_turns:
            return None
        reply = _last_agent(transcript).casefold()
        if any(p.casefold() in reply for p in self.spec.stop_when_agent_says):
            return None
        for i, rule in enumerate(self.spec.rules):
            if rule.once and i in self._used:
                continue
            if any(p.casefold() in reply for p in rule.when_agent_says):
                self._used.add(i)
                return rule.say
        return self.spec.otherwise


def user_prompt(scenario: Scenario) -> str:
    rules = ""
    if scenario.user.simulated is not None and scenario.user.simulated.rules:
        rules = "\nHow you react:\n" + "\n".join(
            f"- if the agent says something like {r.when_agent_says!r}, you say: {r.say!r}"
            for r in scenario.user.simulated.rules
        )
    return (
        "You are role-playing a customer chatting with an online shop's support assistant. "
        "Write only the customer's next message: one or two short sentences, no quotes, no role names.\n"
        f"Your goal: {scenario.goal}\n"
        f"Your persona: {scenario.persona or 'an ordinary customer'}{rules}\n"
        f"When your goal is reached, or clearly cannot be reached, answer exactly {STOP_TOKEN}."
    )


class ModelUser:
    """A model plays the customer; ``fallback`` (a scripted or rule user) covers the opening and failures."""

    def __init__(self, scenario: Scenario, handler: Any, model: Any, fallback: SimUser, max_tokens: int = 60) -> None:
        self.scenario = scenario
        self._handler = handler
        self._model = model
        self._fallback = fallback
        self._max_tokens = max_tokens
        self.fallbacks = 0  # how often the scripted fallback answered instead of the model

    def next_message(self, transcript: Transcript) -> str | None:
        scripted = self._fallback.next_message(transcript)
        if not transcript or _user_turns(transcript) >= self.scenario.user.max_turns:
            return scripted if not transcript else None
        # Roles are swapped: the model is the "assistant" playing the customer; the agent is its "user".
        messages = [
            ChatMessage("system", user_prompt(self.scenario)),
            ChatMessage("user", "(The support chat opens. Write your first message to the support assistant.)"),
        ]
        for role, text in transcript:
            messages.append(ChatMessage("assistant" if role == "user" else "user", text))
        try:
            [result] = list(self._handler.run_inference([ModelRequest(messages, self._max_tokens)], self._model))
            response = result.inference
            text = "" if response.error else " ".join(response.text.split())
        except Exception:  # noqa: BLE001 - the simulated user must not end the trial; fall back to the script
            text = ""
        if STOP_TOKEN in text:
            return None
        if not text:
            self.fallbacks += 1
            return scripted
        return text[:1000]


def make_user(scenario: Scenario, user_handler: Any = None, user_model: Any = None) -> SimUser:
    scripted = scenario.user.scripted  # turns, or the texts of timed messages (the harness times those itself)
    base: SimUser = ScriptedUser(scripted) if scripted is not None else RuleUser(scenario)
    if user_handler is None or scenario.user.simulated is None:
        return base  # scripted turns stay scripted: they are the test
    return ModelUser(scenario, user_handler, user_model, base)
