"""Retrieval over a pack's help articles: passages, indexed once per worker, ranked by BM25 (and embeddings).

The pack declares its articles (``Pack.help_articles``: slug -> title, body, tags); this module cuts each
body into passages of one to two sentences and keeps, per worker process and per set of articles, a BM25
index over their content words (``agents.embedding_router.content_words``: stop words out, crude stemming), with
each passage's article title and tags counted as part of it. Why BM25 written out here rather than a
library: the corpus is a few dozen passages, the index must pickle nowhere and load nothing, and every
backend (Gemini included, whose embeddings are not in the worker) needs the same ranking; the available
BM25 packages are young single-maintainer projects for corpora a thousand times larger.

The model's own embeddings take part one step earlier: for a small model they route the turn (a help
question, a greeting, an action; ``agents.embedding_router``), and only a turn routed to the pack's answer route,
or an offer that needs the policy behind it, quotes a passage. Reranking passages by SmolLM2-135M's
embeddings was not used: its cosine between any two English support sentences sits in 0.7-0.9, which
ranks 26 passages no better than shared words do. Text-writing models get the top passages in their
prompt (``prompt_block``); a small model's grounded answer quotes the best passage, naming its article
(``answer_text``), never the whole article.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.embedding_router import content_words

MIN_SCORE = 2.0  # BM25 score below which nothing counts as retrieved (tuned on the dev scenarios)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_K1, _B = 1.2, 0.75
# Words of conversation that name no topic (on top of routing's stop words): "thanks, that's all" retrieves nothing.
_CHAT_WORDS_TEXT = (
    "all also any anything else hello hey hi thanks thank ok okay yes no not need want know tell help like one "
    "much many very really still again there here something problem issue question"
)
_CHAT_WORDS = frozenset(_CHAT_WORDS_TEXT.split())


@dataclass(frozen=True)
class Passage:
    slug: str
    title: str
    text: str  # one or two sentences of the article body


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    index: int


def passages_of(articles: Mapping[str, Mapping[str, Any]]) -> tuple[Passage, ...]:
    """Each article's body cut into passages: sentences, a short one joined to the next (at most two)."""
    out: list[Passage] = []
    for slug, art in articles.items():
        title = str(art.get("title") or slug)
        sentences = [s.strip() for s in _SENTENCE.split(" ".join(str(art.get("body") or "").split())) if s.strip()]
        parts: list[str] = []
        i = 0
        while i < len(sentences):
            text = sentences[i]
            if len(text.split()) < 12 and i + 1 < len(sentences):
                text, i = f"{text} {sentences[i + 1]}", i + 1
            elif len(text.split()) < 12 and parts:  # a short last sentence belongs to the one before
                parts[-1], text = f"{parts[-1]} {text}", ""
            if text:
                parts.append(text)
            i += 1
        out.extend(Passage(slug, title, text) for text in parts)
    return tuple(out)


class Index:
    """BM25 over passages; a passage's words include its article's title, slug and tags."""

    def __init__(self, articles: Mapping[str, Mapping[str, Any]]) -> None:
        self.passages = passages_of(articles)
        extra = {
            slug: " ".join([str(a.get("title") or ""), slug.replace("-", " "), *map(str, a.get("tags") or ())])
            for slug, a in articles.items()
        }
        self._docs = [Counter(_terms(f"{p.text} {extra[p.slug]}")) for p in self.passages]
        n = len(self._docs)
        self._avg = sum(sum(d.values()) for d in self._docs) / max(n, 1)
        df = Counter(w for d in self._docs for w in d)
        self._idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
        self.vocabulary = frozenset(df)

    def search(self, text: str, k: int = 3) -> list[Hit]:
        """The ``k`` best passages for ``text`` with a BM25 score of at least ``MIN_SCORE``, best first."""
        words = _terms(text)
        scores = []
        for doc in self._docs:
            length = sum(doc.values())
            s = 0.0
            for w in words:
                f = doc.get(w, 0)
                if f:
                    s += self._idf[w] * f * (_K1 + 1) / (f + _K1 * (1 - _B + _B * length / self._avg))
            scores.append(s)
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [Hit(self.passages[i], round(scores[i], 3), i) for i in ranked[:k] if scores[i] >= MIN_SCORE]


def _terms(text: str) -> list[str]:
    # content_words is a set; BM25 wants term frequencies, so count each word of the text through it.
    tokens = (t for t in re.findall(r"[a-z]+", text.lower()) if t not in _CHAT_WORDS)
    return [w for token in tokens for w in content_words(token)]


def _key(articles: Mapping[str, Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(articles, sort_keys=True, default=str).encode()).hexdigest()


_INDEXES: dict[str, Index] = {}


def index_for(articles: Mapping[str, Mapping[str, Any]] | None) -> Index | None:
    """The worker's index of ``articles`` (built once per distinct set of articles), or None for none."""
    if not articles:
        return None
    key = _key(articles)
    found = _INDEXES.get(key)
    if found is None:
        if len(_INDEXES) > 32:
            _INDEXES.clear()
        found = _INDEXES[key] = Index(articles)
    return found


CLOSE = 0.85  # a second passage of the best article joins the answer when it scores this close to the best


def answer_text(hits: Sequence[Hit]) -> str:
    """A grounded answer: the best passage (and a close second of the same article), quoting the article by name."""
    best = hits[0]
    same = [h for h in hits[1:] if h.passage.slug == best.passage.slug and h.score >= CLOSE * best.score][:1]
    chosen = sorted([best, *same], key=lambda h: h.index)  # in the article's own order
    return f'From our help article "{best.passage.title}": ' + " ".join(h.passage.text for h in chosen)


def prompt_block(hits: Sequence[Hit]) -> str:
    """The retrieved passages for a text-writing model's system prompt, each with its article's title."""
    if not hits:
        return ""
    lines = [f'- "{h.passage.title}": {h.passage.text}' for h in hits]
    return (
        "\nHelp articles retrieved for this message (state policies and advice only from these or from tool "
        "results, and name the article):\n" + "\n".join(lines)
    )
