"""Which agent steps stream, and the guardrail check their releases pass (``agents.streaming``).

A step streams only when it is a text step:
- native tool calls (Gemini): every step may be text; the backend halts the stream as soon as a
  function call shows up, and a step that ends in tool calls retracts what it showed;
- the constrained protocol: only the plain reply step (a route to ``reply``: no response schema, no
  routing query). Decision steps write JSON (a tool call or a reply in the protocol's shape) and
  replies rendered from tool results are written by ``agents.replies``, not by the model: no deltas.
- no tools (the instant stub): nothing to stream.
"""

from __future__ import annotations

from collections.abc import Callable

from agents import guardrails, steps
from agents.model import ModelResponse
from agents.steps import AgentState
from agents.streaming import GuardedReleaser
from agents.turn import reply_text


def streams(state: object) -> bool:
    """True if the next model step of ``state`` (a RunInference element) writes reply text."""
    if not isinstance(state, AgentState) or state.done:
        return False
    mode = state.config.tool_mode
    if mode == steps.TOOL_MODE_NATIVE:
        return True
    if mode == steps.TOOL_MODE_CONSTRAINED:
        request = state.next_request
        return request is not None and request.response_schema is None and request.route is None
    return False


def output_check(state: AgentState) -> Callable[[str], bool]:
    """``check(prefix)``: the prefix passes the output guardrails with the turn's facts, and unchanged."""
    facts = steps._facts(state)

    def check(prefix: str) -> bool:
        verdict = guardrails.check_output(prefix, facts)
        return verdict.ok and verdict.text == prefix

    return check


def releaser_for(state: AgentState, emit: Callable[[str], None]) -> GuardedReleaser:
    return GuardedReleaser(output_check(state), emit)


def final_text_of(response: ModelResponse) -> str | None:
    """The text the step will reply with if the response finishes the turn as a model-written reply, else None."""
    if response.error or response.tool_calls or response.route:
        return None
    return reply_text(response) or None
