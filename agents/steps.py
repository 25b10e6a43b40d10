"""One agent turn as a small state machine: model -> tool calls -> model ... at most N model calls.

Pure functions over a picklable ``AgentState``, so a streaming pipeline can
unroll the loop as one RunInference stage per step without losing batching::

    state = start(enriched)                      # input guardrails, prompt, tool declarations
    while not state.done:                        # in the graph: up to N stages
        response = model(state.request)          # RunInference over the states themselves
        state = advance(state, response, executor)
    reply = to_reply(state)                      # AgentReply (reply / handoff / error)

``AgentState`` carries its own ``request`` (it satisfies ``agents.model_io.CarriesRequest``),
so a RunInference stage takes the pending states as elements and gives them back
as ``PredictionResult(example=state, inference=response)``.

- ``start`` runs the input guardrails (``agents.guardrails.check_input``): a refused
  turn or one that asks for a person finishes at once, with no model call.
- ``advance`` runs the response's tool calls through ``executor`` (bound to the
  session's customer via ``ToolContext``: the model never chooses the customer),
  appends the assistant's calls and the tool results to the conversation, and
  either finishes or returns the state with the next request. It finishes with:
  the model's text, checked by the output guardrails (a failing reply becomes a
  hand-off); a hand-off when the model called ``handoff_to_human``; a hand-off when
  the step limit is reached (tool calls of the last step are not run, except a
  hand-off: nothing would report their outcome to the customer); an error when the
  backend failed.
- Everything an eval row needs is recorded: per-step model and tool timings and
  tokens, every tool call with its (PII-masked) arguments and outcome, and flags.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from agents import consent, conversation, grounding, guardrails, narrowing, protocol, replies, retrieval
from agents.model_io import ChatMessage, ModelRequest, ModelResponse, ToolCall
from agents.model_text import (
    ERROR_TEXT,
    FALLBACK_TEXT,
    FLAG_EMPTY_FALLBACK,
    FLAG_MODEL_ERROR,
    FLAG_TRUNCATED,
    reply_text,
)
from agents.prompting import ContextMismatchError, build_request, load_template, user_text
from agents.route_table import ANSWER_ROUTE_TOOL, REPLY_ROUTE_TOOL, RouteTable, load_routes
from agents.streaming import StreamProgress
from contract.handoff import Handoff
from contract.messages import AgentReply, ReplyKind, TurnTimings
from contract.turn import EnrichedTurn, Role
from tools.packs import DEFAULT_PACK, Pack, load_pack
from tools.policies import ShopPolicy, default_policy
from tools.registry import ToolExecutor, ToolResult
from tools.scope import ToolContext
from tools.spec import ToolSpec
from tools.toolbox import tool_declarations

PROMPT_VERSION = "support_system_v2"
DEFAULT_MAX_STEPS = 4
MAX_POLICY_DIGESTS = 2
# Prompt versions that end with the turn's policy digests (rendered from StepConfig.policy, tools/policies.py).
DIGEST_PROMPT_VERSIONS: frozenset[str] = frozenset({"support_system_v2"})
NO_MODEL = "none"  # AgentReply.model of a turn that finished before any model call

FLAG_STEP_LIMIT = "step_limit"
FLAG_CONTEXT_MISMATCH = "context_mismatch"
FLAG_TOOL_UNKNOWN = "tool_unknown"
FLAG_TOOL_ARGS_INVALID = "tool_args_invalid"
FLAG_TOOL_ARG_TAMPERING = "tool_arg_tampering"
FLAG_TOOL_FOREIGN_ID = "tool_foreign_id"
FLAG_TOOL_ERROR = "tool_error"
FLAG_TOOL_REPLAYED = "tool_replayed"
FLAG_TOOL_DENIED = "tool_policy_denied"
FLAG_TOOL_CALLS_CAPPED = "tool_calls_capped"
FLAG_PROTOCOL_INVALID = "protocol_invalid"  # a constrained step's output was not one of the protocol's shapes
FLAG_NO_VALID_ARGUMENTS = "tool_no_valid_arguments"  # the routed tool has no valid value for a required argument
FLAG_ACTION_NOT_REQUESTED = "action_not_requested"  # a data-changing call the customer did not ask for (not run)
FLAG_ACTION_THIRD_PARTY = "action_third_party"  # an action asked for on another person's behalf (not run)
STATUS_NOT_REQUESTED = "not_requested"  # the result of a call the consent gate stopped
FLAG_GROUNDED = "grounded"  # model-written text passed the grounding check (agents.grounding)
FLAG_UNGROUNDED = "ungrounded"  # model-written text stated what no source gave: replaced by a grounded reply
FLAG_DEGENERATE = "degenerate_output"  # model-written text looped: replaced
FLAG_LOW_CONFIDENCE = "route_low_confidence"  # no route was near enough: a clarifying question
FLAG_OTHER_LANGUAGE = "other_language"  # the message reads as another language: a clarifying question
FLAG_WHICH_RECORD = "asked_which_record"  # several records could be meant by an action: asked which
FLAG_ONLY_RECORD = "picked_only_record"  # the action applies to one record only: picked it and said so
# Every reply is one of these kinds (the eval row's flag reply_<kind>): rendered from tool results or the
# pack's texts, an answer quoted from a retrieved article passage, a clarifying question, a hand-off.
REPLY_KINDS = ("rendered", "article", "clarify", "handoff")
CHAT_MAX_TOKENS = 64  # a model-written chat reply (a reply route without a text): two or three sentences

# How a backend's model calls tools (declared per backend in agents.backends.registry).
TOOL_MODE_NATIVE = "native"  # the model's API takes tool declarations and returns calls
TOOL_MODE_CONSTRAINED = "constrained"  # the step protocol (agents.protocol), decoding constrained to its shapes
TOOL_MODE_NONE = "none"  # no tools: one plain step (only the instant stub, which is not an agent)
TOOL_MODES: frozenset[str] = frozenset({TOOL_MODE_NATIVE, TOOL_MODE_CONSTRAINED, TOOL_MODE_NONE})

_TAMPER_ARG = re.compile(r"customer|user|account|tenant|owner|scope|session|email|client", re.I)

HANDOFF_TEXTS: Mapping[str, str] = {
    "user_request": guardrails.HANDOFF_REQUESTED,
    "agent_request": "I'm connecting you with a human agent who can help further; they will reply here shortly.",
    "step_limit": (
        "I couldn't finish this on my own, so I'm passing your conversation to a human agent who will follow up here."
    ),
    "guardrail": guardrails.SAFE_HANDOFF_TEXT,
}


class Outcome(StrEnum):
    PENDING = "pending"  # waiting for the next model response
    ANSWERED = "answered"  # the model's (checked) text is the reply
    REFUSED = "refused"  # the input guardrails refused the turn
    HANDOFF = "handoff"  # handed to a human (see Handoff.reason)
    ERROR = "error"  # the backend failed; the pipeline dead-letters the turn


@dataclass(frozen=True)
class StepConfig:
    max_steps: int = DEFAULT_MAX_STEPS  # model calls per turn, at most
    max_tokens: int = 256
    tools: tuple[str, ...] | None = None  # None: every tool of the pack; () for a model without tool calling
    max_calls_per_step: int = 4
    policy_digests: bool = True
    tool_mode: str = TOOL_MODE_NATIVE
    # The turn's policy: its digests go into the prompt and the tools judge by it (ToolContext.policy).
    policy: ShopPolicy = field(default_factory=default_policy, hash=False)
    pack: str = DEFAULT_PACK  # the business whose tools, ids and routes the turn uses (tools.packs)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_tokens < 1 or self.max_calls_per_step < 1:
            raise ValueError("max_steps, max_tokens and max_calls_per_step must be >= 1")
        object.__setattr__(self, "tool_mode", str(self.tool_mode))
        if self.tool_mode not in TOOL_MODES:
            raise ValueError(f"tool_mode must be one of {sorted(TOOL_MODES)}, got {self.tool_mode!r}")
        object.__setattr__(self, "tools", load_pack(self.pack).tool_names if self.tools is None else tuple(self.tools))


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
    actions: tuple[str, ...] = ()  # kinds the tools carried out: refund, return, address_change, ticket, handoff
    tool_calls: tuple[ToolCallRecord, ...] = ()
    steps: tuple[StepRecord, ...] = ()
    model: str = ""
    error: str = ""
    tool_values: tuple[str, ...] = field(default=(), repr=False)  # string values of tool results (own data)
    route: str = ""  # the route a constrained turn took (agents.route_table), if it was routed by embeddings
    passages: tuple[retrieval.Hit, ...] = ()  # the pack's help-article passages retrieved for this turn
    notes: tuple[str, ...] = ()  # sentences that go before a rendered reply (e.g. which record was picked)
    next_request: ModelRequest | None = field(default=None, repr=False)  # set by the constrained protocol
    stream: StreamProgress = field(default_factory=StreamProgress, repr=False)  # reply deltas so far (agents.streaming)

    @property
    def done(self) -> bool:
        return self.outcome != Outcome.PENDING

    @property
    def request(self) -> ModelRequest:
        """The next model request (only while ``not done``)."""
        if self.done:
            raise RuntimeError(f"turn {self.turn_id} is finished ({self.outcome}); it has no next request")
        if self.next_request is not None:
            return self.next_request
        tools = tool_declarations(self.config.tools, self.config.pack) if self.config.tools else ()
        return ModelRequest(messages=self.messages, max_tokens=self.config.max_tokens, tools=tools)

    @property
    def pack(self) -> Pack:
        return load_pack(self.config.pack)

    @property
    def turn_id(self) -> str:
        return self.enriched.turn.turn_id

    @property
    def ctx(self) -> ToolContext:
        turn = self.enriched.turn
        return ToolContext(
            customer_id=turn.customer_id, session_id=turn.session_id, turn_id=turn.turn_id, policy=self.config.policy
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


# ---------------------------------------------------------------------------
# Prompt
# ---------------------------------------------------------------------------


def load_policy_digests(version: str, policy: ShopPolicy | None = None) -> tuple[tuple[str, frozenset[str], str], ...]:
    """(slug, trigger words, digest) of ``policy`` (default: the shipped one); () if ``version`` takes none."""
    if version not in DIGEST_PROMPT_VERSIONS:
        return ()
    return tuple((d.slug, d.triggers, d.text) for d in (policy or default_policy()).digests)


def policy_digests(
    text: str, version: str, limit: int = MAX_POLICY_DIGESTS, policy: ShopPolicy | None = None
) -> list[str]:
    """The digests whose trigger words occur in ``text``, most matches first (at most ``limit``)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    table = load_policy_digests(version, policy)
    scored = [(len(words & triggers), i, digest) for i, (_, triggers, digest) in enumerate(table)]
    return [d for n, _, d in sorted(scored, key=lambda s: (-s[0], s[1])) if n > 0][:limit]


