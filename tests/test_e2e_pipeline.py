"""End to end: the real streaming pipeline (BundleBasedDirectRunner, in its own
process) against the real emulators, with the real local model.

50 concurrent customers each hold a short conversation in bursts, with
shuffled publish order and re-published message ids; malformed payloads are
mixed in. Asserts: every accepted message is answered exactly once, in a turn
that contains it, turns in order per session; one eval row per turn in
BigQuery; every malformed payload dead-lettered with its reason; idle sessions
closed into the sessions table. Latency figures are written to
``artifacts/e2e_latency_<backend>.json`` (docs/performance.md quotes them).
"""

from __future__ import annotations

import json
import os
import queue
import random
import statistics
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from agents.backends import registry
from contract.eval_rows import SESSIONS_TABLE, TURNS_TABLE
from contract.messages import MAX_TEXT_CHARS, AgentReply, InboundMessage
from pipeline.options import DEAD_LETTER_TOPIC, EVAL_DATASET, INBOUND_TOPIC
from stack.chat import ReplyListener
from stack.clients import bigquery_client
from stack.emulators import LocalStack
from stack.resources import create_subscription
from stack.service import PipelineProcess, pipeline_command

pytestmark = pytest.mark.e2e

IDLE_TIMEOUT_S = 15
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
QUESTIONS = [
    "hi",
    "where is my order?",
    "it was supposed to arrive yesterday",
    "can I return the shoes?",
    "what is your refund policy",
    "I need to change my delivery address",
    "thanks",
    "my package says delivered but I don't have it",
    "how do I reset my password",
    "is there a warranty on this?",
]


class DeadLetters:
    def __init__(self, project: str) -> None:
        self.items: list[tuple[dict, dict]] = []
        name = create_subscription(project, f"dl-test-{uuid.uuid4().hex[:6]}", DEAD_LETTER_TOPIC)
        self._sub = pubsub_v1.SubscriberClient()
        self._future = self._sub.subscribe(name, self._on)

    def _on(self, m: pubsub_v1.subscriber.message.Message) -> None:
        self.items.append((json.loads(m.data), dict(m.attributes)))
        m.ack()

    def close(self) -> None:
        self._future.cancel()


def bad_payloads() -> dict[str, tuple[bytes, str]]:
    base = {
        "session_id": "bad",
        "customer_id": "C0001",
        "message_id": "x",
        "text": "hi",
        "sent_at": "2026-11-25T11:00:00Z",
    }

    def j(**kw: object) -> bytes:
        return json.dumps({k: v for k, v in {**base, **kw}.items() if v is not None}).encode()

    return {
        "bad_json": (b'{"session_id": "s", ', "not JSON"),
        "missing_field": (j(customer_id=None), "customer_id"),
        "oversized_text": (j(text="x" * (MAX_TEXT_CHARS + 10)), "text"),
        "wrong_type": (j(sent_at=[2026]), "sent_at"),
        "binary": (bytes(range(256)), "UTF-8"),
        "unknown_version": (j(schema_version=7), "schema_version"),
        "empty": (b"", "empty"),
        "not_an_object": (b'"hello"', "JSON object"),
    }


