"""Build the ``AgentReply`` for a turn from the model's response.

``answer`` never publishes an empty reply: when the model produced no text it
sends ``FALLBACK_TEXT`` (kind REPLY). When the backend failed (``response.error``)
the reply is kind ERROR with ``ERROR_TEXT``; the pipeline dead-letters such
turns as the contract says. ``AgentReply`` has no field for such marks, so
``reply_flags(response)`` returns them for the eval row
(``contract.eval_rows.turn_row(..., flags=reply_flags(response))``).
"""

from __future__ import annotations

import re
from datetime import datetime

from agents.model_io import ModelResponse
from agents.prompting import PROMPT_VERSION
from contract.messages import AgentReply, ReplyKind, TurnTimings
from contract.turn import EnrichedTurn

FALLBACK_TEXT = (
    "Sorry, I couldn't find an answer to that. Could you rephrase it, or shall I connect you with a human agent?"
)
ERROR_TEXT = "Sorry, something went wrong on our side. A support agent will get back to you."

FLAG_EMPTY_FALLBACK = "model_empty_fallback"  # the model gave no text; FALLBACK_TEXT was sent
FLAG_MODEL_ERROR = "model_error"  # the backend failed; ERROR_TEXT was sent, kind ERROR
FLAG_TRUNCATED = "model_truncated"  # generation hit max_tokens (text cut back to a sentence end)

UNKNOWN_MODEL = "unknown"
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _trim_to_sentence(text: str) -> str:
    """Cut a reply that hit the token cap back to its last full sentence, if that keeps most of it."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends and ends[-1] >= len(text) * 0.4:
        return text[: ends[-1]]
    return text


def reply_text(response: ModelResponse) -> str:
    """The text to send: stripped, cut to a sentence end when truncated; '' if nothing usable."""
    text = response.text.strip()
    if text and response.finish_reason == "length":
        text = _trim_to_sentence(text).strip()
    return text


def reply_flags(response: ModelResponse) -> tuple[str, ...]:
    """Marks for the eval row describing how the reply text was obtained."""
    if response.error:
        return (FLAG_MODEL_ERROR,)
    flags: list[str] = []
    if not reply_text(response):
        flags.append(FLAG_EMPTY_FALLBACK)
    if response.finish_reason == "length":
        flags.append(FLAG_TRUNCATED)
    return tuple(flags)


def answer(
    enriched: EnrichedTurn,
    response: ModelResponse,
    *,
    prompt_version: str = PROMPT_VERSION,
    queue_ms: float = 0.0,
    enrich_ms: float | None = None,
    tools_ms: float = 0.0,
    total_ms: float = 0.0,
    created_at: datetime | None = None,
) -> AgentReply:
    """The reply for ``enriched``'s turn. ``model_ms`` comes from the response; the other timings
    are the pipeline's (``enrich_ms`` defaults to ``enriched.enrich_ms``)."""
    turn = enriched.turn
    if response.error:
        kind, text = ReplyKind.ERROR, ERROR_TEXT
    else:
        kind, text = ReplyKind.REPLY, reply_text(response) or FALLBACK_TEXT
    timings = TurnTimings(
        queue_ms=queue_ms,
        enrich_ms=enriched.enrich_ms if enrich_ms is None else enrich_ms,
        model_ms=response.model_ms,
        tools_ms=tools_ms,
        total_ms=total_ms,
    )
    fields = {"created_at": created_at} if created_at is not None else {}
    return AgentReply(
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        turn_index=turn.turn_index,
        answers=turn.message_ids,
        kind=kind,
        text=text,
        model=response.model or UNKNOWN_MODEL,
        prompt_version=prompt_version,
        timings=timings,
        **fields,
    )
