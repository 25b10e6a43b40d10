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


def _arg_words(pack: Pack, tool: str, arg: str) -> str:
    """An argument as a customer names it: ``<kind>_id`` -> "<kind> number (like <the id format's example>)"."""
    spec = pack.tools_by_name.get(tool)
    kind = spec.id_args.get(arg) if spec else None
    if kind and kind in pack.ids:
        return f"{kind} number (like {pack.ids[kind].example})"
    return arg.replace("_", " ").strip() or "details"


def _invalid(pack: Pack, tool: str, result: Result) -> str:
    """Arguments the tool refused: what is missing or not possible, in the customer's terms (not "try again")."""
    missing, wrong = [], []
    for error in result.get("errors") or ():
        field, _, why = str(error).partition(":")
        if field.startswith("unknown argument") or "customer of this conversation" in str(error):
            return THIRD_PARTY
        words = _arg_words(pack, tool, field.split(".")[0].strip())
        (missing if "required" in why.lower() or "missing" in why.lower() else wrong).append(words)
    parts = []
    if missing:
        parts.append(f"To do that I need your {' and '.join(dict.fromkeys(missing))}.")
    if wrong:
        parts.append(f"The {' and '.join(dict.fromkeys(wrong))} you gave doesn't look right; could you check it?")
    return " ".join(parts) or "I couldn't do that with the details I have. Could you tell me a bit more?"


def render_one(pack: Pack, tool: str, result: Result) -> str:
    status = result.get("status")
    if status == "not_requested":
        return _not_requested(result)
    if status == "invalid_args":
        return _invalid(pack, tool, result)
    if status in ("unknown_tool", "error", "skipped"):
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
