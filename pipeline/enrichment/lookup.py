"""What the Firestore and Bigtable handlers share: the cache in front of the store, batch bookkeeping
and the response row that ``EnrichCustomerContext`` joins onto the turn.

A handler is called by Beam's ``RequestResponseIO`` with one request row, or with a list of them when
its ``batch_elements_kwargs`` asks for batching. Request row: ``customer_id`` plus whatever the caller
carries along (the turn). Response row::

    context        the customer context (``pipeline.enrichment.context``), {} when flagged
    context_flags  list of flags (``contract.context_layout``)
    cache_hit      the context came from the per-worker cache
    batch_size     requests in this call, on the first response of the call (0 on the others)
    store_rpcs     RPCs this call made, on the first response of the call (0 on the others)

Contexts are shared (the cache, several turns of one customer in a batch): treat them as read-only.

The handler never raises for a store failure: it answers ``context_unavailable`` instead, so no
turn is lost and Beam's own repeater never blocks a bundle on a dead store. (Beam's ``RequestResponseIO``
runs the call on a throwaway thread whose pool waits for it even after its timeout, so the
handler must bound its own time: it does, with per-RPC deadlines and a bounded retry budget.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam

from pipeline.enrichment.context import UNAVAILABLE, CachePolicy, ContextResult, TTLCache, shared_cache

log = logging.getLogger(__name__)

Request = beam.Row
Response = tuple[beam.Row, beam.Row]
# Fetch the misses: ids -> (result per id, RPCs made).
Fetch = Callable[[list[str]], tuple[dict[str, ContextResult], int]]


def response_row(result: ContextResult, *, cache_hit: bool, batch_size: int, store_rpcs: int) -> beam.Row:
    return beam.Row(
        context=result.context,
        context_flags=list(result.flags),
        cache_hit=cache_hit,
        batch_size=batch_size,
        store_rpcs=store_rpcs,
    )


class ContextLookup:
    """Mixin: ``lookup`` answers a batch of requests from the cache first and the store for the rest."""

    cache_policy: CachePolicy
    _cache: TTLCache | None = None

    def open_cache(self, namespace: str) -> None:
        self._cache = shared_cache(namespace, self.cache_policy.max_entries) if self._caching else None

    @property
    def _caching(self) -> bool:
        return self.cache_policy.ttl_s > 0 or self.cache_policy.unknown_ttl_s > 0

    def lookup(self, requests: Sequence[Request], fetch: Fetch) -> list[Response]:
        ids = list(dict.fromkeys(str(r.customer_id) for r in requests))
        results: dict[str, ContextResult] = {}
        hits: set[str] = set()
        if self._cache is not None:
            for cid in ids:
                cached = self._cache.get(cid)
                if cached is not None:
                    results[cid] = cached
                    hits.add(cid)
        misses = [cid for cid in ids if cid not in results]
        rpcs = 0
        if misses:
            try:
                fetched, rpcs = fetch(misses)
            except Exception as e:  # noqa: BLE001 - a store failure degrades to a flag, never loses the turn
                log.warning("customer context unavailable for %d customers: %s: %s", len(misses), type(e).__name__, e)
                fetched = {}
            for cid in misses:
                result = fetched.get(cid, UNAVAILABLE)
                results[cid] = result
                if self._cache is not None:
                    self._cache.put(cid, result, self.cache_policy.ttl_for(result))
        return [
            (
                req,
                response_row(
                    results[str(req.customer_id)],
                    cache_hit=str(req.customer_id) in hits,
                    batch_size=len(requests) if i == 0 else 0,
                    store_rpcs=rpcs if i == 0 else 0,
                ),
            )
            for i, req in enumerate(requests)
        ]

    def answer(self, request: Request | list[Request], fetch: Fetch) -> Response | list[Response]:
        """Beam calls a batching handler with a list and a plain one with a single row: answer in kind."""
        if isinstance(request, list):
            return self.lookup(request, fetch)
        return self.lookup([request], fetch)[0]


def batching_kwargs(max_batch_size: int) -> dict[str, Any]:
    """``BatchElements`` settings: a batch is what one bundle holds, up to ``max_batch_size``.

    ``min_batch_size == max_batch_size`` turns the adaptive sizing off: within a bundle the batch is sent
    when it is full or when the bundle ends, never on a timer (no ``max_batch_duration_secs``), so a lone
    turn goes at once and a burst is read together. (Adaptive sizing starts at 1 and grows, which only
    adds store calls here: a burst read in one call finishes sooner than in several.)
    """
    if max_batch_size <= 1:
        return {}
    return {"min_batch_size": max_batch_size, "max_batch_size": max_batch_size}
