"""``EnrichCustomerContext``: turns in, enriched turns out, through Beam's ``Enrichment`` transform.

    Turn ─ ToRequestRow ─ Enrichment(handler) ─ ToEnrichedTurn ─ EnrichedTurn
           beam.Row(customer_id, turn, requested_at)     join: request row + response row

``Enrichment`` works on ``beam.Row``: the request row carries the turn itself (rows between these steps
use Beam's pickling fallback coder, no schema is needed) and the handler's response row the context
and flags (``pipeline.enrichment.lookup``). ``enrich_ms`` is the wall time from entering the step to the
join, so it includes the wait for a batch.

The handler bounds its own time and never raises for a store failure, so ``Enrichment``'s repeater
is switched off (the handler retries with tenacity) and so is its adaptive throttler (it only reacts
to failed calls, and there are none).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.io.requestresponse import NoOpsRepeater, PreCallThrottler
from apache_beam.metrics import Metrics
from apache_beam.transforms.enrichment import Enrichment

from contract.context_layout import FLAGS
from contract.turn import EnrichedTurn, Turn
from pipeline.enrichment.bigtable import BigtableContextHandler
from pipeline.enrichment.firestore import FirestoreContextHandler
from tools.packs import load_pack

if TYPE_CHECKING:
    from pipeline.settings import Settings

ContextHandler = FirestoreContextHandler | BigtableContextHandler


class _NoThrottle(PreCallThrottler):
    """Any throttler but ``DefaultThrottler`` makes ``RequestResponseIO`` skip client-side throttling."""


def request_row(turn: Turn) -> Any:  # a beam.Row; typed Any so that Beam infers no schema for it
    return beam.Row(customer_id=turn.customer_id, turn=turn, requested_at=time.time())


def join_context(request: dict[str, Any], response: dict[str, Any]) -> beam.Row:
    """Enrichment's join: the turn from the request row, the context from the response row."""
    return beam.Row(
        turn=request["turn"],
        context=response["context"],
        context_flags=tuple(response["context_flags"]),
        enrich_ms=(time.time() - request["requested_at"]) * 1000,
        cache_hit=response["cache_hit"],
        batch_size=response["batch_size"],
        store_rpcs=response["store_rpcs"],
    )


class ToEnrichedTurn(beam.DoFn):
    """Joined row -> ``EnrichedTurn``, counting what happened (namespace ``enrich``)."""

    def __init__(self) -> None:
        self.flags = {flag: Metrics.counter("enrich", flag) for flag in FLAGS}
        self.turns = Metrics.counter("enrich", "turns")
        self.cache_hits = Metrics.counter("enrich", "cache_hits")
        self.store_calls = Metrics.counter("enrich", "store_calls")
        self.store_rpcs = Metrics.counter("enrich", "store_rpcs")
        self.batch_size = Metrics.distribution("enrich", "batch_size")
        self.latency = Metrics.distribution("enrich", "latency_ms")

    def process(self, row: Any) -> Iterator[EnrichedTurn]:
        self.turns.inc()
        for flag in row.context_flags:
            if flag in self.flags:
                self.flags[flag].inc()
        if row.cache_hit:
            self.cache_hits.inc()
        if row.batch_size:  # set on the first response of each handler call only
            self.store_calls.inc()
            self.batch_size.update(row.batch_size)
            self.store_rpcs.inc(row.store_rpcs)
        self.latency.update(int(row.enrich_ms))
        yield EnrichedTurn(turn=row.turn, context=row.context, context_flags=row.context_flags, enrich_ms=row.enrich_ms)


class EnrichCustomerContext(beam.PTransform):
    """PCollection[Turn] -> PCollection[EnrichedTurn]; one output per input, whatever the store does."""

    def __init__(self, handler: ContextHandler) -> None:
        super().__init__()
        self.handler = handler

    @classmethod
    def from_settings(cls, settings: Settings) -> EnrichCustomerContext:
        return cls(context_handler(settings))

    def expand(self, turns: beam.PCollection) -> beam.PCollection:
        return (
            turns
            | "ToRequestRow" >> beam.Map(request_row)
            | "Enrichment"
            >> Enrichment(
                self.handler,
                join_fn=join_context,
                # A backstop only: the handler bounds itself well within this.
                timeout=self.handler.max_call_s + 5.0,
                repeater=NoOpsRepeater(),
                throttler=_NoThrottle(),
            )
            | "ToEnrichedTurn" >> beam.ParDo(ToEnrichedTurn())
        )


def context_handler(settings: Settings) -> ContextHandler:
    """The handler ``--context_store`` names, configured from the run's settings (``--pack``: what a context holds)."""
    collections = load_pack(settings.pack).context
    if settings.context_store == "bigtable":
        return BigtableContextHandler(
            settings.project, settings.bigtable_instance, settings.bigtable_table, collections=collections
        )
    return FirestoreContextHandler(settings.project, collections=collections)
