"""Eval rows to BigQuery through the official client's streaming inserts.

Why not ``WriteToBigQuery``: its streaming-insert path builds its own API
client with no endpoint override, so it cannot reach the local BigQuery
emulator, and its Storage Write path needs a Java expansion service that
cannot be downloaded here. ``insert_rows_json`` is the same tabledata.insertAll
API in production, batched per bundle, retried, with per-row insert ids so a
retried batch does not double rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from tenacity import retry, stop_after_attempt, wait_exponential_jitter

from contract.messages import DeadLetter

log = logging.getLogger(__name__)

BATCH_ROWS = 200


class WriteRowsToBigQuery(beam.DoFn):
    """Buffers (row_id, row) pairs per bundle and inserts them; rows BigQuery refuses become dead letters."""

    def __init__(self, project: str, dataset: str, table: str, endpoint: str | None) -> None:
        self._project, self._dataset, self._table, self._endpoint = project, dataset, table, endpoint
        self.written = Metrics.counter("bigquery", f"{table}_rows")
        self.failed = Metrics.counter("bigquery", f"{table}_failed")

    def setup(self) -> None:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        if self._endpoint:
            self._client = bigquery.Client(
                project=self._project,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=self._endpoint),
            )
        else:
            self._client = bigquery.Client(project=self._project)
        self._table_ref = f"{self._project}.{self._dataset}.{self._table}"

    def start_bundle(self) -> None:
        self._buffer: list[tuple[str, dict[str, Any]]] = []

    def process(self, keyed_row: tuple[str, dict[str, Any]]) -> Iterator[DeadLetter]:
        self._buffer.append(keyed_row)
        if len(self._buffer) >= BATCH_ROWS:
            yield from self._flush()

    def finish_bundle(self) -> Iterator:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for dl in self._flush():
            yield WindowedValue(dl, 0, [GlobalWindow()])

    @retry(wait=wait_exponential_jitter(initial=0.1, max=5), stop=stop_after_attempt(5), reraise=True)
    def _insert(self, rows: list[dict[str, Any]], ids: list[str]) -> list[dict]:
        return self._client.insert_rows_json(self._table_ref, rows, row_ids=ids)

    def _flush(self) -> Iterator[DeadLetter]:
        if not self._buffer:
            return
        ids = [k for k, _ in self._buffer]
        rows = [r for _, r in self._buffer]
        self._buffer = []
        try:
            errors = self._insert(rows, ids)
        except Exception as e:  # noqa: BLE001 - the rows go to the dead-letter topic instead of being lost
            errors = [{"index": i, "errors": [{"message": f"{type(e).__name__}: {e}"}]} for i in range(len(rows))]
        bad = {err["index"]: err for err in errors}
        self.written.inc(len(rows) - len(bad))
        for index, err in bad.items():
            self.failed.inc()
            yield DeadLetter(
                stage=f"Write{self._table}",
                reason=f"BigQuery refused row: {err.get('errors')}"[:1000],
                payload=json.dumps(rows[index], default=str),
                session_id=rows[index].get("session_id"),
            )
