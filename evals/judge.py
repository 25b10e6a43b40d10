"""An optional model-as-judge score for a trial's replies: helpfulness and groundedness, 1 to 5.

The judge is any backend of ``agents.backends`` (``--judge gemini`` with a key, ``--judge smollm2``
locally; a small model is a weak judge, so read its scores as a smoke signal). It sees the
customer's goal, the conversation (user text and the agent's replies) and the shop's policy
digests (``agents.steps.load_policy_digests``, rendered from ``tools/policies.yaml``), and answers
a JSON object. The score is reported,
never gating: end-state checks decide success; the judge adds what they cannot see (tone, whether a
claim follows from the policies).

An answer that cannot be parsed gives no score (``None``), never a guessed one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agents.model_io import ChatMessage, ModelRequest
from agents.steps import load_policy_digests
from evals.scenario import Scenario
from evals.trace import TrialTrace
from tools.packs import load_pack

POLICY_VERSION = "support_system_v2"
MAX_TURN_CHARS = 600
JUDGE_MAX_TOKENS = 160
DIMENSIONS = ("helpfulness", "groundedness")

JUDGE_SYSTEM = """You grade one customer-support conversation of a business: ${business}.
Score two things from 1 (bad) to 5 (excellent):
- helpfulness: did the agent move the customer towards their goal, clearly and politely?
- groundedness: does every claim about the customer's account, what was done for them, or the policies follow
  from the business's policies below or from the conversation? Invented facts or promises score 1.
The business's policies:
${policies}
Answer with one JSON object only, like {"helpfulness": 4, "groundedness": 5, "reason": "one short sentence"}."""


@dataclass(frozen=True)
class Judgment:
    helpfulness: int | None
    groundedness: int | None
    reason: str = ""

    def metrics(self) -> dict[str, Any]:
        return {"judge_helpfulness": self.helpfulness, "judge_groundedness": self.groundedness}


def judge_request(scenario: Scenario, trace: TrialTrace) -> ModelRequest:
    policies = "\n".join(f"- {digest}" for _, _, digest in load_policy_digests(POLICY_VERSION))
    system = JUDGE_SYSTEM.replace("${business}", load_pack(scenario.pack).title).replace("${policies}", policies)
    lines = [f"Customer's goal: {scenario.goal}", ""]
    for turn in trace.turns:
        lines.append(f"Customer: {_short(turn.user_text)}")
        lines.append(f"Agent ({turn.outcome}): {_short(turn.reply_text)}")
    return ModelRequest(
        (ChatMessage("system", system), ChatMessage("user", "\n".join(lines))),
        max_tokens=JUDGE_MAX_TOKENS,
    )


def parse_judgment(text: str) -> Judgment:
    """The scores in the judge's answer: a JSON object if there is one, else ``name: N`` pairs."""
    found: dict[str, Any] = {}
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match:
        try:
            value = json.loads(match.group(0))
            found = value if isinstance(value, dict) else {}
        except json.JSONDecodeError:
            found = {}
    for name in DIMENSIONS:
        if name not in found:
            pair = re.search(rf"{name}\W{{0,3}}\s*([1-5])\b", text, re.IGNORECASE)
            if pair:
                found[name] = pair.group(1)
    return Judgment(*(_score(found.get(name)) for name in DIMENSIONS), reason=str(found.get("reason", ""))[:300])


def _score(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= 5 else None


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TURN_CHARS else text[: MAX_TURN_CHARS - 3] + "..."


def judge_trial(handler: Any, model: Any, scenario: Scenario, trace: TrialTrace) -> Judgment:
    """One judge call through the backend's RunInference code; a failed call gives no score."""
    try:
        [result] = list(handler.run_inference([judge_request(scenario, trace)], model))
    except Exception as exc:  # noqa: BLE001 - a broken judge must not fail the trial it grades
        return Judgment(None, None, f"judge call failed: {type(exc).__name__}")
    response = result.inference
    if not response.ok:
        return Judgment(None, None, f"judge error: {response.error[:200]}")
    return parse_judgment(response.text)
