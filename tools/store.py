"""Customer data access in Firestore, scoped to one customer by construction.

Every read starts from ``customers/{customer_id}``, and the customer id comes
from the session (never from the model), so a turn can only ever see its own
customer's documents. What is read beside the customer's root document is
what the pack declares (``Pack.context``: one subcollection per ``ContextCollection``,
newest first, bounded). A batched read (``profiles``) fetches several customers'
root documents in one ``BatchGetDocuments`` call, but each result is still
keyed by the id it was asked for. Seed data and layout: ``stack/seed.py``.

Every call has a deadline (``timeout_s`` per RPC) and is retried with tenacity
on transient errors only (unavailable, deadline exceeded, aborted, internal,
too many requests), within ``attempts`` tries and ``max_retry_s`` seconds in all.
The client library's own retry is switched off (``retry=None``) so that this
is the one retry policy and the bound holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from tools.context_collection import ContextCollection
from tools.packs import DEFAULT_PACK, load_pack

CUSTOMERS = "customers"
Documents = list[tuple[str, Any]]  # (document id, plain document), newest first

TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.TooManyRequests,
)

T = TypeVar("T")


def _plain(value: Any) -> Any:
    """Firestore values -> JSON-friendly values (timestamps become ISO strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class CustomerStore:
    """Reads of one Firestore database; thread-safe (the handler fans queries out on a pool)."""

    def __init__(
        self,
        client: firestore.Client,
        timeout_s: float = 1.0,
        *,
        attempts: int = 3,
        max_retry_s: float | None = None,
        collections: Sequence[ContextCollection] | None = None,
    ) -> None:
        self._db = client
        # The collections the context reads: the pack's ``Pack.context`` (None: the default pack's).
        self.collections = tuple(load_pack(DEFAULT_PACK).context if collections is None else collections)
        self._timeout = timeout_s
        self._retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=wait_exponential_jitter(initial=0.05, max=0.5),
            stop=stop_after_attempt(attempts) | stop_after_delay(max_retry_s or attempts * timeout_s),
            reraise=True,
        )
        self._lock = threading.Lock()
        self._rpcs = 0

    @property
    def rpcs(self) -> int:
        """RPC attempts made so far (retries included)."""
        with self._lock:
            return self._rpcs

    def _call(self, fn: Callable[[], T]) -> T:
        def attempt() -> T:
            with self._lock:
                self._rpcs += 1
            return fn()

        return self._retrying.copy()(attempt)  # a copy per call: Retrying keeps per-call state

    def customer(self, customer_id: str) -> firestore.DocumentReference:
        return self._db.collection(CUSTOMERS).document(customer_id)

    # -- batched and per-customer reads ---------------------------------------------------------------------------

    def profiles(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Root documents of several customers in one ``get_all`` call; None for a customer that does not exist."""
        ids = list(dict.fromkeys(customer_ids))
        refs = [self.customer(cid) for cid in ids]

        def read() -> dict[str, dict[str, Any] | None]:
            # get_all streams its answer: the whole stream is one attempt, so a broken stream is retried whole.
            snaps = self._db.get_all(refs, retry=None, timeout=self._timeout)
            return {s.id: (_plain(s.to_dict() or {}) if s.exists else None) for s in snaps}

        found = self._call(read)
        return {cid: found.get(cid) for cid in ids}

    def documents(self, customer_id: str, collection: ContextCollection) -> Documents:
        """The newest ``collection.max_kept`` documents of one of the customer's collections."""
        query = (
            self.customer(customer_id)
            .collection(collection.source)
            .order_by(collection.newest_first, direction=firestore.Query.DESCENDING)
            .limit(collection.max_kept)
        )
        return self._call(
            lambda: [(d.id, _plain(d.to_dict())) for d in query.stream(retry=None, timeout=self._timeout)]
        )