BACKEND_ARGS = {"gemma": ["--model_path=random:tiny", "--model_device=cpu", "--model_batch_size=4"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    ("backend", "sessions", "min_messages"),
    [
        # The pipeline's own behaviour at scale: 50 concurrent customers, >= 200 messages.
        ("instant", 50, 200),
        # The real local model through the same path, at a size a 2-core CI box answers in minutes.
        ("smollm2", 12, 30),
        # The GPU backend's code (transformers, batched generate) on the CPU: a random two-layer Gemma 3.
        ("gemma", 6, 12),
    ],
)
def test_conversations_end_to_end(seeded_stack: LocalStack, backend: str, sessions: int, min_messages: int) -> None:
    outcomes = {"reply", "handoff"} if registry.get(backend).calls_tools else {"reply"}
    stack = seeded_stack
    project = stack.project
    replies = ReplyListener(project)
    dead = DeadLetters(project)
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, INBOUND_TOPIC)
    extra = [
        "--model_max_tokens=24",
        "--model_threads=1",
        "--quiet_window_s=1.0",
        "--max_hold_s=3.0",
        f"--idle_timeout_s={IDLE_TIMEOUT_S}",
        *BACKEND_ARGS.get(backend, []),
    ]
    log = stack.log_dir / f"pipeline-e2e-{backend}.log"
    pipeline = PipelineProcess(pipeline_command(stack.bigquery_endpoint, backend, extra), stack.env, log).start()
    sent_at_wall: dict[str, float] = {}
    received_at: dict[str, float] = {}
    by_session: dict[str, list[AgentReply]] = defaultdict(list)

    def publish(msg: InboundMessage) -> None:
        publisher.publish(topic, msg.to_bytes(), session_id=msg.session_id).result(timeout=120)

    answered: set[str] = set()
    arrived = threading.Condition()
    stop_collecting = threading.Event()

    def collect() -> None:
        """One thread moves replies off the listener; conversations wait on the condition."""
        while not stop_collecting.is_set():
            try:
                r = replies.replies.get(timeout=0.2)
            except queue.Empty:
                continue
            with arrived:
                by_session[r.session_id].append(r)
                received_at[r.turn_id] = time.time()
                answered.update(r.answers)
                arrived.notify_all()

    def wait_answered(want: set[str], timeout_s: float) -> None:
        with arrived:
            arrived.wait_for(lambda: want <= answered, timeout=timeout_s)

    threading.Thread(target=collect, daemon=True).start()

    try:
        # Warm-up: the model loads on the first bundle; latency figures below exclude it.
        warm = InboundMessage(
            session_id="warmup", customer_id="C0001", message_id="w1", text="hello", sent_at=datetime.now(UTC)
        )
        publish(warm)
        wait_answered({"w1"}, 240)
        assert by_session["warmup"], "no reply to the warm-up message:\n" + pipeline.log_tail()

        rng = random.Random(7)
        accepted: dict[str, list[str]] = {}  # session -> unique message ids in sent order
        unknown_sessions: set[str] = set()
        duplicates_sent = 0

        def converse(i: int) -> None:
            nonlocal duplicates_sent
            session = f"e2e-{i:02d}-{uuid.uuid4().hex[:4]}"
            customer = f"C{i + 1:04d}" if i % 10 else "C9999"  # every 10th customer is unknown
            ids: list[str] = []
            if customer == "C9999":
                unknown_sessions.add(session)
            t = datetime.now(UTC)
            for turn in range(rng.choice([2, 3])):
                burst = []
                for k in range(rng.choice([1, 2, 3])):
                    t += timedelta(milliseconds=200)
                    mid = f"{session}-t{turn}-m{k}"
                    burst.append(
                        InboundMessage(
                            session_id=session,
                            customer_id=customer,
                            message_id=mid,
                            text=rng.choice(QUESTIONS),
                            sent_at=t,
                        )
                    )
                ids += [m.message_id for m in burst]
                shuffled = burst[:]
                rng.shuffle(shuffled)
                if rng.random() < 0.5:
                    shuffled.append(rng.choice(burst))  # a re-published id: at-least-once delivery
                    with arrived:
                        duplicates_sent += 1
                for m in shuffled:
                    sent_at_wall.setdefault(m.message_id, time.time())
                    publish(m)
                with arrived:
                    accepted[session] = list(ids)
                wait_answered(set(ids), 300)

        threads = [threading.Thread(target=converse, args=(i,)) for i in range(sessions)]
        t_load = time.monotonic()
        for th in threads:
            th.start()
        # Malformed payloads go in mid-load.
        probes = bad_payloads()
        for name, (data, _) in probes.items():
            publisher.publish(topic, data, probe=name).result(timeout=120)
        for th in threads:
            th.join(timeout=600)
        load_s = time.monotonic() - t_load
        # --- exactly once, in a turn that contains it, in order -----------------------------------------
        all_ids = [m for ids in accepted.values() for m in ids]
        assert len(accepted) == sessions and len(all_ids) >= min_messages, (len(accepted), len(all_ids))
        with arrived:
            turns = [r for s in accepted for r in by_session[s]]
        answered = [m for r in turns for m in r.answers]
        assert sorted(answered) == sorted(all_ids), "a message was answered twice or not at all"
        for session, ids in accepted.items():
            rs = by_session[session]
            assert [r.turn_index for r in rs] == list(range(len(rs))), f"{session}: turns out of order"
            assert sorted(m for r in rs for m in r.answers) == sorted(ids), f"{session}: {[r.answers for r in rs]}"
            for r in rs:  # within a turn, messages in sent order (ids encode it: turn, then position)
                assert r.answers == sorted(r.answers, key=ids.index), f"{session}: turn {r.turn_index} {r.answers}"
            # An agent that acts may hand a turn to a person (a ticket-worthy complaint); never an error.
            assert all(r.kind in outcomes and r.text.strip() for r in rs), f"{session}: {rs}"

        # --- dead letters ------------------------------------------------------------------------------
        deadline = time.monotonic() + 60

        def probes_seen() -> dict[str, dict]:  # the original message's attributes travel inside the dead letter
            return {b["attributes"]["probe"]: b for b, _ in dead.items if "probe" in b.get("attributes", {})}

        while time.monotonic() < deadline and len(probes_seen()) < len(probes):
            time.sleep(0.5)
        got = probes_seen()
        for name, (_, reason) in probes.items():
            assert name in got, f"malformed payload {name!r} not dead-lettered; got {sorted(got)}"
            assert reason in got[name]["reason"] and got[name]["stage"] == "ParseInbound", got[name]
            assert dict(dead.items[0][1]).get("reason"), "dead letters carry their reason as an attribute too"

        # --- eval rows in BigQuery ---------------------------------------------------------------------
        bq = bigquery_client(project, stack.bigquery_endpoint)
        turn_ids = sorted(r.turn_id for r in turns)
        sql = f"SELECT turn_id, kind, model, customer_hash, flags FROM `{project}.{EVAL_DATASET}.{TURNS_TABLE}`"
        deadline = time.monotonic() + 60
        rows: dict[str, dict] = {}
        while time.monotonic() < deadline:
            rows = {r["turn_id"]: dict(r) for r in bq.query(sql).result() if r["turn_id"] in set(turn_ids)}
            if len(rows) >= len(turn_ids):
                break
            time.sleep(1)
        assert sorted(rows) == turn_ids, f"{len(rows)} eval rows for {len(turn_ids)} turns"
        unknown = {r.turn_id for s in unknown_sessions for r in by_session[s]}
        assert unknown and all("customer_unknown" in rows[t]["flags"] for t in unknown)
        assert all("customer_unknown" not in row["flags"] for t, row in rows.items() if t not in unknown)
        assert all(not row["customer_hash"].startswith("C") for row in rows.values()), "raw customer id in eval row"

        # --- idle sessions close -----------------------------------------------------------------------
        sql = f"SELECT session_id, turns, outcome FROM `{project}.{EVAL_DATASET}.{SESSIONS_TABLE}`"
        deadline = time.monotonic() + IDLE_TIMEOUT_S + 60
        closed: dict[str, dict] = {}
        while time.monotonic() < deadline:
            closed = {r["session_id"]: dict(r) for r in bq.query(sql).result() if r["session_id"] in accepted}
            if len(closed) == len(accepted):
                break
            time.sleep(2)
        assert set(closed) == set(accepted), f"{len(closed)}/{len(accepted)} sessions closed"
        assert all(closed[s]["turns"] == len(by_session[s]) for s in accepted)

        # --- figures -----------------------------------------------------------------------------------
        burst_turns: dict[str, set[int]] = defaultdict(set)  # "<session>-t<k>" -> turns its messages landed in
        for r in turns:
            for m in r.answers:
                burst_turns[m.rsplit("-m", 1)[0]].add(r.turn_index)
        split_bursts = sum(1 for t in burst_turns.values() if len(t) > 1)
        latency = [(received_at[r.turn_id] - max(sent_at_wall[m] for m in r.answers)) * 1000 for r in turns]
        model_ms = [r.timings.model_ms for r in turns]
        figures = {
            "machine": f"{os.cpu_count()}-core VM, BundleBasedDirectRunner, emulators on the same machine",
            "model": backend if backend == "instant" else "SmolLM2-135M Q4_1 via xllamacpp, 1 thread, 24 max tokens",
            "sessions": len(accepted),
            "messages": len(all_ids),
            "duplicates_published": duplicates_sent,
            "turns": len(turns),
            "bursts": len(burst_turns),
            "bursts_split_across_turns": split_bursts,
            "load_seconds": round(load_s, 1),
            "turns_per_second": round(len(turns) / load_s, 2),
            "messages_per_second": round(len(all_ids) / load_s, 2),
            "last_message_to_reply_ms": {
                "p50": round(percentile(latency, 50)),
                "p99": round(percentile(latency, 99)),
                "max": round(max(latency)),
            },
            "model_ms": {
                "p50": round(percentile(model_ms, 50)),
                "p99": round(percentile(model_ms, 99)),
                "mean": round(statistics.mean(model_ms)),
            },
            "note": "latency includes the 1.0 s quiet window the session stage waits before releasing a turn",
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"e2e_latency_{backend}.json").write_text(json.dumps(figures, indent=2))
        print(json.dumps(figures, indent=2))
    finally:
        stop_collecting.set()
        replies.close()
        dead.close()
        pipeline.stop()
