"""The reply after tool results, rendered from those results: it states only what the tools returned.

Used by the constrained step protocol (``agents.protocol``): a small model that cannot be trusted to
restate a tool result faithfully does not write the reply. Each tool result becomes a few plain
sentences by its tool's own renderer (``ToolSpec.render``, declared by the pack); what reads the same
for every pack is here: a call that failed or was refused, and an action the customer did not ask
for. The output guardrails still check the text (``agents.steps``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tools.packs import Pack

Result = Mapping[str, Any]

NOTHING_FOUND = (
    "I couldn't find anything about that. Could you tell me a bit more, or shall I connect you with a person?"
)
TOOL_FAILED = "Sorry, I couldn't look that up just now. Please try again in a moment, or ask for a human agent."
THIRD_PARTY = (
    "I can only make changes on your own account, at your own request. If someone else needs help with "
    "their account, they can contact us themselves."
)


def _not_requested(r: Result) -> str:
    """A data-changing call the customer did not ask for (``agents.consent``): say what can be done instead."""
    if r.get("reason") == "third_party":
        return THIRD_PARTY
    return f"If you'd like, I can {r.get('offer')}." if r.get("offer") else NOTHING_FOUND


def render_one(pack: Pack, tool: str, result: Result) -> str:
    status = result.get("status")
    if status == "not_requested":
        return _not_requested(result)
    if status in ("invalid_args", "unknown_tool", "error", "skipped"):
        return TOOL_FAILED
    spec = pack.tools_by_name.get(tool)
    return spec.render(result) if spec else ""


def render(pack: Pack, results: Sequence[tuple[str, Result]]) -> str:
    """The reply for the turn's tool results, in call order; identical sentences once."""
    if any(r.get("status") == "done" and t in pack.mutating_tools for t, r in results):
        # A check followed by the action it allowed (a route's follow-up): the action is what happened.
        results = [(t, r) for t, r in results if t in pack.mutating_tools]
    parts = [p for p in (render_one(pack, t, r) for t, r in results) if p]
    return "\n".join(dict.fromkeys(parts)) or NOTHING_FOUND
