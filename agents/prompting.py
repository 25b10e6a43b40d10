"""Turn an ``EnrichedTurn`` into a ``ModelRequest``.

The prompt text is data: ``prompts/<PROMPT_VERSION>.txt`` (a ``string.Template``
with ``${name}``, ``${plan}``, ``${orders}``, ``${tickets}``, ``${notes}``) and
``prompts/<PROMPT_VERSION>.flags.txt`` (one note per context flag). Changing
either means a new version: copy both files to ``..._v2`` and bump
``PROMPT_VERSION``, so every reply records which prompt produced it.

Data rules:
- Only ``enriched.context`` (the session's own customer's documents) and
  ``enriched.turn`` go into the prompt. A context whose ``customer_id`` differs
  from the turn's raises ``ContextMismatchError``: never answer with another
  customer's data.
- Allowlist, not blocklist: from the profile only the name and plan; from
  orders only id, status, item names, total, carrier, tracking id and ETA;
  from tickets only id, status and subject. Email, phone, address and payment
  data never reach the model.
- Bounded: at most ``MAX_ORDERS`` orders and ``MAX_TICKETS`` tickets, short
  single-line fields, history cut to ``MAX_HISTORY_CHARS`` (newest kept) and
  the turn's text to ``MAX_USER_CHARS`` (newest kept). SmolLM2 on 2 CPUs
  evaluates ~130 prompt tokens/s, so every line costs latency.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.model_io import ChatMessage, ModelRequest
from contract.turn import EnrichedTurn, HistoryEntry, Role

PROMPT_VERSION = "support_system_v1"
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

MAX_ORDERS = 5
MAX_TICKETS = 3
MAX_ITEMS_SHOWN = 2
FIELD_CHARS = 60
MAX_ENTRY_CHARS = 600
MAX_HISTORY_CHARS = 3000
MAX_USER_CHARS = 3000

HISTORY_OMITTED_FLAG = "history_omitted"  # set by build_request, not by enrichment
_ANY_FLAG = "*"
_CLOSED = frozenset({"closed", "resolved", "done", "cancelled"})


class ContextMismatchError(ValueError):
    """The context belongs to another customer than the turn's."""


@functools.lru_cache(maxsize=8)
def load_template(version: str = PROMPT_VERSION) -> string.Template:
    return string.Template((PROMPTS_DIR / f"{version}.txt").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=8)
def load_flag_notes(version: str = PROMPT_VERSION) -> dict[str, str]:
    notes: dict[str, str] = {}
    for raw in (PROMPTS_DIR / f"{version}.flags.txt").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        flag, sep, note = line.partition(":")
        if not sep or not note.strip():
            raise ValueError(f"bad line in {version}.flags.txt: {raw!r}")
        notes[flag.strip()] = note.strip()
    return notes


