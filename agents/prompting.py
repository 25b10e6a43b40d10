"""Turn an ``EnrichedTurn`` into a ``ModelRequest``.

The prompt text is the pack's data: ``<pack>/prompts/<version>.txt`` (a ``string.Template`` with
``${name}``, ``${plan}``, ``${notes}`` and the placeholders of the pack's records) and
``<pack>/prompts/<version>.flags.txt`` (one note per context flag). Changing either means a new
version: copy both files to ``..._v2`` and bump the version, so every reply records which prompt
produced it.

Data rules:
- Only ``enriched.context`` (the session's own customer's documents) and
  ``enriched.turn`` go into the prompt. A context whose ``customer_id`` differs
  from the turn's raises ``ContextMismatchError``: never answer with another
  customer's data.
- Allowlist, not blocklist: from the profile only the name and plan; the
  customer's records only as the pack renders them (``Pack.prompt_context``
  picks their fields). Email, phone, address and payment data never reach the model.
- Bounded: short single-line fields, each record placeholder cut to
  ``MAX_RECORDS_CHARS`` (whole lines), history cut to ``MAX_HISTORY_CHARS``
  (newest kept) and the turn's text to ``MAX_USER_CHARS`` (newest kept).
  SmolLM2 on 2 CPUs evaluates ~130 prompt tokens/s, so every line costs latency.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.model_io import ChatMessage, ModelRequest
from contract.turn import EnrichedTurn, HistoryEntry, Role
from tools.packs import DEFAULT_PACK, load_pack
from tools.prompt_fields import one_line

PROMPT_VERSION = "support_system_v1"

MAX_RECORDS_CHARS = 1500
MAX_ENTRY_CHARS = 600
MAX_HISTORY_CHARS = 3000
MAX_USER_CHARS = 3000

HISTORY_OMITTED_FLAG = "history_omitted"  # set by build_request, not by enrichment
_ANY_FLAG = "*"
_OWN_FIELDS = frozenset({"name", "plan", "notes"})  # the core's placeholders; a pack's records cannot replace them


class ContextMismatchError(ValueError):
    """The context belongs to another customer than the turn's."""


def _prompts_dir(pack: str) -> Path:
    return load_pack(pack).root / "prompts"


@functools.lru_cache(maxsize=16)
def load_template(version: str = PROMPT_VERSION, pack: str = DEFAULT_PACK) -> string.Template:
    """The pack's system prompt template of ``version``."""
    return string.Template((_prompts_dir(pack) / f"{version}.txt").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=16)
def load_flag_notes(version: str = PROMPT_VERSION, pack: str = DEFAULT_PACK) -> dict[str, str]:
    notes: dict[str, str] = {}
    for raw in (_prompts_dir(pack) / f"{version}.flags.txt").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        flag, sep, note = line.partition(":")
        if not sep or not note.strip():
            raise ValueError(f"bad line in {pack}/prompts/{version}.flags.txt: {raw!r}")
        notes[flag.strip()] = note.strip()
    return notes


def _name(profile: Mapping[str, Any]) -> str:
    name = profile.get("name") or " ".join(str(profile[k]) for k in ("first_name", "last_name") if profile.get(k))
    return one_line(name) if name else "unknown"


def _bounded(text: str, limit: int = MAX_RECORDS_CHARS) -> str:
    """``text`` cut to whole lines within ``limit`` chars (a pack's records never crowd out the rest)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head.rsplit("\n", 1)[0] if "\n" in head else head[: limit - 3] + "..."


def _notes(flags: Iterable[str], version: str, pack: str) -> str:
    table = load_flag_notes(version, pack)
    lines: list[str] = []
    for flag in flags:
        note = table.get(flag, table.get(_ANY_FLAG, ""))
        if note and f"Note: {note}" not in lines:
            lines.append(f"Note: {note}")
    return "\n".join(lines)


def render_system_prompt(enriched: EnrichedTurn, version: str = PROMPT_VERSION, pack: str = DEFAULT_PACK) -> str:
    """The system prompt for this turn (see the module docstring for what goes in)."""
    context = enriched.context or {}
    owner = context.get("customer_id")
    if owner is not None and owner != enriched.turn.customer_id:
        raise ContextMismatchError(f"context of another customer attached to turn {enriched.turn.turn_id}")
    profile = context.get("profile") if isinstance(context.get("profile"), Mapping) else {}
    flags = list(enriched.context_flags)
    if enriched.turn.omitted_history > 0:
        flags.append(HISTORY_OMITTED_FLAG)
    render = load_pack(pack).prompt_context
    records = render(context) if render is not None else {}
    text = load_template(version, pack).substitute(
        {k: _bounded(v) for k, v in records.items() if k not in _OWN_FIELDS},
        name=_name(profile),
        plan=one_line(profile.get("plan") or "unknown", 30),
        notes=_notes(flags, version, pack),
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


def build_request(
    enriched: EnrichedTurn, max_tokens: int, version: str = PROMPT_VERSION, pack: str = DEFAULT_PACK
) -> ModelRequest:
    """System prompt (``pack``'s template) + bounded history + this turn's user messages (one user message)."""
    messages = [ChatMessage("system", render_system_prompt(enriched, version, pack))]
    messages += _history_messages(enriched.turn.history)
    messages.append(ChatMessage("user", user_text(enriched)))
    return ModelRequest(messages=tuple(messages), max_tokens=max_tokens)