@functools.lru_cache(maxsize=8)
def instructions(version: str, pack: str = DEFAULT_PACK) -> str:
    """The static instruction lines of the prompt version (what the output guardrail must never see echoed)."""
    return guardrails.instructions_of(load_template(version, pack).template)


def session_facts(state: AgentState) -> guardrails.SessionFacts:
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


# ---------------------------------------------------------------------------
# Transitions
# ---------------------------------------------------------------------------


def start(enriched: EnrichedTurn, version: str = PROMPT_VERSION, config: StepConfig | None = None) -> AgentState:
    """The turn's initial state: finished already (refused, or handed off on request) or with a request to send."""
    state = AgentState(enriched=enriched, version=version, config=config or StepConfig())
    text = user_text(enriched)
    verdict = guardrails.check_input(text, session_facts(state), state.pack.texts)
    state = replace(state, flags=verdict.flags)
    if verdict.action == "refuse":
        flags = _merge(state.flags, ["reply_rendered"])
        return replace(state, outcome=Outcome.REFUSED, reply_text=verdict.reply, flags=flags)
    if verdict.action == "handoff":
        return _handoff(state, "user_request", summary="The customer asked for a human agent.")
    try:
        base = build_request(enriched, state.config.max_tokens, version, state.config.pack)
    except ContextMismatchError as exc:
        return _error(state, f"context mismatch: {exc}", FLAG_CONTEXT_MISMATCH)
    system = base.messages[0].content
    if state.config.policy_digests:
        digests = policy_digests(text, version, policy=state.config.policy)
        if digests:
            system += "\nPolicies:\n" + "\n".join(f"- {d}" for d in digests)
    index = _index(state)
    hits = tuple(index.search(text)) if index is not None else ()
    if hits and state.config.tool_mode != TOOL_MODE_NONE and _route_table(state) is None:
        system += retrieval.prompt_block(hits)  # models that write text answer from the passages
    state = replace(state, messages=(ChatMessage("system", system), *base.messages[1:]), passages=hits)
    return _constrained_start(state) if state.config.tool_mode == TOOL_MODE_CONSTRAINED else state


