"""Customer context for each turn, read from Firestore on the hot path.

Rule for a missing context (documented in the README): the turn always goes
on. An unknown customer gets ``customer_unknown``; a store that stays down
after retries gets ``context_unavailable``. The agent sees the flag (and
says it cannot look things up), and the eval row records it. Nothing is
dead-lettered here, because a reply without context beats no reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from contract.turn import EnrichedTurn, Turn
from tools.store import CustomerNotFound, CustomerStore

log = logging.getLogger(__name__)


class FetchCustomerContext(beam.DoFn):
    def __init__(self, project: str, timeout_s: float = 2.0) -> None:
        self._project = project
        self._timeout = timeout_s
        self.unknown = Metrics.counter("enrich", "customer_unknown")
        self.unavailable = Metrics.counter("enrich", "context_unavailable")
        self.latency = Metrics.distribution("enrich", "latency_ms")

    def setup(self) -> None:
        from google.cloud import firestore

        self._store = CustomerStore(firestore.Client(project=self._project), timeout_s=self._timeout)

    def process(self, turn: Turn) -> Iterator[EnrichedTurn]:
        start = time.perf_counter()
        flags: tuple[str, ...] = ()
        context: dict = {}
        try:
            context = self._store.load_context(turn.customer_id)
        except CustomerNotFound:
            self.unknown.inc()
            flags = ("customer_unknown",)
        except Exception as e:  # noqa: BLE001 - any store failure degrades to "no context", never loses the turn
            self.unavailable.inc()
            log.warning("context unavailable for turn %s: %s", turn.turn_id, type(e).__name__)
            flags = ("context_unavailable",)
        ms = (time.perf_counter() - start) * 1000
        self.latency.update(int(ms))
        yield EnrichedTurn(turn=turn, context=context, context_flags=flags, enrich_ms=ms)
