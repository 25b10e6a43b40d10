"""The state of one agent turn, shared by both tool-calling protocols (``agents.native``, ``agents.constrained``).

One frozen, picklable ``AgentState`` crosses every stage of the unrolled loop (``pipeline.agent_stage``):
it carries its own ``request``, so a RunInference stage takes the pending states as elements. Whichever
protocol runs the turn, the state records the same things for the reply and the eval row: per-step
model and tool timings and tokens, every tool call (arguments masked), the actions carried out, flags.

What differs by protocol is said in the open rather than inferred from a response's shape:
``awaiting`` names what the next model response is (the native model's text or calls, a ranking
of routes, one JSON decision, a plain reply), ``asked`` holds the request a constrained step built
(the native request is the conversation itself, rebuilt on demand so that it is never pickled twice),
and ``route`` names the route the constrained protocol's router chose (``agents.router``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from agents import guardrails, retrieval
from agents.model_io import ChatMessage, ModelRequest
from agents.prompting import load_template
from agents.requests import Requests
from agents.streaming import StreamProgress
from contract.handoff import Handoff
from contract.messages import ReplyKind
from contract.turn import EnrichedTurn
from tools.packs import DEFAULT_PACK, Pack, load_pack
from tools.scope import ToolContext
from tools.toolbox import tool_declarations

DEFAULT_MAX_STEPS = 4

# How a backend's model calls tools (declared per backend in agents.backends.registry).
TOOL_MODE_NATIVE = "native"  # the model's API takes tool declarations and returns calls (agents.native)
TOOL_MODE_CONSTRAINED = "constrained"  # the step protocol, decoding constrained to its shapes (agents.constrained)
TOOL_MODE_NONE = "none"  # no tools: one plain step (only the instant stub, which is not an agent)
TOOL_MODES: frozenset[str] = frozenset({TOOL_MODE_NATIVE, TOOL_MODE_CONSTRAINED, TOOL_MODE_NONE})


class TurnPolicy(Protocol):
    """What the agent reads of a pack's policy (``Pack.policy``): the core knows no business's rules.

    Its digests go into the prompt (``agents.steps.policy_digests``); its articles are the passages a turn
    retrieves when the turn's policy is not the pack's own; its version names it in the eval row. The tools
    judge by the same object (``ToolContext.policy``).
    """

    @property
    def version(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def digests(self) -> tuple[Any, ...]: ...  # each with .slug, .triggers (a set of words) and .text

    def articles_rendered(self) -> Mapping[str, Mapping[str, Any]]: ...


class Outcome(StrEnum):
    PENDING = "pending"  # waiting for the next model response
    ANSWERED = "answered"  # the model's (checked) text is the reply
    REFUSED = "refused"  # the input guardrails refused the turn
    HANDOFF = "handoff"  # handed to a human (see Handoff.reason)
    ERROR = "error"  # the backend failed; the pipeline dead-letters the turn


class Awaiting(StrEnum):
    """What the next model response of a pending turn is: set by the protocol that asked for it."""

    MODEL = "model"  # the model's own text or tool calls (native tool calling, or no tools)
    ROUTE = "route"  # the backend's ranking of the router's routes for the customer's words (agents.router)
    DECISION = "decision"  # one JSON decision valid against the asked request's schema (agents.protocol)
    TEXT = "text"  # a reply in the model's own words, with no tools and no schema (a chat route)


@dataclass(frozen=True)
class StepConfig:
    max_steps: int = DEFAULT_MAX_STEPS  # model calls per turn, at most
    max_tokens: int = 256
    tools: tuple[str, ...] | None = None  # None: every tool of the pack; () for a model without tool calling
    max_calls_per_step: int = 4
    policy_digests: bool = True
    tool_mode: str = TOOL_MODE_NATIVE
    # The turn's policy (None: the pack's own, Pack.policy): its digests go into the prompt and the tools
    # judge by it (ToolContext.policy). A pack without a policy leaves it None.
    policy: TurnPolicy | None = field(default=None, hash=False)
    pack: str = DEFAULT_PACK  # the business whose tools, ids and routes the turn uses (tools.packs)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_tokens < 1 or self.max_calls_per_step < 1:
            raise ValueError("max_steps, max_tokens and max_calls_per_step must be >= 1")
        object.__setattr__(self, "tool_mode", str(self.tool_mode))
        if self.tool_mode not in TOOL_MODES:
            raise ValueError(f"tool_mode must be one of {sorted(TOOL_MODES)}, got {self.tool_mode!r}")
        pack = load_pack(self.pack)
        object.__setattr__(self, "tools", pack.tool_names if self.tools is None else tuple(self.tools))
        if self.policy is None:
            object.__setattr__(self, "policy", pack.policy)


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call, for the eval row: arguments with free text and contact data masked."""

    step: int
    call_id: str
    name: str
    arguments: dict[str, Any]
    status: str
    ms: float = 0.0
    replayed: bool = False


