"""The model's text as a reply: what to send, and the texts and flags for when there is none.

``reply_text`` strips the model's text and cuts a reply that hit the token cap back to a sentence end;
the turn's end (``agents.finish``) sends ``FALLBACK_TEXT`` when nothing usable is left and ``ERROR_TEXT``
when the backend failed (the pipeline dead-letters such turns, as the contract says), flagging each.
"""

from __future__ import annotations

import re

from agents.model_io import ModelResponse

FALLBACK_TEXT = (
    "Sorry, I couldn't find an answer to that. Could you rephrase it, or shall I connect you with a human agent?"
)
ERROR_TEXT = "Sorry, something went wrong on our side. A support agent will get back to you."

FLAG_EMPTY_FALLBACK = "model_empty_fallback"  # the model gave no text; FALLBACK_TEXT was sent
FLAG_MODEL_ERROR = "model_error"  # the backend failed; ERROR_TEXT was sent, kind ERROR
FLAG_TRUNCATED = "model_truncated"  # generation hit max_tokens (text cut back to a sentence end)

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
