"""One agent turn as a small state machine: model -> tool calls -> model ... at most N model calls.

Pure functions over a picklable ``AgentState`` (``agents.state``), so a streaming pipeline can
unroll the loop as one RunInference stage per step without losing batching::

    state = start(enriched)                      # input guardrails, prompt, the protocol's first request
    while not state.done:                        # in the graph: up to N stages
        response = model(state.request)          # RunInference over the states themselves
        state = advance(state, response, executor)
    reply = to_reply(state)                      # AgentReply (reply / handoff / error)

This module is the driver; the protocols do the steps. The backend declares how its model calls
tools (``StepConfig.tool_mode``, from ``agents.backends.registry``), and that picks one protocol
object for the whole turn (``PROTOCOLS``): native tool calls (``agents.native``), or the constrained
step protocol with its router (``agents.constrained``). Both share the state, the tool runner with its
consent gate (``agents.tool_calls``) and the endings (``agents.finish``).

- ``start`` runs the input guardrails (``agents.guardrails.check_input``): a refused turn or one
  that asks for a person finishes at once, with no model call. Otherwise it builds the prompt (the
  policy's digests, the retrieved passages for a model that writes its own answer) and lets the
  protocol ask for the first step.
- ``advance`` records the step (timings, tokens), fails the turn on a backend error, and hands the
  response to the protocol: it runs tool calls for the session's customer and either finishes (a
  checked reply, a hand-off when asked for or at the step limit) or asks for the next step.
- Everything an eval row needs is recorded: per-step model and tool timings and tokens, every tool
  call with its (PII-masked) arguments and outcome, and flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any, Protocol

from agents import guardrails, retrieval
from agents.constrained import ConstrainedProtocol
from agents.finish import error, handoff
from agents.model_io import ChatMessage, ModelResponse
from agents.model_text import FLAG_MODEL_ERROR
from agents.native import NativeProtocol
from agents.prompting import ContextMismatchError, build_request, user_text
from agents.state import (
    TOOL_MODE_CONSTRAINED,
    TOOL_MODE_NATIVE,
    TOOL_MODE_NONE,
    TOOL_MODES,
    AgentState,
    Outcome,
    StepConfig,
    StepRecord,
    TurnPolicy,
    merge,
    passage_index,
    session_facts,
)
from contract.messages import AgentReply, TurnTimings
from contract.turn import EnrichedTurn
from tools.packs import load_pack
from tools.registry import ToolExecutor

PROMPT_VERSION = "support_system_v2"
NO_MODEL = "none"  # AgentReply.model of a turn that finished before any model call
MAX_POLICY_DIGESTS = 2
# Prompt versions that end with the turn's policy digests (rendered from the turn's policy, StepConfig.policy).
DIGEST_PROMPT_VERSIONS: frozenset[str] = frozenset({"support_system_v2"})
FLAG_CONTEXT_MISMATCH = "context_mismatch"


class TurnProtocol(Protocol):
    """How a backend's model calls tools, step by step (``agents.native``, ``agents.constrained``)."""

    def writes_from_passages(self, state: AgentState) -> bool:
        """True if the model writes its own answer from the retrieved passages (they go into its prompt)."""
        ...

    def begin(self, state: AgentState) -> AgentState:
        """The prompted state, asking for the first step (or finished, if no model step is needed)."""
        ...

    def advance(self, state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
        """Consume one (successful) model response: run what it calls, then finish or ask for the next step."""
        ...


PROTOCOLS: Mapping[str, TurnProtocol] = {
    TOOL_MODE_NATIVE: NativeProtocol(),
    TOOL_MODE_CONSTRAINED: ConstrainedProtocol(),
    TOOL_MODE_NONE: NativeProtocol(passages_in_prompt=False),
}
assert set(PROTOCOLS) == TOOL_MODES


def protocol_of(state: AgentState) -> TurnProtocol:
    return PROTOCOLS[state.config.tool_mode]


# ---------------------------------------------------------------------------
# Prompt
# ---------------------------------------------------------------------------


def load_policy_digests(version: str, policy: TurnPolicy | None = None) -> tuple[tuple[str, frozenset[str], str], ...]:
    """(slug, trigger words, digest) of ``policy`` (default: the default pack's); () if ``version`` takes none."""
    if version not in DIGEST_PROMPT_VERSIONS:
        return ()
    policy = policy if policy is not None else load_pack().policy
    return tuple((d.slug, d.triggers, d.text) for d in policy.digests) if policy is not None else ()


def policy_digests(
    text: str, version: str, limit: int = MAX_POLICY_DIGESTS, policy: TurnPolicy | None = None
) -> list[str]:
    """The digests whose trigger words occur in ``text``, most matches first (at most ``limit``)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    table = load_policy_digests(version, policy)
    scored = [(len(words & triggers), i, digest) for i, (_, triggers, digest) in enumerate(table)]
    return [d for n, _, d in sorted(scored, key=lambda s: (-s[0], s[1])) if n > 0][:limit]


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
        flags = merge(state.flags, ["reply_rendered"])
        return replace(state, outcome=Outcome.REFUSED, reply_text=verdict.reply, flags=flags)
    if verdict.action == "handoff":
        return handoff(state, "user_request", summary="The customer asked for a human agent.")
    try:
        base = build_request(enriched, state.config.max_tokens, version, state.config.pack)
    except ContextMismatchError as exc:
        return error(state, f"context mismatch: {exc}", FLAG_CONTEXT_MISMATCH)
    protocol = protocol_of(state)
    system = base.messages[0].content
    if state.config.policy_digests:
        digests = policy_digests(text, version, policy=state.policy)
        if digests:
            system += "\nPolicies:\n" + "\n".join(f"- {d}" for d in digests)
    index = passage_index(state)
    hits = tuple(index.search(text)) if index is not None else ()
    if hits and protocol.writes_from_passages(state):
        system += retrieval.prompt_block(hits)  # models that write text answer from the passages
    state = replace(state, messages=(ChatMessage("system", system), *base.messages[1:]), passages=hits)
    return protocol.begin(state)


def advance(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """Consume one model response: run its tool calls, then finish or ask for the next step."""
    if state.done:
        return state
    step = state.step + 1
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
        return error(state, response.error, FLAG_MODEL_ERROR)
    return protocol_of(state).advance(state, response, executor)


def fail(state: AgentState, reason: str) -> AgentState:
    """The state of a turn whose model call failed outside ``advance`` (e.g. a failed RunInference batch)."""
    return state if state.done else error(state, reason, FLAG_MODEL_ERROR)


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
    return merge(state.flags, extra)


def eval_details(state: AgentState) -> dict[str, Any]:
    """JSON-able details of the turn for the eval row: no message text, tool arguments masked."""
    return {
        "outcome": state.outcome.value,
        "steps": state.step,
        "max_steps": state.config.max_steps,
        "policy_version": state.policy.version if state.policy is not None else None,
        "handoff_reason": state.handoff.reason if state.handoff else None,
        "actions": list(state.actions),
        "step_records": [asdict(s) for s in state.steps],
        "tool_calls": [asdict(c) for c in state.tool_calls],
    }
