"""Output checks on free text a model wrote: is it grounded, and is it degenerate?

Every reply is one of four kinds (``ReplyKind`` of the eval row's flags, ``reply_<kind>``): rendered
from this turn's tool results (or the pack's own conversational texts), an answer quoted from a
retrieved help-article passage, a clarifying question, or a hand-off. Free text a model wrote is
allowed through only when it is grounded: each sentence that states something (a policy, a piece of
advice, a fact) must be carried by a source the turn really had — a tool result, a retrieved passage,
the customer's own account data, the prompt's policy lines, the pack's texts. A sentence carries no
statement when its content words are all conversational ("I'm sorry to hear that", "How can I help?"),
once its stock phrases of thanks and offers of help are set aside ("need further assistance", "don't hesitate").

``check`` is lexical and deliberately strict: a sentence whose numbers do not all occur in the
sources, or two or more of whose content words (and over 1 - ``SUPPORT`` of them) do not, is
unsupported. A reply with any unsupported sentence is replaced (``agents.steps``) and flagged ``ungrounded``.

``degenerate`` reads a reply for the loops a small model falls into: one sentence said three or more
times, or most of the text made of a repeated word sequence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from agents.embedding_router import content_words

SUPPORT = 0.6  # share of a stating sentence's content words that must occur in the sources
MIN_UNSUPPORTED = 2  # a single unsourced word is a paraphrase ("on its way"), not a claim
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# Words that state nothing about the business: apologies, greetings, offers of help, hedges.
_CONVERSATIONAL_TEXT = (
    "sorry hear apologize apologise apology inconvenience frustration frustrating understand understandable "
    "hello hi hey welcome thanks thank glad happy pleased help assist assistance question questions anything "
    "else today great good day morning afternoon evening bye goodbye let know sure certainly course ok okay "
    "absolutely problem look looking check checking see right away moment wait hope well nice meet chat "
    "tell more detail details please feel free reach contact again here support team us assistant agent human "
    "person connect"
)
_CONVERSATIONAL = frozenset(w for word in _CONVERSATIONAL_TEXT.split() for w in content_words(word))
# Stock phrases of thanks and offers of help, removed whole before the words are counted: their words alone
# can carry a claim or advice ("you need a receipt", "no other way to return it", "kind of"), so they are not
# conversational words; only the phrase states nothing.
_STOCK_PHRASES = re.compile(
    r"\b(?:need|want|require)s? (?:any )?(?:further |more |additional |other )?(?:help|assistance|support)\b"
    r"|\b(?:do not|don't|don\u2019t) hesitate\b|\bin any way(?: possible| I can)?\b|\bon your mind\b"
    r"|\bquestions? or (?:concerns?|issues?)\b|\bkind words\b|\bget started\b|\bthanks? (?:you )?(?:so|very) much\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    grounded: bool
    unsupported: tuple[str, ...] = ()  # the sentences no source carried


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text) if s.strip()]


def _numbers(text: str) -> set[str]:
    return {n.replace(",", ".") for n in _NUMBER.findall(text)}


def check(text: str, sources: Iterable[str]) -> Verdict:
    """Whether every stating sentence of ``text`` is carried by ``sources`` (see the module's docstring)."""
    pool = " \n ".join(sources)
    known = content_words(pool)
    numbers = _numbers(pool)
    unsupported = []
    for sentence in sentences(text):
        words = content_words(_STOCK_PHRASES.sub(" ", sentence)) - _CONVERSATIONAL
        missing_numbers = _numbers(sentence) - numbers
        if not words and not missing_numbers:
            continue
        unknown = words - known
        share = 1.0 - len(unknown) / len(words) if words else 1.0
        if missing_numbers or (len(unknown) >= MIN_UNSUPPORTED and share < SUPPORT):
            unsupported.append(sentence)
    return Verdict(not unsupported, tuple(unsupported))


def grounded_lead(text: str, verdict: Verdict) -> str:
    """The sentences of ``text`` before the first one ``verdict`` (its ``check``) found unsupported ('' if that
    is the first): what a reply may keep when it goes on to state what no source gave (the releaser showed the
    same sentences, agents.streaming)."""
    if verdict.grounded or not verdict.unsupported:
        return text
    said = sentences(text)
    return " ".join(said[: said.index(verdict.unsupported[0])])


def degenerate(text: str) -> bool:
    """A looping reply: a sentence three or more times, or over half its words a repeated 4-word sequence."""
    said = Counter(s.lower().strip(" .!?") for s in sentences(text))
    if said and max(said.values()) >= 3:
        return True
    words = text.lower().split()
    if len(words) < 16:
        return False
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    gram, n = grams.most_common(1)[0]
    return n >= 3 and n * len(gram) > len(words) / 2
