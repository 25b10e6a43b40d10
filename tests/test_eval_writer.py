"""The eval-row writer against the BigQuery and Pub/Sub emulators: rows in, refused rows out as dead letters, both
where the writer waits for its insert (Dataflow) and where the local runner's output thread makes it (a local run).

bqemulator answers a mistyped value with a 500 for the whole ``insertAll`` (real BigQuery reports the row), so a
refused row is sent in a bundle of its own here, and the insert's retry is cut to a few seconds."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import bigquery

from contract.eval_rows import EVAL_SCHEMA_VERSION, TURNS_TABLE
from contract.messages import DeadLetter
from pipeline import bigquery as eval_writer
from pipeline import local_output
from pipeline.bigquery import WriteRowsToBigQuery
from pipeline.options import EVAL_DATASET
from stack.clients import bigquery_client, publisher_client, subscriber_client
from stack.emulators import LocalStack
from tests.pubsub_pull import pull


def turn_row(session_id: str, index: int, **changes: Any) -> tuple[str, dict[str, Any]]:
    row = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "session_id": session_id,
        "turn_id": f"{session_id}#{index}",
        "turn_index": index,
        "customer_hash": "cd" * 32,
        "answers": [f"m-{index}"],
        "kind": "reply",
        "model": "instant",
        "total_ms": 3.5,
        "flags": [],
        "created_at": "2026-12-08T12:00:00Z",
        **changes,
    }
    return row["turn_id"], row


def stored_turns(stack: LocalStack, session_id: str) -> list[str]:
    bq = bigquery_client(stack.project, stack.bigquery_endpoint)
    job = bq.query(
        f"SELECT turn_id FROM `{stack.project}.{EVAL_DATASET}.{TURNS_TABLE}` WHERE session_id = @s ORDER BY turn_id",
        job_config=bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("s", "STRING", session_id)]),
    )
    return [r["turn_id"] for r in job.result(timeout=30)]


def one_bundle(writer: WriteRowsToBigQuery, rows: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """What the writer outputs for one bundle of ``rows`` (as the runner drives a DoFn)."""
    writer.start_bundle()
    out = [o for r in rows for o in writer.process(r)]
    return out + list(writer.finish_bundle())


@pytest.fixture
def dead_letters(local_stack: LocalStack) -> Iterator[tuple[str, str]]:
    """A dead-letter topic of this test's own and a subscription on it: (topic path, subscription path)."""
    name = f"eval-writer-dl-{uuid.uuid4().hex[:8]}"
    topic, sub = f"projects/{local_stack.project}/topics/{name}", f"projects/{local_stack.project}/subscriptions/{name}"
    with publisher_client() as publisher:
        publisher.create_topic(request={"name": topic})
    with subscriber_client() as subscriber:
        subscriber.create_subscription(request={"name": sub, "topic": topic})
    yield topic, sub


@pytest.fixture(autouse=True)
def short_insert_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eval_writer, "INSERT_RETRY_S", 2.0)


def writer_for(stack: LocalStack, dead_letter_topic: str | None) -> WriteRowsToBigQuery:
    writer = WriteRowsToBigQuery(stack.project, EVAL_DATASET, TURNS_TABLE, stack.bigquery_endpoint, dead_letter_topic)
    writer.setup()
    return writer


def test_a_refused_row_is_output_as_a_dead_letter_and_the_rest_are_stored(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_output, "_ACTIVE", [])  # no local output thread: the writer waits (as on Dataflow)
    session = f"w-{uuid.uuid4().hex[:8]}"
    writer = writer_for(local_stack, "projects/p/topics/unused")
    assert one_bundle(writer, [turn_row(session, 0), turn_row(session, 1)]) == []
    out = one_bundle(writer, [turn_row(session, 2, turn_index="not a number")])
    dead = [o.value for o in out]  # WindowedValues, as finish_bundle must output them
    assert [d.stage for d in dead] == [f"Write{TURNS_TABLE}"] and dead[0].session_id == session
    assert "not a number" in dead[0].payload and dead[0].reason.startswith("BigQuery refused row")
    assert stored_turns(local_stack, session) == [f"{session}#0", f"{session}#1"]


def test_in_a_local_run_the_insert_leaves_the_runners_thread_and_refused_rows_reach_the_dead_letter_topic(
    local_stack: LocalStack, dead_letters: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_output, "_ACTIVE", [])
    output = local_output.install()
    topic, subscription = dead_letters
    writer = writer_for(local_stack, topic)
    inserted_on: list[str] = []
    insert = writer._insert

    def recording_insert(rows: list[dict[str, Any]], ids: list[str]) -> list[dict]:
        inserted_on.append(threading.current_thread().name)
        return insert(rows, ids)

    monkeypatch.setattr(writer, "_insert", recording_insert)
    session = f"w-{uuid.uuid4().hex[:8]}"
    try:
        out = one_bundle(writer, [turn_row(session, 0)])
        output.wait(30)  # a round of its own: the emulator refuses the whole insert of a bad row
        out += one_bundle(writer, [turn_row(session, 1, turn_index="not a number")])
        assert out == []  # nothing for the graph: the output thread publishes the dead letter itself
        output.wait(30)
    finally:
        local_output.close()
    assert inserted_on and all(name.startswith("supportflow-output") for name in inserted_on)
    assert stored_turns(local_stack, session) == [f"{session}#0"]
    dead = [DeadLetter.model_validate_json(m.message.data) for m in pull(subscription, want=1, timeout_s=20)]
    assert [(d.stage, d.session_id) for d in dead] == [(f"Write{TURNS_TABLE}", session)]
    assert "not a number" in dead[0].payload
