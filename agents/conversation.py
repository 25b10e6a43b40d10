"""The conversational replies: greeting, closing, clarifying question, and a message in another language.

The wording is the pack's (``Pack.texts``, ``Pack.help_topics``); a key the pack leaves out reads as the
neutral default below, which names no business. A clarifying question always ends by naming what the
agent can help with, from the pack's topics, so a customer who opened vaguely learns what to ask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agents.embedding_router import content_words
from tools.packs import Pack

TEXTS: dict[str, str] = {
    "greeting": "Hello! I'm the support assistant.",
    "closing": "You're welcome! Glad I could help. Goodbye for now.",
    "clarify": "I'm not sure I understood what you need.",
    "language": "Sorry, I can only help in English for now.",
    "which": "Which one do you mean?",
}
SAY_KEYS = frozenset(TEXTS) - {"which"}
_ASK = {
    "greeting": "What can I do for you?",
    "clarify": "Which of these is it, or could you tell me a bit more?",
    "language": "Could you write to me in English, or shall I connect you with a person?",
}


def text(pack: Pack, key: str) -> str:
    return pack.texts.get(key) or TEXTS[key]


def topics(pack: Pack) -> str:
    """The pack's help topics as one phrase ("a, b or c"); '' when it declares none."""
    items = list(pack.help_topics)
    if not items:
        return ""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def say(pack: Pack, key: str) -> str:
    """The reply ``key`` (greeting, closing, clarify, language), naming the help topics where it asks."""
    lead = text(pack, key)
    if key not in _ASK:
        return lead
    about = topics(pack)
    offer = f" I can help with {about}." if about else ""
    return f"{lead}{offer} {_ASK[key]}"


_LATIN_WORD = re.compile(r"[^\W\d_]+")


def foreign_share(message: str, vocabulary: Iterable[str]) -> float:
    """The share of the message's words (3+ letters) that neither the pack's data nor English stop words know.

    A cheap, business-neutral signal that the customer wrote in another language: the vocabulary is every
    word of the pack's route examples and help articles.
    """
    known = frozenset(vocabulary)
    words = [w.lower() for w in _LATIN_WORD.findall(message) if len(w) >= 3]
    if not words:
        return 0.0
    unknown = [w for w in words if not w.isascii() or (content_words(w) and not content_words(w) <= known)]
    return len(unknown) / len(words)
