"""``FirestoreContextHandler``: customer context from Firestore for Beam's ``Enrichment`` transform.

One call of the handler answers a batch of turns (``BatchElements`` in front of it, see ``batching_kwargs``):

1. the per-worker TTL cache answers the customers it knows;
2. one ``get_all`` (BatchGetDocuments) reads the root documents ``customers/{id}`` of all the others;
3. for the customers that exist, the queries of the subcollections the pack declares (``Pack.context``,
   one per ``ContextCollection``) run concurrently on a small pool: Firestore has no multi-query RPC, and
   a collection-group ``in`` query over all customers' records would lose the per-customer "newest N"
   bound and need a collection-group index.

Each RPC has a deadline and tenacity retries on transient errors (``tools.store.CustomerStore``).
A customer whose reads fail after the retries gets ``context_unavailable``; the rest of the batch
is unaffected.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from apache_beam.transforms.enrichment import EnrichmentSourceHandler

from pipeline.enrichment.context import UNAVAILABLE, UNKNOWN, CachePolicy, ContextResult, build_context
from pipeline.enrichment.lookup import ContextLookup, Request, Response, batching_kwargs
from tools.context_collection import ContextCollection
from tools.packs import DEFAULT_PACK, load_pack
from tools.store import CustomerStore, Documents

log = logging.getLogger(__name__)


class FirestoreContextHandler(
    EnrichmentSourceHandler[Request | list[Request], Response | list[Response]], ContextLookup
):
    def __init__(
        self,
        project: str,
        *,
        database: str | None = None,
        timeout_s: float = 1.0,
        attempts: int = 3,
        max_batch_size: int = 50,
        fanout: int = 8,
        cache: CachePolicy | None = None,
        collections: Sequence[ContextCollection] | None = None,
    ) -> None:
        self.project = project
        # What each context holds beside the profile: the pack's ``Pack.context`` (None: the default pack's).
        self.collections = tuple(load_pack(DEFAULT_PACK).context if collections is None else collections)
        self.database = database
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.max_batch_size = max_batch_size
        self.fanout = fanout
        self.cache_policy = cache or CachePolicy()
        self._client: Any = None
        self._store: CustomerStore | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def call_budget_s(self) -> float:
        """Deadline of one call: the root documents, then the subcollection queries, each within its retries.

        Queries still queued or running at the deadline give their customer ``context_unavailable``.
        """
        return 2 * self.attempts * self.timeout_s

    @property
    def max_call_s(self) -> float:
        """Worst-case time one call can take (the last attempt of the root read may start just in time)."""
        return self.call_budget_s + self.timeout_s + 1.0

    def __enter__(self) -> FirestoreContextHandler:
        from google.cloud import firestore

        self._client = firestore.Client(project=self.project, database=self.database)
        self._store = CustomerStore(self._client, self.timeout_s, attempts=self.attempts, collections=self.collections)
        self._pool = ThreadPoolExecutor(max_workers=self.fanout, thread_name_prefix="firestore-context")
        endpoint = os.environ.get("FIRESTORE_EMULATOR_HOST", "firestore.googleapis.com")
        self.open_cache(f"firestore|{endpoint}|{self.project}|{self.database or '(default)'}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            # Beam's direct runner enters and exits once per bundle: close the channel, don't leak it.
            self._client.close()
        self._pool = self._store = self._client = None

    def __call__(self, request: Request | list[Request], *args: Any, **kwargs: Any) -> Response | list[Response]:
        return self.answer(request, self._fetch)

    def get_cache_key(self, request: Request) -> str:
        return f"customer_id: {request.customer_id}"

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return batching_kwargs(self.max_batch_size)

    def _fetch(self, ids: list[str]) -> tuple[dict[str, ContextResult], int]:
        store, pool = self._store, self._pool
        if store is None or pool is None:
            raise RuntimeError("FirestoreContextHandler used outside its context (Beam calls __enter__ in setup)")
        deadline = time.monotonic() + self.call_budget_s
        before = store.rpcs
        profiles = store.profiles(ids)  # raises after retries: the caller flags the whole batch unavailable
        found = [cid for cid in ids if profiles[cid] is not None]
        subs: dict[str, dict[str, Future[Documents]]] = {
            cid: {c.name: pool.submit(store.documents, cid, c) for c in self.collections} for cid in found
        }
        results: dict[str, ContextResult] = {cid: UNKNOWN for cid in ids if profiles[cid] is None}
        failed = 0
        for cid, queries in subs.items():
            try:
                left = max(0.0, deadline - time.monotonic())
                documents = {name: query.result(left) for name, query in queries.items()}
                results[cid] = build_context(cid, profiles[cid], documents, self.collections)
            except Exception:  # noqa: BLE001 - failed after retries or past the deadline; the batch goes on
                for query in queries.values():
                    query.cancel()
                results[cid] = UNAVAILABLE
                failed += 1
        if failed:
            log.warning("customer context unavailable for %d of %d customers (their records)", failed, len(ids))
        return results, store.rpcs - before
