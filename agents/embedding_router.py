"""Routing a request by nearest neighbour over the model's own embeddings.

A 135M model picks the right support tool for a plain request 2 times in 16
when asked through a JSON-schema constraint, 5 in 16 with few-shot examples,
and 12 in 16 by nearest neighbour over its own mean-pooled embeddings against
a handful of example requests per tool (../shared/README.md). So small models
route here: the backend embeds the request and the examples (``embed``), and
``rank`` votes among the ``k`` examples nearest to the request.

The examples are versioned data beside the prompts
(a pack's ``routes/<version>.yaml``, loaded by ``agents.route_table``); a backend
caches their vectors (``EmbeddingCache``), so a turn embeds only its own text.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from agents.model_io import RouteQuery

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]


class EmbeddingCache:
    """Text -> unit vector, bounded LRU; ``embed`` is called only for texts not seen yet. Thread-safe."""

    def __init__(self, embed: Embed, max_entries: int = 4096) -> None:
        self._embed = embed
        self._max = max_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = np.asarray(self._embed(missing), dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        with self._lock:
            out = []
            for t in texts:
                self._cache.move_to_end(t)
                out.append(self._cache[t])
        return np.stack(out)


_WORD = re.compile(r"[a-z]+")
_STOP_WORDS = (
    "a an and are as at be but by can could do does for from get got had has have how i i'd i'm is it its just "
    "me my of on or our please so that the their them there this to too us was we what when where which who "
    "why will with would you your yet any some"
)
_STOP = frozenset(_STOP_WORDS.split())


def content_words(text: str) -> frozenset[str]:
    """Lower-case words without stop words, crudely stemmed (plural s, -ed, -ing)."""
    out = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOP or len(word) < 2:
            continue
        out.add(re.sub(r"(?:ing|ed|s)$", "", word) if len(word) > 4 else word)
    return frozenset(out)


def _idf(labels: Sequence[str], bags: Sequence[frozenset[str]]) -> dict[str, float]:
    """Inverse label frequency of each word: a word that many labels' examples use says little about the label."""
    seen: dict[str, set[str]] = {}
    for label, bag in zip(labels, bags, strict=True):
        for word in bag:
            seen.setdefault(word, set()).add(label)
    n = len(set(labels))
    return {word: float(np.log(1.0 + n / len(owners))) for word, owners in seen.items()}


def lexical_similarity(a: frozenset[str], b: frozenset[str], weights: dict[str, float]) -> float:
    """Weighted cosine of two word sets (words unknown to the examples weigh as the rarest); 0 if either is empty."""
    if not a or not b:
        return 0.0
    top = max(weights.values(), default=1.0)

    def w(word: str) -> float:
        return weights.get(word, top)

    shared = sum(w(x) ** 2 for x in a & b)
    return shared / float(np.sqrt(sum(w(x) ** 2 for x in a) * sum(w(x) ** 2 for x in b)))


def rank(query: RouteQuery, embed: Callable[[Sequence[str]], np.ndarray]) -> tuple[tuple[str, float], ...]:
    """Labels ranked by votes among the ``k`` nearest examples (cosine), ties broken by summed similarity.

    Every label appears (unvoted ones after, by their best similarity), so a caller can fall back to the next.
    """
    labels = [label for label, _ in query.examples]
    vectors = embed([query.text, *(text for _, text in query.examples)])
    scores = vectors[1:] @ vectors[0]
    if query.lexical_weight:
        words = content_words(query.text)
        bags = [content_words(text) for _, text in query.examples]
        weights = _idf(labels, bags)
        scores = scores + query.lexical_weight * np.array(
            [lexical_similarity(words, bag, weights) for bag in bags], dtype=np.float32
        )
    nearest = np.argsort(-scores)[: query.k]
    votes: dict[str, tuple[int, float]] = {}
    for i in nearest:
        n, total = votes.get(labels[i], (0, 0.0))
        votes[labels[i]] = (n + 1, total + float(scores[i]))
    best: dict[str, float] = {}
    for label, score in zip(labels, scores, strict=True):
        best[label] = max(best.get(label, -1.0), float(score))
    ranked = sorted(best, key=lambda lb: (-votes.get(lb, (0, 0.0))[0], -votes.get(lb, (0, 0.0))[1], -best[lb]))
    return tuple((label, round(votes[label][1] if label in votes else best[label], 4)) for label in ranked)
