"""The customer context both stores produce, the document checks behind ``context_malformed``, and the cache.

``build_context`` takes the plain values read from either store (Firestore documents through
``tools.store``, Bigtable JSON cells) and returns the same dict, so the agent and the evals never
see which store answered::

    {"customer_id": "C0001",
     "profile": {name, email, phone, plan, tier, address, locale, created_at},
     "orders":  [{"order_id", status, items, total, currency, placed_at, ...}]   newest first, <= MAX_ORDERS
     "tickets": [{"ticket_id", subject, status, created_at, order_id}]          newest first, <= MAX_TICKETS

Timestamps are ISO-8601 strings. Invalid documents are dropped and invalid profile fields removed;
either way the result carries ``context_malformed`` and the turn goes on with what was valid.
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

from contract.context_layout import (
    CONTEXT_MALFORMED,
    CONTEXT_UNAVAILABLE,
    CUSTOMER_UNKNOWN,
    MAX_ORDERS,
    MAX_TICKETS,
)

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


def _is_timestamp(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_items(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(i, Mapping) and _is_str(i.get("name")) for i in v)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


Check = Callable[[Any], bool]

# field -> check; fields not listed pass through untouched (forward compatible).
PROFILE_FIELDS: dict[str, Check] = {
    "name": _is_str,
    "plan": _is_str,
    "email": _optional(_is_str),
    "phone": _optional(_is_str),
    "tier": _optional(_is_str),
    "locale": _optional(_is_str),
    "created_at": _optional(_is_timestamp),
    "address": _optional(lambda v: isinstance(v, Mapping)),
}
PROFILE_REQUIRED = ("name", "plan")
ORDER_FIELDS: dict[str, Check] = {
    "status": _is_str,
    "items": _is_items,
    "total": _is_number,
    "currency": _is_str,
    "placed_at": _is_timestamp,
    "delivered_at": _optional(_is_timestamp),
    "shipping": _optional(lambda v: isinstance(v, Mapping)),
    "refundable": _optional(lambda v: isinstance(v, bool)),
}
TICKET_FIELDS: dict[str, Check] = {
    "subject": _is_str,
    "status": _is_str,
    "created_at": _is_timestamp,
    "order_id": _optional(_is_str),
}


def _valid_document(doc: Any, fields: Mapping[str, Check]) -> bool:
    """Every listed field present (None allowed only where optional) and of the expected type."""
    return isinstance(doc, Mapping) and all(check(doc.get(name)) for name, check in fields.items())


def _clean_profile(raw: Any) -> tuple[dict[str, Any], bool]:
    """(profile with the invalid fields removed, whether anything was wrong)."""
    if not isinstance(raw, Mapping):
        return {}, True
    profile = {k: v for k, v in raw.items() if k not in PROFILE_FIELDS or PROFILE_FIELDS[k](v)}
    malformed = len(profile) != len(raw) or any(k not in profile for k in PROFILE_REQUIRED)
    return profile, malformed


def _newest_first(docs: list[dict[str, Any]], at: str, id_key: str, limit: int) -> list[dict[str, Any]]:
    def key(d: dict[str, Any]) -> tuple[datetime, str]:
        ts = datetime.fromisoformat(d[at])
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)), str(d[id_key])

    return sorted(docs, key=key, reverse=True)[:limit]


def build_context(
    customer_id: str,
    profile: Any,
    orders: Sequence[tuple[str, Any]],
    tickets: Sequence[tuple[str, Any]],
) -> ContextResult:
    """The context of a customer that exists, from plain values; ``orders``/``tickets`` are (id, document)."""
    clean_profile, malformed = _clean_profile(profile)
    kept_orders: list[dict[str, Any]] = []
    for oid, doc in orders:
        if _valid_document(doc, ORDER_FIELDS):
            kept_orders.append({**doc, "order_id": oid})
        else:
            malformed = True
    kept_tickets: list[dict[str, Any]] = []
    for tid, doc in tickets:
        if _valid_document(doc, TICKET_FIELDS):
            kept_tickets.append({**doc, "ticket_id": tid})
        else:
            malformed = True
    if malformed:
        log.warning("malformed customer context documents dropped for %s", customer_id)
    context = {
        "customer_id": customer_id,
        "profile": clean_profile,
        "orders": _newest_first(kept_orders, "placed_at", "order_id", MAX_ORDERS),
        "tickets": _newest_first(kept_tickets, "created_at", "ticket_id", MAX_TICKETS),
    }
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

    ttl_s: float = 30.0  # a found customer: order states move, but not within a chat's few turns
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
