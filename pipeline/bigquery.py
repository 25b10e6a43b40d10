"""Eval rows to BigQuery through the official client's streaming inserts.

Why not ``WriteToBigQuery``: its streaming-insert path builds its own API
client with no endpoint override, so it cannot reach the local BigQuery
emulator, and its Storage Write path needs a Java expansion service that
cannot be downloaded here. ``insert_rows_json`` is the same tabledata.insertAll
API in production, batched per bundle, retried, with per-row insert ids so a
retried batch does not double rows.

In a local run the insert goes to the local runner's output thread (``pipeline.local_output``) instead of
holding up the runner's one thread; the rows it refuses are then published from there to the dead-letter
topic, as the same ``DeadLetter`` the graph's flatten would have carried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from contract.messages import DeadLetter
from pipeline import local_output
from pipeline.parse import to_pubsub_dead_letter

log = logging.getLogger(__name__)

BATCH_ROWS = 200
# How long one insert is retried (the client's own retry: 5xx, rate limits, dropped connections) before its rows
# become dead letters. The client's default is 600 s: a bundle, or in a local run every reply queued behind the
# insert, would wait that long for a batch that is never taken.
INSERT_RETRY_S = 60.0


class WriteRowsToBigQuery(beam.DoFn):
    """Buffers (row_id, row) pairs per bundle and inserts them; rows BigQuery refuses become dead letters.

    ``dead_letter_topic``: where a local run's output thread publishes the dead letters of the rows refused
    there (without it, or without that thread, the insert is waited for and its dead letters are output).
    """

    def __init__(
        self, project: str, dataset: str, table: str, endpoint: str | None, dead_letter_topic: str | None = None
    ) -> None:
        self._project, self._dataset, self._table, self._endpoint = project, dataset, table, endpoint
        self._dead_letter_topic = dead_letter_topic
        self._publisher: Any = None
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

    def _insert(self, rows: list[dict[str, Any]], ids: list[str]) -> list[dict]:
        from google.cloud.bigquery import DEFAULT_RETRY

        retry = DEFAULT_RETRY.with_deadline(INSERT_RETRY_S)
        return self._client.insert_rows_json(self._table_ref, rows, row_ids=ids, retry=retry)

    def _flush(self) -> Iterator[DeadLetter]:
        if not self._buffer:
            return
        output = local_output.active() if self._dead_letter_topic else None
        if output is not None:
            output.add_rows((self._table_ref, self._dead_letter_topic), self._insert_and_publish_refused, self._buffer)
            self._buffer = []
            return
        ids = [k for k, _ in self._buffer]
        rows = [r for _, r in self._buffer]
        self._buffer = []
        yield from self._insert_or_refuse(rows, ids)

    def _insert_or_refuse(self, rows: list[dict[str, Any]], ids: list[str]) -> list[DeadLetter]:
        """Insert the rows; a dead letter for each row refused (every row, if the insert failed after retries)."""
        try:
            errors = self._insert(rows, ids)
        except Exception as e:  # noqa: BLE001 - the rows go to the dead-letter topic instead of being lost
            errors = [{"index": i, "errors": [{"message": f"{type(e).__name__}: {e}"}]} for i in range(len(rows))]
        bad = {err["index"]: err for err in errors}
        self.written.inc(len(rows) - len(bad))
        self.failed.inc(len(bad))
        return [
            DeadLetter(
                stage=f"Write{self._table}",
                reason=f"BigQuery refused row: {err.get('errors')}"[:1000],
                payload=json.dumps(rows[index], default=str),
                session_id=rows[index].get("session_id"),
            )
            for index, err in bad.items()
        ]

    def _insert_and_publish_refused(self, keyed_rows: list[tuple[str, dict[str, Any]]]) -> None:
        """On the local output thread: insert a round's rows (``BATCH_ROWS`` a request), then publish the refused
        rows' dead letters (waited for: a failure fails the next bundle, and is logged with the rows)."""
        dead: list[DeadLetter] = []
        for start in range(0, len(keyed_rows), BATCH_ROWS):
            chunk = keyed_rows[start : start + BATCH_ROWS]
            dead += self._insert_or_refuse([r for _, r in chunk], [k for k, _ in chunk])
        if not dead:
            return
        if self._publisher is None:
            from google.cloud import pubsub_v1

            self._publisher = pubsub_v1.PublisherClient()
        try:
            for dl in dead:
                message = to_pubsub_dead_letter(dl)
                self._publisher.publish(self._dead_letter_topic, message.data, **message.attributes).result(60)
        except Exception:
            log.exception("publishing %d refused %s row(s) as dead letters failed: %s", len(dead), self._table, dead)
            raise