def _clean(value: Any, limit: int = FIELD_CHARS) -> str:
    """One short line: whitespace collapsed (no injected newlines), cut to ``limit`` chars."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _name(profile: Mapping[str, Any]) -> str:
    name = profile.get("name") or " ".join(str(profile[k]) for k in ("first_name", "last_name") if profile.get(k))
    return _clean(name) if name else "unknown"


def _item_name(item: Any) -> str:
    if isinstance(item, Mapping):
        label = item.get("name") or item.get("title") or item.get("sku") or "item"
        qty = item.get("qty", item.get("quantity"))
        return f"{qty}x {_clean(label, 30)}" if isinstance(qty, int) and qty > 1 else _clean(label, 30)
    return _clean(item, 30)


def _order_line(order: Mapping[str, Any]) -> str:
    parts = [f"- {_clean(order.get('order_id', '?'), 40)}: {_clean(order.get('status', 'unknown'), 30)}"]
    items = order.get("items")
    if isinstance(items, Sequence) and not isinstance(items, str) and items:
        shown = ", ".join(_item_name(i) for i in items[:MAX_ITEMS_SHOWN])
        more = len(items) - MAX_ITEMS_SHOWN
        parts.append(shown + (f" +{more} more" if more > 0 else ""))
    if order.get("total") is not None:
        parts.append(_clean(f"{order['total']} {order.get('currency', '')}".strip(), 30))
    shipping = order.get("shipping")
    if isinstance(shipping, Mapping):
        ship = " ".join(_clean(shipping[k], 40) for k in ("carrier", "tracking_id") if shipping.get(k))
        if shipping.get("eta"):
            ship = f"{ship}, ETA {_clean(shipping['eta'], 25)}".lstrip(", ")
        if ship:
            parts.append(ship)
    return " | ".join(parts)


def _ticket_line(ticket: Mapping[str, Any]) -> str:
    subject = ticket.get("subject") or ticket.get("topic") or ticket.get("title") or ""
    line = f"- {_clean(ticket.get('ticket_id', '?'), 40)}: {_clean(ticket.get('status', 'unknown'), 30)}"
    return f"{line} - {_clean(subject)}" if subject else line


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _notes(flags: Iterable[str], version: str) -> str:
    table = load_flag_notes(version)
    lines: list[str] = []
    for flag in flags:
        note = table.get(flag, table.get(_ANY_FLAG, ""))
        if note and f"Note: {note}" not in lines:
            lines.append(f"Note: {note}")
    return "\n".join(lines)


def render_system_prompt(enriched: EnrichedTurn, version: str = PROMPT_VERSION) -> str:
    """The system prompt for this turn (see the module docstring for what goes in)."""
    context = enriched.context or {}
    owner = context.get("customer_id")
    if owner is not None and owner != enriched.turn.customer_id:
        raise ContextMismatchError(f"context of another customer attached to turn {enriched.turn.turn_id}")
    profile = context.get("profile") if isinstance(context.get("profile"), Mapping) else {}
    orders = _dicts(context.get("orders"))[:MAX_ORDERS]
    tickets = [t for t in _dicts(context.get("tickets")) if str(t.get("status", "")).lower() not in _CLOSED]
    flags = list(enriched.context_flags)
    if enriched.turn.omitted_history > 0:
        flags.append(HISTORY_OMITTED_FLAG)
    text = load_template(version).substitute(
        name=_name(profile),
        plan=_clean(profile.get("plan") or "unknown", 30),
        orders="\n".join(_order_line(o) for o in orders) or "- none on file",
        tickets="\n".join(_ticket_line(t) for t in tickets[:MAX_TICKETS]) or "- none",
        notes=_notes(flags, version),
    )
    return text.strip()


def _history_messages(history: Sequence[HistoryEntry]) -> list[ChatMessage]:
    """Newest entries that fit ``MAX_HISTORY_CHARS``, oldest first; consecutive same-role entries merged."""
    kept: list[HistoryEntry] = []
    used = 0
    for entry in reversed(history):
        text = entry.text.strip()[:MAX_ENTRY_CHARS]
        if not text:
            continue
        if used + len(text) > MAX_HISTORY_CHARS:
            break
        used += len(text)
        kept.append(HistoryEntry(entry.role, text, entry.turn_index, entry.at))
    messages: list[ChatMessage] = []
    for entry in reversed(kept):
        role = "assistant" if entry.role == Role.AGENT else "user"
        if messages and messages[-1].role == role:
            messages[-1] = ChatMessage(role, f"{messages[-1].content}\n{entry.text}")
        else:
            messages.append(ChatMessage(role, entry.text))
    return messages


def user_text(enriched: EnrichedTurn) -> str:
    """The turn's user messages joined in order, cut to the newest ``MAX_USER_CHARS`` chars."""
    text = "\n".join(m.text.strip() for m in enriched.turn.messages if m.text.strip())
    return text if len(text) <= MAX_USER_CHARS else "..." + text[-(MAX_USER_CHARS - 3) :]


def build_request(enriched: EnrichedTurn, max_tokens: int, version: str = PROMPT_VERSION) -> ModelRequest:
    """System prompt + bounded history + this turn's user messages (one user message)."""
    messages = [ChatMessage("system", render_system_prompt(enriched, version))]
    messages += _history_messages(enriched.turn.history)
    messages.append(ChatMessage("user", user_text(enriched)))
    return ModelRequest(messages=tuple(messages), max_tokens=max_tokens)
