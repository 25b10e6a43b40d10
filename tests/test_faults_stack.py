"""Faults that need a stack of their own: Firestore stopped and restarted mid-run, and payloads that
crash the parser (they stop the pipeline: the session's shared stack must never see them).

A dedicated ``LocalStack`` (its own emulators, ports and state dir) and one pipeline (``instant``
backend: the faults here are in the store and the input, not the model) serve the module. Its
environment is applied for the module's duration and restored afterwards, so the session's stack and
every other test are untouched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.cloud import bigquery, pubsub_v1

from bench.harness import TopicRecorder, check_delivery, check_rejected, dead_letters_of, replies_of
from contract.eval_rows import TURNS_TABLE
from contract.messages import InboundMessage
from packs.shop.seed import seed_firestore
from pipeline.options import DEAD_LETTER_TOPIC, EVAL_DATASET, INBOUND_TOPIC, REPLY_TOPIC
from stack.clients import bigquery_client, firestore_client
from stack.emulators import FIRESTORE, Emulator, LocalStack
from stack.resources import ensure_resources
from stack.service import PipelineProcess, pipeline_command

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:6]
CUSTOMERS = 40
UNAVAILABLE = "context_unavailable"


@dataclass
class Isolated:
    stack: LocalStack
    pipeline: PipelineProcess
    replies: TopicRecorder
    dead: TopicRecorder
    publisher: pubsub_v1.PublisherClient
    topic: str
    accepted: dict[str, str] = field(default_factory=dict)

    def say(self, session: str, customer: str, text: str = "where is my order?") -> str:
        mid = f"{session}-{uuid.uuid4().hex[:6]}"
        msg = InboundMessage(session_id=session, customer_id=customer, message_id=mid, text=text,
                             sent_at=datetime.now(UTC))  # fmt: skip
        self.publisher.publish(self.topic, msg.to_bytes()).result(timeout=60)
        self.accepted[mid] = session
        return mid

    def answered(self) -> set[str]:
        return {m for r, _ in replies_of(self.replies.items) for m in r.answers}

    def wait_answered(self, mids: set[str], timeout_s: float = 90) -> None:
        if not self.replies.wait_for(lambda _: mids <= self.answered(), timeout_s):
            raise AssertionError(f"not answered: {sorted(mids - self.answered())}\n{self.pipeline.log_tail(30)}")

    def eval_rows(self, prefix: str, want: int, timeout_s: float = 60) -> dict[str, dict]:
        """Eval rows (session id -> row) of the sessions starting with ``prefix``, once ``want`` are there."""
        bq = bigquery_client(self.stack.project, self.stack.bigquery_endpoint)
        sql = (
            f"SELECT session_id, flags, enrich_ms FROM `{self.stack.project}.{EVAL_DATASET}.{TURNS_TABLE}` "
            "WHERE STARTS_WITH(session_id, @prefix)"
        )
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("prefix", "STRING", prefix)])
        deadline = time.monotonic() + timeout_s
        while True:
            rows = list(bq.query(sql, job_config=config).result())
            if len(rows) >= want or time.monotonic() > deadline:
                return {r["session_id"]: dict(r) for r in rows}
            time.sleep(0.5)


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory, bq_venv: Path) -> Iterator[Isolated]:
    stack = LocalStack(state_dir=tmp_path_factory.mktemp("faultstack"), bq_venv=bq_venv).start()
    pipeline = None
    recorders: list[TopicRecorder] = []
    try:
        env = stack.apply_env()  # restored by stack.stop()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        seed_firestore(firestore_client(stack.project), CUSTOMERS)
        recorders = [
            TopicRecorder(stack.project, REPLY_TOPIC, ordering=True, prefix="iso"),
            TopicRecorder(stack.project, DEAD_LETTER_TOPIC, prefix="iso"),
        ]
        extra = ["--quiet_window_s=0.3", "--max_hold_s=1.5", "--model_max_tokens=24"]
        command = pipeline_command(stack.bigquery_endpoint, "instant", extra)
        pipeline = PipelineProcess(command, env, stack.log_dir / "pipeline-faults-stack.log").start()
        publisher = pubsub_v1.PublisherClient()
        iso = Isolated(stack, pipeline, *recorders, publisher, publisher.topic_path(stack.project, INBOUND_TOPIC))
        iso.wait_answered({iso.say(f"warm-{RUN}", "C0001", "hello")}, timeout_s=240)
        yield iso
    finally:
        if pipeline is not None:
            pipeline.stop()
        for r in recorders:
            r.close()
        stack.stop()


def relaunch(emulator: Emulator, timeout_s: float = 120) -> float:
    """Start a stopped emulator again on the same port. ``Emulator`` has no restart: ``stop()`` leaves
    ``proc`` set, so ``launch()`` would refuse; clear what ``stop()`` leaves behind first."""
    emulator.proc = None
    emulator._terminated = False  # noqa: SLF001 - see the docstring
    emulator.launch()
    return emulator.wait_ready(timeout_s)


def test_firestore_stopped_and_restarted_mid_run(isolated: Isolated) -> None:
    iso = isolated
    prefix = f"fs-{RUN}"
    # Before: context is read (customers C0001-C0010).
    before = {iso.say(f"{prefix}-a{i}", f"C{i:04d}") for i in range(1, 6)}
    spanning = f"{prefix}-span"  # one conversation across the outage, customer C0030
    before.add(iso.say(spanning, "C0030"))
    iso.wait_answered(before)

    firestore = iso.stack.emulators[FIRESTORE]
    firestore.stop()
    t_down = time.monotonic()
    # During: customers never read before (no cache entry), so every read meets the dead store.
    during = {iso.say(f"{prefix}-b{i}", f"C{i:04d}") for i in range(11, 16)}
    during.add(iso.say(spanning, "C0030", "and where is my refund?"))
    iso.wait_answered(during, timeout_s=60)
    down_answered_s = time.monotonic() - t_down

    ready_s = relaunch(firestore)
    seed_firestore(firestore_client(iso.stack.project), CUSTOMERS)  # the emulator keeps nothing across restarts
    t_up = time.monotonic()
    # After: new sessions, one every second, until a turn gets its context again.
    after: set[str] = set()
    recovered_s = None
    for i in range(16, 16 + 20):
        session = f"{prefix}-c{i}"
        mid = iso.say(session, f"C{i:04d}")
        after.add(mid)
        iso.wait_answered({mid}, timeout_s=60)
        row = iso.eval_rows(session, 1).get(session)
        if row is not None and not {UNAVAILABLE, "customer_unknown"} & set(row["flags"]):
            recovered_s = time.monotonic() - t_up
            break
        time.sleep(1.0)
    after.add(iso.say(spanning, "C0030", "thanks, bye"))
    iso.wait_answered(after)

    sessions = set(iso.accepted[m] for m in before | during | after)
    accepted = {m: s for m, s in iso.accepted.items() if s in sessions}
    replies = [r for r, _ in replies_of(iso.replies.items) if r.session_id in sessions]
    verdict = check_delivery(accepted, replies, dead_letters_of(iso.dead.items), sessions=sessions)
    assert verdict.ok, verdict.explain()
    assert all(r.kind == "reply" for r in replies), "a store outage must not fail turns"

    rows = iso.eval_rows(prefix, len({r.turn_id for r in replies}))
    for i in range(1, 6):
        assert UNAVAILABLE not in rows[f"{prefix}-a{i}"]["flags"], rows[f"{prefix}-a{i}"]
    for i in range(11, 16):
        row = rows[f"{prefix}-b{i}"]
        assert UNAVAILABLE in row["flags"], row
        assert row["enrich_ms"] < 10_000, f"enrichment not bounded while the store was down: {row}"
    assert recovered_s is not None, "no turn got its context back after the restart: " + str(
        {s: r["flags"] for s, r in rows.items() if "-c" in s}
    )
    print(
        f"\nfirestore outage: {len(during)} turns answered {down_answered_s:.1f} s into it; emulator back in "
        f"{ready_s:.1f} s; context again {recovered_s:.1f} s after the reseed"
    )


def poison_payloads() -> dict[str, tuple[bytes, str]]:
    """Payloads under the size limit that make ``json.loads`` raise something other than JSONDecodeError."""
    return {
        "deeply_nested": (b"[" * 15000, "JSON"),
        "huge_integer": (b'{"schema_version": 1' + b"0" * 5000 + b"}", "JSON"),
    }


def test_payloads_that_crash_the_parser_are_dead_lettered(isolated: Isolated) -> None:
    """Payloads that once crashed the parser (deep nesting, huge integers) end as dead letters; the pipeline lives."""
    iso = isolated
    probes = poison_payloads()
    for name, (data, _) in probes.items():
        iso.publisher.publish(iso.topic, data, probe=f"{RUN}-{name}").result(timeout=60)
    after = iso.say(f"poison-{RUN}", "C0002", "still there?")
    want = {f"{RUN}-{name}": word for name, (_, word) in probes.items()}

    def probes_seen() -> bool:
        return set(want) <= {(d.get("attributes") or {}).get("probe") for d in dead_letters_of(iso.dead.items)}

    seen = iso.dead.wait_for(lambda _: probes_seen() or not iso.pipeline.alive(), 30) and probes_seen()
    assert iso.pipeline.alive(), "the pipeline died:\n" + iso.pipeline.log_tail(12)
    assert seen, "poison payloads not dead-lettered"
    problems = check_rejected(want, dead_letters_of(iso.dead.items))
    assert not problems, problems
    iso.wait_answered({after}, timeout_s=30)