def advance(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """Consume one model response: run its tool calls, then finish or ask for the next step."""
    if state.done:
        return state
    step = state.step + 1
    calls = response.tool_calls
    record = StepRecord(
        step=step,
        model_ms=response.model_ms,
        tools_ms=0.0,
        prompt_tokens=response.prompt_tokens,
        completion_tokens=response.completion_tokens,
        finish_reason=response.finish_reason,
        tool_calls=0,
    )
    state = replace(state, step=step, model=response.model or state.model, steps=(*state.steps, record))
    if response.error:
        return _error(state, response.error, FLAG_MODEL_ERROR)
    if state.config.tool_mode == TOOL_MODE_CONSTRAINED:
        return _constrained_advance(state, response, executor)
    if not calls:
        return _finish_with_text(state, response)
    return _run_tools(state, response, executor)


def fail(state: AgentState, reason: str) -> AgentState:
    """The state of a turn whose model call failed outside ``advance`` (e.g. a failed RunInference batch)."""
    return state if state.done else _error(state, reason, FLAG_MODEL_ERROR)


def _run_tools(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    cfg = state.config
    last_step = state.step >= cfg.max_steps
    ctx = state.ctx
    facts = guardrails.SessionFacts(ctx.customer_id, ids=guardrails.id_space(state.config.pack))
    messages = [*state.messages, ChatMessage("assistant", response.text, tool_calls=response.tool_calls)]
    records: list[ToolCallRecord] = []
    flags: list[str] = []
    actions: list[str] = []
    values: list[str] = []
    tools_ms = 0.0
    handed_off: tuple[ToolCall, ToolResult] | None = None
    for i, call in enumerate(response.tool_calls):
        if i >= cfg.max_calls_per_step:
            result = _skipped(call, "too many tool calls in one step; call fewer at a time")
            flags.append(FLAG_TOOL_CALLS_CAPPED)
        elif last_step and call.name != state.pack.handoff_tool:
            result = _skipped(call, "step limit reached")
        elif (stopped := _unrequested(state, call)) is not None:
            result = stopped
            flags.append(_stop_flag(stopped))
        else:
            result = executor.execute(ctx, call)
        tools_ms += result.ms
        messages.append(ChatMessage("tool", result.message_content(), name=call.name, tool_call_id=call.id))
        records.append(_record(state.step, call, result, state.pack))
        flags.extend(_tool_flags(call, result, facts))
        values.extend(guardrails.flatten_values(result.content))
        action = _action_kind(state.pack, call, result)
        if action:
            actions.append(action)
        if result.handed_off and handed_off is None:
            handed_off = (call, result)
    last = state.steps[-1]
    last = replace(last, tools_ms=last.tools_ms + tools_ms, tool_calls=last.tool_calls + len(records))
    steps = (*state.steps[:-1], last)
    state = replace(
        state,
        messages=tuple(messages),
        tool_calls=(*state.tool_calls, *records),
        steps=steps,
        flags=_merge(state.flags, flags),
        actions=tuple(dict.fromkeys((*state.actions, *actions))),
        tool_values=tuple(dict.fromkeys((*state.tool_values, *values))),
    )
    if handed_off is not None:
        call, result = handed_off
        summary = _args(call).get("summary") or ""
        return _handoff(state, "agent_request", summary=str(summary), handoff_id=result.content.get("handoff_id"))
    if last_step:
        state = replace(state, flags=_merge(state.flags, [FLAG_STEP_LIMIT]))
        return _handoff(state, "step_limit", summary=f"No answer after {cfg.max_steps} model steps.")
    return state


def _finish_with_text(state: AgentState, response: ModelResponse, kind: str = "") -> AgentState:
    """Finish with ``response``'s text: rendered (``kind`` given) or written by the model (``kind`` "").

    Model-written text passes the degenerate-output and grounding checks first (``agents.grounding``);
    a reply that fails either is replaced by a grounded one and flagged. Then the output guardrails.
    """
    flags = [FLAG_TRUNCATED] if response.finish_reason == "length" else []
    text = reply_text(response)
    if not text:
        flags.append(FLAG_EMPTY_FALLBACK)
        text, kind = FALLBACK_TEXT, "clarify"
    elif not kind:
        # The guardrails read what the model wrote before anything replaces it: a leak hands off either way.
        verdict = guardrails.check_output(text, session_facts(state))
        flags.extend(verdict.flags)
        if verdict.ok and (state.config.tool_mode == TOOL_MODE_NONE or not state.config.tools):
            # No model writes here: the instant stub's acknowledgement is code, measuring the pipeline's own
            # overhead (not an agent, agents/backends/registry.py); only the guardrails read it.
            text, kind = verdict.text, "rendered"
        elif verdict.ok:
            text, kind, checked = _checked_model_text(state, verdict.text)
            flags.extend(checked)
    if state.notes and kind == "rendered":
        text = " ".join((*state.notes, text))
    verdict = guardrails.check_output(text, session_facts(state)) if kind else verdict
    state = replace(state, flags=_merge(state.flags, [*flags, *verdict.flags]))
    if not verdict.ok:
        return _handoff(state, "guardrail", summary="The agent's reply failed the output checks: " + ", ".join(
            verdict.categories))  # fmt: skip
    return replace(
        state, outcome=Outcome.ANSWERED, reply_text=verdict.text, flags=_merge(state.flags, [f"reply_{kind}"])
    )


def grounding_sources(state: AgentState) -> list[str]:
    """What a model-written reply may state: the prompt (account facts, policy lines), tool results, passages."""
    out = [m.content for m in state.messages if m.role in ("system", "tool", "user")]
    out += [f"{h.passage.title} {h.passage.text}" for h in state.passages]
    out += list(state.tool_values)
    return out


def _grounded_reply(state: AgentState) -> tuple[str, str]:
    """(text, kind) to send instead of a model reply that failed a check: results, a passage, or a question."""
    results = _tool_results(state)
    if results:
        return replies.render(state.pack, results), "rendered"
    if state.passages:
        return retrieval.answer_text(state.passages), "article"
    return conversation.say(state.pack, "clarify"), "clarify"


def _checked_model_text(state: AgentState, text: str) -> tuple[str, str, list[str]]:
    if grounding.degenerate(text):
        return (*_grounded_reply(state), [FLAG_DEGENERATE])
    if not grounding.check(text, grounding_sources(state)).grounded:
        return (*_grounded_reply(state), [FLAG_UNGROUNDED])
    return text, "article" if state.passages and not _tool_results(state) else "rendered", [FLAG_GROUNDED]


def _index(state: AgentState) -> retrieval.Index | None:
    """The worker's passage index of the turn's help articles (the turn's policy's, when it renders its own)."""
    pack, policy = state.pack, state.config.policy
    if pack.help_articles is None:
        return None
    if pack.policy is not None and policy is not pack.policy and policy.fingerprint != pack.policy.fingerprint:
        return retrieval.index_for(policy.articles_rendered())
    return retrieval.index_for(pack.help_articles())


def _handoff(state: AgentState, reason: str, *, summary: str = "", handoff_id: str | None = None) -> AgentState:
    turn = state.enriched.turn
    facts = session_facts(state)
    clean_summary, _ = guardrails.redact(summary[:500], facts)
    if guardrails.foreign_ids(clean_summary, facts):
        clean_summary = f"Hand-off ({reason})."
    record = Handoff(
        handoff_id=handoff_id or "H-" + hashlib.sha256(turn.turn_id.encode()).hexdigest()[:12].upper(),
        reason=reason,
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        customer_id=turn.customer_id,
        message_ids=tuple(turn.message_ids),
        summary=clean_summary,
        flags=state.flags,
        tools_used=tuple(dict.fromkeys(c.name for c in state.tool_calls)),
    )
    flags = _merge(state.flags, [f"handoff_{reason}", "reply_handoff"])
    return replace(
        state, outcome=Outcome.HANDOFF, reply_text=HANDOFF_TEXTS[reason], handoff=replace(record, flags=flags),
        flags=flags,
    )  # fmt: skip


def _error(state: AgentState, reason: str, flag: str) -> AgentState:
    return replace(
        state, outcome=Outcome.ERROR, reply_text=ERROR_TEXT, error=reason[:1000], flags=_merge(state.flags, [flag])
    )


# ---------------------------------------------------------------------------
# The constrained step protocol (models without native tool calls)
# ---------------------------------------------------------------------------
#
# Every model step's output is one JSON decision (agents.protocol): a call of one declared tool
# with arguments valid against its narrowed schema (agents.narrowing), a hand-off (a call of
# handoff_to_human), or a reply. Prompt versions with a routes file (agents.route_table) route the turn
# first by nearest neighbour over the model's own embeddings, then decode only the routed tool's
# arguments (nothing is decoded when the narrowed schema leaves one value); other versions let the
# model choose among all tools under the constraint. After tool results the reply is rendered
# from them (agents.replies), so it states only what the tools returned.


def _route_table(state: AgentState) -> RouteTable | None:
    return load_routes(state.version, state.config.pack)


def _turn_facts(state: AgentState) -> narrowing.TurnFacts:
    enriched, pack = state.enriched, state.pack
    history = tuple(e.text for e in reversed(enriched.turn.history))
    return narrowing.TurnFacts(
        text=user_text(enriched),
        history=history,
        records={f.kind: f.records(enriched.context) for f in pack.id_formats if f.context},
        formats=pack.ids,
        from_text=_route_table(state) is not None,
        any_id=pack.any_id,
    )


def _decision_request(
    state: AgentState, tools: list[dict[str, Any]], reply_text: bool, allow_reply: bool = True
) -> ModelRequest:
    """A step whose output must be one decision among ``tools`` (narrowed declarations), or a reply if allowed."""
    variants = [protocol.call_variant(t["name"], t["parameters"]) for t in tools]
    if allow_reply:
        variants.append(protocol.reply_variant(reply_text))
    instruction = protocol.FUNCTION_CALLING_PREAMBLE + "\n" + protocol.function_list(tools, reply_text, allow_reply)
    system = ChatMessage("system", f"{state.messages[0].content}\n\n{instruction}")
    return ModelRequest(
        messages=(system, *state.messages[1:]),
        max_tokens=state.config.max_tokens,
        response_schema=protocol.decision_schema(variants),
    )


def _narrowed_tools(state: AgentState, names: Iterable[str]) -> list[dict[str, Any]]:
    facts = _turn_facts(state)
    out = []
    for decl in tool_declarations(names, state.config.pack):
        params = narrowing.narrow(decl, facts, state.pack.tools_by_name[decl["name"]])
        if params is not None:
            out.append({**decl, "parameters": params})
    return out


def _constrained_start(state: AgentState) -> AgentState:
    table = _route_table(state)
    if table is not None:
        text = user_text(state.enriched)
        if table.max_foreign < 1 and conversation.foreign_share(text, _vocabulary(state, table)) >= table.max_foreign:
            # Routing by an English model's embeddings cannot read it: say so, and what it can help with.
            state = replace(state, flags=_merge(state.flags, [FLAG_OTHER_LANGUAGE]))
            return _say(state, ModelResponse(text=""), "language")
        request = ModelRequest(messages=(ChatMessage("user", text),), max_tokens=1, route=table.query(text))
        return replace(state, next_request=request)
    return replace(state, next_request=_decision_request(state, _narrowed_tools(state, state.config.tools), True))


def _tool_results(state: AgentState) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for m in state.messages:
        if m.role == "tool" and m.name:
            try:
                content = json.loads(m.content)
            except ValueError:
                content = {"status": "error"}
            out.append((m.name, content if isinstance(content, dict) else {"status": "error"}))
    return out


def _finish_rendered(state: AgentState, response: ModelResponse, text: str, kind: str = "rendered") -> AgentState:
    response = replace(response, text=text, finish_reason="stop")
    return _finish_with_text(replace(state, next_request=None), response, kind)


def _say(state: AgentState, response: ModelResponse, key: str) -> AgentState:
    """One of the pack's conversational replies (``agents.conversation``): a greeting, a closing, a question."""
    # A closing is the pack's text; the others ask what the customer needs, naming what the agent can help with.
    kind = "rendered" if key == "closing" else "clarify"
    return _finish_rendered(state, response, conversation.say(state.pack, key), kind)


def _vocabulary(state: AgentState, table: RouteTable) -> frozenset[str]:
    index = _index(state)
    return table.vocabulary | (index.vocabulary if index is not None else frozenset())


def _constrained_advance(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    asked = state.next_request
    if response.route:
        return _after_route(state, response, executor)
    if asked is None or asked.response_schema is None:  # a plain reply (a route without a tool): model-written
        return _finish_with_text(replace(state, next_request=None), response)
    try:
        decision = protocol.parse_decision(response.text, asked.response_schema, f"call_{state.step}")
    except protocol.ProtocolError:
        state = replace(state, flags=_merge(state.flags, [FLAG_PROTOCOL_INVALID]))
        results = _tool_results(state)
        return _finish_rendered(state, response, replies.render(state.pack, results) if results else FALLBACK_TEXT)
    if decision.call is None:
        results = _tool_results(state)
        if results:
            return _finish_rendered(state, response, replies.render(state.pack, results))
        return _finish_with_text(replace(state, next_request=None), replace(response, text=decision.text))
    return _call(state, response, decision.call, executor)


def _call(state: AgentState, response: ModelResponse, call: ToolCall, executor: ToolExecutor) -> AgentState:
    state = _run_tools(replace(state, next_request=None), replace(response, tool_calls=(call,)), executor)
    return state if state.done else _after_tools(state, response, executor)


def _after_route(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    table = _route_table(state)
    label = response.route[0][0]
    route = table.routes.get(label) if table is not None else None
    if route is None:
        return _error(state, f"the backend routed to unknown route {label!r}", FLAG_PROTOCOL_INVALID)
    state = replace(state, route=route.name, flags=_merge(state.flags, [f"route_{route.name}"]))
    if table is not None and response.route[0][1] < table.min_score:
        # No example is near enough to act on: ask, naming what the agent can help with.
        return _say(replace(state, flags=_merge(state.flags, [FLAG_LOW_CONFIDENCE])), response, "clarify")
    if route.tool == REPLY_ROUTE_TOOL:
        if route.say:
            return _say(state, response, route.say)
        cap = min(state.config.max_tokens, CHAT_MAX_TOKENS)
        return replace(state, next_request=ModelRequest(messages=state.messages, max_tokens=cap))
    if route.tool == ANSWER_ROUTE_TOOL:
        if state.passages:  # the passage that answers, quoted from the article it names
            return _finish_rendered(state, response, retrieval.answer_text(state.passages), "article")
        return _say(replace(state, flags=_merge(state.flags, [FLAG_LOW_CONFIDENCE])), response, "clarify")
    return _route_call(state, response, route.tool, dict(route.args), executor)


def _route_call(
    state: AgentState, response: ModelResponse, tool: str, presets: dict[str, Any], executor: ToolExecutor
) -> AgentState:
    [decl] = tool_declarations([tool], state.config.pack)
    stopped = _unrequested(state, ToolCall(f"call_{state.step}_{len(state.tool_calls)}", tool, json.dumps(presets)))
    if stopped is not None:
        # A route that lands on an action the customer did not ask for offers it instead of acting:
        # nothing is decoded or run (the same gate stands in front of every executed call).
        state = replace(state, flags=_merge(state.flags, [_stop_flag(stopped)]))
        offer = replies.render(state.pack, [(tool, stopped.content)])
        if stopped.content["reason"] != "third_party" and state.passages:
            # The policy behind the offer, quoted from the article it comes from ("report it within 14 days").
            offer = f"{retrieval.answer_text(state.passages)}\n{offer}"
        return _finish_rendered(state, response, offer)
    spec = state.pack.tools_by_name[tool]
    params = narrowing.narrow(decl, _turn_facts(state), spec, presets)
    if params is None:
        state = replace(state, flags=_merge(state.flags, [FLAG_NO_VALID_ARGUMENTS]))
        # What is missing, in the customer's terms: an action says what it needs ("tell me the new street ...").
        action = state.pack.action_of(tool, presets)
        return _finish_rendered(state, response, f"I can {action.offer}." if action else FALLBACK_TEXT, "clarify")
    if spec.applies:
        params, state, question = _which_record(state, spec, params)
        if question:
            return _finish_rendered(replace(state, notes=()), response, question, "clarify")
    args = narrowing.fixed_arguments(params)
    if args is None:  # something left to choose: the model decodes it under the narrowed schema
        routed = [{**decl, "parameters": params}]
        return replace(state, next_request=_decision_request(state, routed, False, allow_reply=False))
    text = json.dumps({"name": tool, "parameters": args}, ensure_ascii=False)
    call = ToolCall(id=f"call_{state.step}_{len(state.tool_calls)}", name=tool, arguments=json.dumps(args))
    return _call(state, replace(response, text=text), call, executor)


def _which_record(state: AgentState, spec: ToolSpec, params: dict[str, Any]) -> tuple[dict[str, Any], AgentState, str]:
    """Several of the customer's records could be meant by an action: keep the only one it applies to, or ask.

    Ids the customer typed in this turn stand (the tool says if the action cannot apply to them). Otherwise,
    of the candidates (named by an item, earlier in the conversation, or all of the customer's), those the
    action applies to (``ToolSpec.applies``): one is picked and the reply says so; several get a question.
    Returns the parameters, the state (with the note to say) and the question ('' when none is needed).
    """
    props = dict(params.get("properties") or {})
    facts = _turn_facts(state)
    this_turn = replace(facts, history=())
    for arg, rule in spec.applies.items():
        kind = spec.id_args[arg]
        fmt = state.pack.ids[kind]
        prop = props.get(arg) or {}
        candidates = [prop["const"]] if "const" in prop else list(prop.get("enum") or ())
        if this_turn.referenced_ids(kind) or not candidates:
            continue  # named in this turn, by id or by an item: that stands
        records = {str(r[fmt.field]): r for r in facts.records.get(kind, ())}
        fits = [c for c in records if rule.holds(records[c])]
        if len(fits) == 1:
            props[arg] = {"const": fits[0]}
            note = f"{fits[0]} is the only {kind} of yours that {rule.says}, so I've used that one."
            if candidates != fits:
                state = replace(state, notes=(*state.notes, note), flags=_merge(state.flags, [FLAG_ONLY_RECORD]))
        elif len(fits) > 1 and len(set(candidates) & set(fits)) != 1:
            named = [f"{c} ({', '.join(fmt.naming_words(records[c])[:2])})" for c in fits[:4]]
            state = replace(state, flags=_merge(state.flags, [FLAG_WHICH_RECORD]))
            return params, state, f"Which {kind} do you mean: {' or '.join(named)}?"
        elif len(fits) > 1:
            props[arg] = {"const": next(c for c in candidates if c in fits)}
    return {**params, "properties": props}, state, ""


def _after_tools(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """After a tool result: the route's follow-up, or (model-chosen tools) the model's next decision, or the reply."""
    table = _route_table(state)
    results = _tool_results(state)
    if table is None:
        tools = _narrowed_tools(state, state.config.tools)
        return replace(state, next_request=_decision_request(state, tools, False))
    route = table.routes.get(state.route)
    follow = route.then if route is not None else None
    last_name, last_content = results[-1]
    ran = {c.name for c in state.tool_calls}
    if (
        follow is not None
        and last_name == route.tool
        and follow.tool not in ran
        and follow.applies(last_content)
        and _consent(state, follow.tool, {**dict(route.args), **_args(ToolCall("", last_name, _last_arguments(state)))})
        == consent.Consent.REQUESTED
    ):
        last_args = _args(ToolCall("", last_name, _last_arguments(state)))
        presets = {k: last_args[k] for k in follow.args_from if k in last_args}
        return _route_call(state, response, follow.tool, presets, executor)
    return _finish_rendered(state, response, replies.render(state.pack, results))


def _consent(state: AgentState, tool: str, arguments: Mapping[str, Any]) -> consent.Consent:
    """Whether this turn's customer words ask for the action a call of ``tool`` would carry out."""
    action = state.pack.action_of(tool, arguments)
    if action is None:
        return consent.Consent.REQUESTED
    agent_said = next((e.text for e in reversed(state.enriched.turn.history) if e.role == Role.AGENT), "")
    return consent.judge(user_text(state.enriched), action, agent_said, state.pack)


def _stop_flag(stopped: ToolResult) -> str:
    """The eval-row flag of a call the consent gate stopped."""
    return FLAG_ACTION_THIRD_PARTY if stopped.content["reason"] == "third_party" else FLAG_ACTION_NOT_REQUESTED


def _unrequested(state: AgentState, call: ToolCall) -> ToolResult | None:
    """A ``not_requested`` result for a data-changing call the customer did not ask for; None to run it.

    Whatever chose the call (a model's native call, a route, a follow-up), an action runs only on the
    customer's own request in this turn (``agents.consent``); the result tells the model, or the
    rendered reply, what it can offer instead.
    """
    args = _args(call)
    verdict = _consent(state, call.name, args)
    if verdict == consent.Consent.REQUESTED:
        return None
    action = state.pack.action_of(call.name, args)
    assert action is not None
    content = {
        "status": STATUS_NOT_REQUESTED,
        "action": action.name,
        "reason": verdict.value,
        "offer": action.offer,
        "message": (
            "Tools act only on the account of the customer in this conversation, at their own request."
            if verdict == consent.Consent.THIRD_PARTY
            else "The customer has not asked for this action; offer it and let them decide."
        ),
    }
    return ToolResult(call.id, call.name, STATUS_NOT_REQUESTED, content)


def calls_made(state: AgentState) -> list[ToolCall]:
    """Every tool call of the turn as made (arguments unmasked), in order; one per ``state.tool_calls`` record."""
    return [c for m in state.messages if m.role == "assistant" for c in m.tool_calls]


def _last_arguments(state: AgentState) -> str:
    for m in reversed(state.messages):
        if m.role == "assistant" and m.tool_calls:
            return m.tool_calls[-1].arguments
    return "{}"


# ---------------------------------------------------------------------------
# Tool-call bookkeeping
# ---------------------------------------------------------------------------


def _skipped(call: ToolCall, why: str) -> ToolResult:
    return ToolResult(call.id, call.name, "skipped", {"status": "skipped", "errors": [why]})


def _args(call: ToolCall) -> dict[str, Any]:
    try:
        return call.parsed_arguments()
    except ValueError:
        return {}


def masked_arguments(call: ToolCall, pack: Pack | None = None) -> dict[str, Any]:
    """The call's arguments with free text and contact data replaced by their length (eval-row safe)."""
    args = _args(call)
    pii = (pack or load_pack()).pii_args.get(call.name, frozenset())
    out: dict[str, Any] = {}
    for key, value in list(args.items())[:10]:
        key = str(key)[:40]
        if key in pii or not isinstance(value, int | float | bool | None):
            text = str(value)
            if key in pii or len(text) > 40 or "@" in text:
                out[key] = f"<{len(text)} chars>"
                continue
            value = text
        out[key] = value
    return out


def _record(step: int, call: ToolCall, result: ToolResult, pack: Pack) -> ToolCallRecord:
    return ToolCallRecord(
        step=step,
        call_id=call.id[:64],
        name=call.name[:64],
        arguments=masked_arguments(call, pack),
        status=result.status,
        ms=round(result.ms, 3),
        replayed=result.replayed,
    )


def _tool_flags(call: ToolCall, result: ToolResult, facts: guardrails.SessionFacts) -> list[str]:
    flags = []
    if result.status == "unknown_tool":
        flags.append(FLAG_TOOL_UNKNOWN)
    elif result.status == "invalid_args":
        tampering = any(_TAMPER_ARG.search(a) for a in result.rejected_args)
        flags.append(FLAG_TOOL_ARG_TAMPERING if tampering else FLAG_TOOL_ARGS_INVALID)
    elif result.status == "error":
        flags.append(FLAG_TOOL_ERROR)
    elif result.status == "denied":
        flags.append(FLAG_TOOL_DENIED)
    if result.replayed:
        flags.append(FLAG_TOOL_REPLAYED)
    if guardrails.foreign_ids(call.arguments or "", facts):
        flags.append(FLAG_TOOL_FOREIGN_ID)
    return flags


def _action_kind(pack: Pack, call: ToolCall, result: ToolResult) -> str | None:
    if result.status not in ("done", "handed_off"):
        return None
    done_kind = {"kind": result.content["kind"]} if "kind" in result.content else {}
    action = pack.action_of(call.name, {**_args(call), **done_kind})
    return action.name if action else None


def _merge(flags: Iterable[str], more: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*flags, *more)))


# ---------------------------------------------------------------------------
# Results for the pipeline
# ---------------------------------------------------------------------------


def to_reply(
    state: AgentState,
    *,
    queue_ms: float = 0.0,
    total_ms: float = 0.0,
    created_at: datetime | None = None,
) -> AgentReply:
    """The ``AgentReply`` of a finished turn (kind reply / handoff / error)."""
    if not state.done:
        raise RuntimeError(f"turn {state.turn_id} is not finished")
    turn = state.enriched.turn
    timings = TurnTimings(
        queue_ms=queue_ms,
        enrich_ms=state.enriched.enrich_ms,
        model_ms=state.model_ms,
        tools_ms=state.tools_ms,
        total_ms=total_ms,
    )
    fields = {"created_at": created_at} if created_at is not None else {}
    return AgentReply(
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        turn_index=turn.turn_index,
        answers=turn.message_ids,
        kind=state.kind,
        text=state.reply_text,
        model=state.model or NO_MODEL,
        prompt_version=state.version,
        timings=timings,
        **fields,
    )


def eval_flags(state: AgentState) -> tuple[str, ...]:
    """Flags for the eval row (``contract.eval_rows.turn_row(..., flags=eval_flags(state))``)."""
    extra = [f"outcome_{state.outcome.value}"] if state.outcome in (Outcome.REFUSED, Outcome.HANDOFF) else []
    return _merge(state.flags, extra)


def eval_details(state: AgentState) -> dict[str, Any]:
    """JSON-able details of the turn for the eval row: no message text, tool arguments masked."""
    return {
        "outcome": state.outcome.value,
        "steps": state.step,
        "max_steps": state.config.max_steps,
        "policy_version": state.config.policy.version,
        "handoff_reason": state.handoff.reason if state.handoff else None,
        "actions": list(state.actions),
        "step_records": [asdict(s) for s in state.steps],
        "tool_calls": [asdict(c) for c in state.tool_calls],
    }


def handoff_payload(state: AgentState) -> bytes | None:
    """The hand-off record as UTF-8 JSON for the hand-off topic, or None if the turn was not handed off."""
    if state.handoff is None:
        return None
    return state.handoff.to_bytes()
