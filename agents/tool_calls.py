"""A step's tool calls, run for the session's customer: the same gate and the same records for both protocols.

Whatever chose a call (a native model, a constrained decision, a route or its follow-up), it runs through
``run_tools``: bound to the session's customer (``ToolContext``: the model never chooses the customer),
at most ``max_calls_per_step`` of them, none but a hand-off on the last step (nothing would report their
outcome to the customer), and no data-changing call the customer did not ask for in this turn (the
consent gate, ``agents.consent``). Each call is recorded for the eval row with its arguments masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agents import consent, guardrails
from agents.finish import handoff
from agents.model_io import ChatMessage, ModelResponse, ToolCall
from agents.prompting import user_text
from agents.state import AgentState, ToolCallRecord, merge
from contract.turn import Role
from tools.packs import Pack, load_pack
from tools.registry import ToolExecutor, ToolResult

FLAG_STEP_LIMIT = "step_limit"
FLAG_TOOL_UNKNOWN = "tool_unknown"
FLAG_TOOL_ARGS_INVALID = "tool_args_invalid"
FLAG_TOOL_ARG_TAMPERING = "tool_arg_tampering"
FLAG_TOOL_FOREIGN_ID = "tool_foreign_id"
FLAG_TOOL_ERROR = "tool_error"
FLAG_TOOL_REPLAYED = "tool_replayed"
FLAG_TOOL_DENIED = "tool_policy_denied"
FLAG_TOOL_CALLS_CAPPED = "tool_calls_capped"
FLAG_ACTION_NOT_REQUESTED = "action_not_requested"  # a data-changing call the customer did not ask for (not run)
FLAG_ACTION_THIRD_PARTY = "action_third_party"  # an action asked for on another person's behalf (not run)
STATUS_NOT_REQUESTED = "not_requested"  # the result of a call the consent gate stopped

_TAMPER_ARG = re.compile(r"customer|user|account|tenant|owner|scope|session|email|client", re.I)


def run_tools(state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
    """Run ``response.tool_calls`` and append the assistant's calls and their results to the conversation.

    Finishes the turn with a hand-off when a call handed off, or when this was the last step.
    """
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
        elif (stopped := unrequested(state, call)) is not None:
            result = stopped
            flags.append(stop_flag(stopped))
        else:
            result = executor.execute(ctx, call)
        tools_ms += result.ms
        messages.append(ChatMessage("tool", result.message_content(), name=call.name, tool_call_id=call.id))
        records.append(_record(state.step, call, result, state.pack))
        flags.extend(_tool_flags(call, result, facts))
        values.extend(guardrails.flatten_values(result.content))
        action = _action_name(state.pack, call, result)
        if action:
            actions.append(action)
        if result.handed_off and handed_off is None:
            handed_off = (call, result)
    last = state.steps[-1]
    last = replace(last, tools_ms=last.tools_ms + tools_ms, tool_calls=last.tool_calls + len(records))
    state = replace(
        state,
        messages=tuple(messages),
        tool_calls=(*state.tool_calls, *records),
        steps=(*state.steps[:-1], last),
        flags=merge(state.flags, flags),
        actions=tuple(dict.fromkeys((*state.actions, *actions))),
        tool_values=tuple(dict.fromkeys((*state.tool_values, *values))),
    )
    if handed_off is not None:
        call, result = handed_off
        summary = arguments_of(call).get("summary") or ""
        return handoff(state, "agent_request", summary=str(summary), handoff_id=result.content.get("handoff_id"))
    if last_step:
        state = replace(state, flags=merge(state.flags, [FLAG_STEP_LIMIT]))
        return handoff(state, "step_limit", summary=f"No answer after {cfg.max_steps} model steps.")
    return state


# ---------------------------------------------------------------------------
# The consent gate
# ---------------------------------------------------------------------------


def consent_to(state: AgentState, tool: str, arguments: Mapping[str, Any]) -> consent.Consent:
    """Whether this turn's customer words ask for the action a call of ``tool`` would carry out."""
    action = state.pack.action_of(tool, arguments)
    if action is None:
        return consent.Consent.REQUESTED
    agent_said = next((e.text for e in reversed(state.enriched.turn.history) if e.role == Role.AGENT), "")
    return consent.judge(user_text(state.enriched), action, agent_said, state.pack)


def stop_flag(stopped: ToolResult) -> str:
    """The eval-row flag of a call the consent gate stopped."""
    return FLAG_ACTION_THIRD_PARTY if stopped.content["reason"] == "third_party" else FLAG_ACTION_NOT_REQUESTED


def unrequested(state: AgentState, call: ToolCall) -> ToolResult | None:
    """A ``not_requested`` result for a data-changing call the customer did not ask for; None to run it.

    Whatever chose the call (a model's native call, a route, a follow-up), an action runs only on the
    customer's own request in this turn (``agents.consent``); the result tells the model, or the
    rendered reply, what it can offer instead.
    """
    args = arguments_of(call)
    verdict = consent_to(state, call.name, args)
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


# ---------------------------------------------------------------------------
# Calls as made, and as recorded
# ---------------------------------------------------------------------------


def calls_made(state: AgentState) -> list[ToolCall]:
    """Every tool call of the turn as made (arguments unmasked), in order; one per ``state.tool_calls`` record."""
    return [c for m in state.messages if m.role == "assistant" for c in m.tool_calls]


def last_call(state: AgentState) -> ToolCall | None:
    """The turn's most recent tool call as made, if any."""
    made = calls_made(state)
    return made[-1] if made else None


def arguments_of(call: ToolCall) -> dict[str, Any]:
    """The call's arguments, or {} when they are no JSON object."""
    try:
        return call.parsed_arguments()
    except ValueError:
        return {}


def masked_arguments(call: ToolCall, pack: Pack | None = None) -> dict[str, Any]:
    """The call's arguments with free text and contact data replaced by their length (eval-row safe)."""
    args = arguments_of(call)
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


def _skipped(call: ToolCall, why: str) -> ToolResult:
    return ToolResult(call.id, call.name, "skipped", {"status": "skipped", "errors": [why]})


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


def _action_name(pack: Pack, call: ToolCall, result: ToolResult) -> str | None:
    """The pack's action a call carried out (``ActionSpec.name``), if it carried one out."""
    if result.status not in ("done", "handed_off"):
        return None
    done_kind = {"kind": result.content["kind"]} if "kind" in result.content else {}
    action = pack.action_of(call.name, {**arguments_of(call), **done_kind})
    return action.name if action else None