@dataclass(frozen=True)
class StepRecord:
    step: int
    model_ms: float
    tools_ms: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    tool_calls: int


@dataclass(frozen=True)
class AgentState:
    """Everything about one turn in flight. Small, frozen, picklable; ``request`` makes it a RunInference element."""

    enriched: EnrichedTurn
    version: str
    config: StepConfig
    messages: tuple[ChatMessage, ...] = ()
    step: int = 0  # model responses consumed
    outcome: Outcome = Outcome.PENDING
    reply_text: str = ""
    handoff: Handoff | None = None
    flags: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()  # the pack's action names the tools carried out (ActionSpec.name)
    tool_calls: tuple[ToolCallRecord, ...] = ()
    steps: tuple[StepRecord, ...] = ()
    model: str = ""
    error: str = ""
    tool_values: tuple[str, ...] = field(default=(), repr=False)  # string values of tool results (own data)
    passages: tuple[retrieval.Hit, ...] = ()  # the pack's help-article passages retrieved for this turn
    notes: tuple[str, ...] = ()  # sentences that go before a rendered reply (e.g. which record was picked)
    awaiting: Awaiting = Awaiting.MODEL  # what the next model response is
    asked: ModelRequest | None = field(default=None, repr=False)  # the request a constrained step built
    route: str = ""  # the route the router chose for a routed turn (agents.router), '' if none
    requests: Requests | None = None  # a message of several requests, answered one by one (agents.requests)
    stream: StreamProgress = field(default_factory=StreamProgress, repr=False)  # reply deltas so far (agents.streaming)

    @property
    def done(self) -> bool:
        return self.outcome != Outcome.PENDING

    @property
    def request(self) -> ModelRequest:
        """The next model request (only while ``not done``)."""
        if self.done:
            raise RuntimeError(f"turn {self.turn_id} is finished ({self.outcome}); it has no next request")
        if self.asked is not None:
            return self.asked
        tools = tool_declarations(self.config.tools, self.config.pack) if self.config.tools else ()
        return ModelRequest(messages=self.messages, max_tokens=self.config.max_tokens, tools=tools)

    @property
    def pack(self) -> Pack:
        return load_pack(self.config.pack)

    @property
    def policy(self) -> TurnPolicy | None:
        return self.config.policy

    @property
    def turn_id(self) -> str:
        return self.enriched.turn.turn_id

    @property
    def ctx(self) -> ToolContext:
        turn = self.enriched.turn
        return ToolContext(
            customer_id=turn.customer_id, session_id=turn.session_id, turn_id=turn.turn_id, policy=self.policy
        )

    @property
    def kind(self) -> ReplyKind:
        if self.outcome == Outcome.HANDOFF:
            return ReplyKind.HANDOFF
        if self.outcome == Outcome.ERROR:
            return ReplyKind.ERROR
        return ReplyKind.REPLY

    @property
    def model_ms(self) -> float:
        return sum(s.model_ms for s in self.steps)

    @property
    def tools_ms(self) -> float:
        return sum(s.tools_ms for s in self.steps)

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)


def merge(flags: Iterable[str], more: Iterable[str]) -> tuple[str, ...]:
    """``flags`` then ``more``, each once, in order."""
    return tuple(dict.fromkeys((*flags, *more)))


@functools.lru_cache(maxsize=8)
def instructions(version: str, pack: str = DEFAULT_PACK) -> str:
    """The static instruction lines of the prompt version (what the output guardrail must never see echoed)."""
    return guardrails.instructions_of(load_template(version, pack).template)


def session_facts(state: AgentState) -> guardrails.SessionFacts:
    """What the guardrails check the turn's words against: the customer's own data and what the tools gave."""
    enriched, pack = state.enriched, state.pack
    done = set(state.actions)
    if pack.context_actions is not None:
        done |= pack.context_actions(enriched.context or {})
    return guardrails.facts_from_context(
        enriched.turn.customer_id,
        enriched.context,
        instructions=instructions(state.version, state.config.pack),
        extra_values=state.tool_values,
        done_actions=done,
        pack=state.config.pack,
    )


def tool_results(state: AgentState) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, result content) of every tool message so far, in order (unreadable content reads as an error)."""
    out = []
    for m in state.messages:
        if m.role == "tool" and m.name:
            try:
                content = json.loads(m.content)
            except ValueError:
                content = {"status": "error"}
            out.append((m.name, content if isinstance(content, dict) else {"status": "error"}))
    return out


def passage_index(state: AgentState) -> retrieval.Index | None:
    """The worker's passage index of the turn's help articles (the turn's policy's, when it renders its own)."""
    pack, policy = state.pack, state.policy
    if pack.help_articles is None:
        return None
    own = pack.policy
    if policy is not None and own is not None and policy is not own and policy.fingerprint != own.fingerprint:
        return retrieval.index_for(policy.articles_rendered())
    return retrieval.index_for(pack.help_articles())
