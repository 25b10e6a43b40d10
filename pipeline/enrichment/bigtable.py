"""``BigtableContextHandler``: Beam's built-in ``BigTableEnrichmentHandler`` with supportflow's rules.

The built-in handler reads one row per request (``read_row`` by the ``customer_id`` row key) and returns
the cells as ``{family: {column: value}}``. This subclass keeps that read and adds what the hot path needs
and the built-in lacks:

- a deadline: the built-in has no timeout knob, and the Bigtable client's default read budget is
  600 s of internal retries; here each attempt is bounded by ``timeout_s`` (table defaults set in ``__enter__``)
  and tenacity retries transient errors within ``attempts``;
- the failure rule: unknown row -> ``customer_unknown``, store down -> ``context_unavailable`` (the built-in
  raises, which would fail the bundle and retry it forever in streaming), undecodable cells ->
  ``context_malformed``;
- the JSON cells decoded into the same context dict as Firestore's (``pipeline.enrichment.context``);
- the per-worker TTL cache, and optionally batching: a batch of requests is one ``read_rows`` over a
  ``RowSet`` of the batch's keys instead of one ``read_row`` each.

Row layout: ``contract.context_layout`` (a family per collection the pack declares); seeding: ``stack.bigtable``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.transforms.enrichment_handlers.bigtable import BigTableEnrichmentHandler
from apache_beam.transforms.enrichment_handlers.utils import ExceptionLevel
from google.cloud.bigtable.row_set import RowSet
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from contract.context_layout import CONTEXT_MALFORMED, ENCODING, PROFILE_FAMILY, decode_cell
from pipeline.enrichment.context import UNKNOWN, CachePolicy, ContextResult, build_context
from pipeline.enrichment.lookup import ContextLookup, Request, Response, batching_kwargs
from tools.context_collection import ContextCollection
from tools.packs import DEFAULT_PACK, load_pack
from tools.store import TRANSIENT

Cells = Mapping[str, Mapping[str, str]]  # family -> column -> cell text, as the built-in handler returns it


def context_from_cells(customer_id: str, cells: Cells, collections: Sequence[ContextCollection]) -> ContextResult:
    """One Bigtable row (decoded like the built-in handler does) -> the customer context (a family per collection)."""
    if not cells:
        return UNKNOWN
    undecodable = False
    profile: dict[str, Any] = {}
    for column, raw in cells.get(PROFILE_FAMILY, {}).items():
        try:
            profile[column] = decode_cell(raw)
        except ValueError:
            undecodable = True

    def docs(family: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for column, raw in cells.get(family, {}).items():
            try:
                out.append((column, decode_cell(raw)))
            except ValueError:
                out.append((column, None))  # an invalid document: build_context drops and flags it
        return out

    result = build_context(customer_id, profile, {c.name: docs(c.name) for c in collections}, collections)
    if undecodable and CONTEXT_MALFORMED not in result.flags:
        return ContextResult(result.context, (*result.flags, CONTEXT_MALFORMED))
    return result


class BigtableContextHandler(BigTableEnrichmentHandler, ContextLookup):
    def __init__(
        self,
        project: str,
        instance: str,
        table: str,
        *,
        timeout_s: float = 1.0,
        attempts: int = 3,
        max_batch_size: int = 50,
        cache: CachePolicy | None = None,
        collections: Sequence[ContextCollection] | None = None,
    ) -> None:
        super().__init__(project, instance, table, row_key="customer_id", exception_level=ExceptionLevel.QUIET)
        # What each context holds beside the profile: the pack's ``Pack.context`` (None: the default pack's).
        self.collections = tuple(load_pack(DEFAULT_PACK).context if collections is None else collections)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.max_batch_size = max_batch_size
        self.cache_policy = cache or CachePolicy()
        self._rpcs = 0

    @property
    def max_call_s(self) -> float:
        return self.attempts * self.timeout_s + 1.0

    def __enter__(self) -> BigtableContextHandler:
        super().__enter__()
        # The built-in handler's Table offers no timeout; its data-client table does (default: 600 s).
        impl = self._table._table_impl
        impl.default_read_rows_operation_timeout = self.timeout_s
        impl.default_read_rows_attempt_timeout = self.timeout_s
        self._retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=wait_exponential_jitter(initial=0.05, max=0.5),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.attempts * self.timeout_s),
            reraise=True,
        )
        endpoint = os.environ.get("BIGTABLE_EMULATOR_HOST", "bigtable.googleapis.com")
        self.open_cache(f"bigtable|{endpoint}|{self._project_id}|{self._instance_id}|{self._table_id}")
        return self

    def __call__(self, request: Request | list[Request], *args: Any, **kwargs: Any) -> Response | list[Response]:
        return self.answer(request, self._fetch)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return batching_kwargs(self.max_batch_size)

    def _attempt(self, fn: Any) -> Any:
        def once() -> Any:
            self._rpcs += 1
            return fn()

        return self._retrying.copy()(once)

    def _fetch(self, ids: list[str]) -> tuple[dict[str, ContextResult], int]:
        before = self._rpcs
        if len(ids) == 1:
            # One customer: exactly the built-in handler's read.
            _, row = self._attempt(lambda: BigTableEnrichmentHandler.__call__(self, beam.Row(customer_id=ids[0])))
            cells: dict[str, Cells] = {ids[0]: row._asdict()}
        else:
            cells = self._attempt(lambda: self._read_many(ids))
        results = {cid: context_from_cells(cid, cells.get(cid, {}), self.collections) for cid in ids}
        return results, self._rpcs - before

    def _read_many(self, ids: list[str]) -> dict[str, Cells]:
        row_set = RowSet()
        for cid in ids:
            row_set.add_row_key(cid.encode(ENCODING))
        out: dict[str, Cells] = {}
        for row in self._table.read_rows(row_set=row_set, filter_=self._row_filter):
            # The same decoding as BigTableEnrichmentHandler.__call__ (latest cell of each column).
            out[row.row_key.decode(ENCODING)] = {
                family: {
                    column.decode(ENCODING): versions[0].value.decode(ENCODING) for column, versions in cols.items()
                }
                for family, cols in row.cells.items()
            }
        return out
