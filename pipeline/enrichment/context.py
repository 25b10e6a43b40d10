"""The customer context both stores produce, the document checks behind ``context_malformed``, and the cache.

``build_context`` takes the plain values read from either store (Firestore documents through
``tools.store``, Bigtable JSON cells) and returns the same dict, so the agent and the evals never
see which store answered. Beside the profile it holds one list per collection the pack declares
(``tools.context_collection.ContextCollection``, e.g. the demo shop's tickets)::

    {"customer_id": "<id>",
     "profile": {name, email, phone, plan, tier, address, locale, created_at},
     "<collection>": [{<id_field>, <declared fields>, ...}]   newest first (newest_first), <= max_kept
     ...}

Timestamps are ISO-8601 strings. Invalid documents (a declared field missing or of another type) are
dropped and invalid profile fields removed; either way the result carries ``context_malformed`` and the
turn goes on with what was valid.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contract.context_layout import CONTEXT_MALFORMED, CONTEXT_UNAVAILABLE, CUSTOMER_UNKNOWN
from tools.context_collection import ContextCollection, field_check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextResult:
    """One customer's context as enrichment attaches it: ``context`` is ``{}`` when a flag says why."""

    context: dict[str, Any]
    flags: tuple[str, ...] = ()

    @property
    def cacheable(self) -> bool:
        # A store failure is never cached: the next turn must try again.
        return CONTEXT_UNAVAILABLE not in self.flags


UNKNOWN = ContextResult({}, (CUSTOMER_UNKNOWN,))
UNAVAILABLE = ContextResult({}, (CONTEXT_UNAVAILABLE,))


# -- document checks -------------------------------------------------------------------------------------------------

# The profile is every pack's (who the customer is): field -> type (``tools.context_collection``);
# fields not listed pass through untouched (forward compatible).
PROFILE_FIELDS: dict[str, str] = {
    "name": "str",
    "plan": "str",
    "email": "str?",
    "phone": "str?",
    "tier": "str?",
    "locale": "str?",
    "created_at": "timestamp?",
    "address": "mapping?",
}
PROFILE_REQUIRED = ("name", "plan")


def _clean_profile(raw: Any) -> tuple[dict[str, Any], bool]:
    """(profile with the invalid fields removed, whether anything was wrong)."""
    if not isinstance(raw, Mapping):
        return {}, True
    profile = {k: v for k, v in raw.items() if k not in PROFILE_FIELDS or field_check(PROFILE_FIELDS[k])(v)}
    malformed = len(profile) != len(raw) or any(k not in profile for k in PROFILE_REQUIRED)
    return profile, malformed


def _newest_first(records: list[dict[str, Any]], collection: ContextCollection) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[datetime, str]:
        ts = datetime.fromisoformat(r[collection.newest_first])
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)), str(r[collection.id_field])

    return sorted(records, key=key, reverse=True)[: collection.max_kept]


Documents = Sequence[tuple[str, Any]]  # (document id, document) as a store read them


def build_context(
    customer_id: str,
    profile: Any,
    documents: Mapping[str, Documents],
    collections: Sequence[ContextCollection],
) -> ContextResult:
    """The context of a customer that exists, from plain values; ``documents``: collection name -> its documents."""
    clean_profile, malformed = _clean_profile(profile)
    context: dict[str, Any] = {"customer_id": customer_id, "profile": clean_profile}
    for collection in collections:
        kept: list[dict[str, Any]] = []
        for doc_id, doc in documents.get(collection.name, ()):
            if collection.valid(doc):
                kept.append(collection.record(doc_id, doc))
            else:
                malformed = True
        context[collection.name] = _newest_first(kept, collection)
    if malformed:
        log.warning("malformed customer context documents dropped for %s", customer_id)
    return ContextResult(context, (CONTEXT_MALFORMED,) if malformed else ())


# -- per-worker cache ------------------------------------------------------------------------------------------------


class TTLCache:
    """A thread-safe LRU map whose entries expire ``ttl_s`` after they were put.

    Shared by every DoFn instance (thread) of a worker process through ``shared_cache``: turns of
    one session run on the worker that holds the session's state, so its later turns hit.
    """

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            expires, value = hit
            if expires <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


_CACHES: dict[str, TTLCache] = {}
_CACHES_LOCK = threading.Lock()


def shared_cache(namespace: str, max_entries: int = 10_000) -> TTLCache:
    """The worker process's cache for one store (namespace: store kind, project, endpoint, table)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(namespace)
        if cache is None:
            cache = _CACHES[namespace] = TTLCache(max_entries)
        return cache


@dataclass(frozen=True)
class CachePolicy:
    """How long results live in the per-worker cache; 0 disables caching of that kind."""

    ttl_s: float = 30.0  # a found customer: records change, but not within a chat's few turns
    unknown_ttl_s: float = 10.0  # a customer created a moment ago must show up soon
    max_entries: int = 10_000

    def ttl_for(self, result: ContextResult) -> float:
        if not result.cacheable:
            return 0.0
        return self.unknown_ttl_s if CUSTOMER_UNKNOWN in result.flags else self.ttl_s


NO_CACHE = CachePolicy(ttl_s=0.0, unknown_ttl_s=0.0)


def clear_caches() -> None:
    """Empty every per-worker cache of this process (tests and benchmarks)."""
    with _CACHES_LOCK:
        for cache in _CACHES.values():
            cache.clear()
