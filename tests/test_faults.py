"""Fault injection against the real streaming pipeline: nothing lost, nothing done twice.

One pipeline (Gemini backend, BundleBasedDirectRunner, its own process) runs for the whole module on
the session's emulators; the Gemini API is ``tests/gemini_server.py`` in this process, scripted per
test through markers in the customers' messages. Every test asserts the invariant of issue 10 on its
own sessions (``bench.harness.check_delivery``): every accepted message is answered exactly once
(reply, hand-off or error), an error is also dead-lettered with its reason, every rejected payload is
dead-lettered with its reason; and no tool action is applied twice (Firestore audit).

Faults here: the model returning 429/503 for a while, timing out, returning malformed bodies (briefly
and for good); the same messages redelivered (re-published ids, late duplicates, a nack storm on the
pipeline's own subscription); malformed, empty, huge, binary and oddly encoded payloads; a refund the
model asks for twice and a redelivered refund request. Firestore stopped mid-run and payloads that
crash the parser are in ``test_faults_stack.py`` (a dedicated stack).

The pipeline is ``python -m pipeline.main`` as ``stack/service.py`` runs it, with the Gemini retry
options (``--gemini_deadline_s`` etc.) lowered from production's 60 s per request to test scale.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from google.cloud import pubsub_v1

from bench.harness import (
    TopicRecorder,
    Verdict,
    check_delivery,
    check_rejected,
    dead_letters_of,
    replies_of,
)
from contract.eval_rows import TURNS_TABLE
from contract.messages import MAX_PAYLOAD_BYTES, MAX_TEXT_CHARS, AgentReply, InboundMessage
from pipeline.options import DEAD_LETTER_TOPIC, EVAL_DATASET, INBOUND_SUBSCRIPTION, INBOUND_TOPIC, REPLY_TOPIC
from stack.clients import bigquery_client, firestore_client
from stack.emulators import LocalStack
from stack.service import PipelineProcess, pipeline_command
from tests.gemini_server import GeminiServer, RecordedRequest, Reply, echo

pytestmark = [
    pytest.mark.e2e,
    # The nack storm pulls as the pipeline's local runner does (return_immediately, deprecated but honoured).
    pytest.mark.filterwarnings("ignore:The return_immediately flag:DeprecationWarning"),
]

RUN = uuid.uuid4().hex[:6]
# Short enough for a test, long enough for the emulator on a busy 2-core machine.
RETRY_POLICY = {"max_attempts": 6, "deadline_s": 9.0, "attempt_timeout_s": 2.5, "backoff_s": 0.1, "max_backoff_s": 0.5}
RETRY_ARGS = [f"--gemini_{name}={value}" for name, value in RETRY_POLICY.items()]
TURN_TIMEOUT_S = 90.0


@dataclass
class Rig:
    """The running pipeline plus what a test needs to talk to it and judge it."""

    stack: LocalStack
    server: GeminiServer
    pipeline: PipelineProcess
    replies: TopicRecorder
    dead: TopicRecorder
    publisher: pubsub_v1.PublisherClient
    topic: str
    accepted: dict[str, str] = field(default_factory=dict)  # message id -> session
    payloads: dict[str, bytes] = field(default_factory=dict)  # message id -> the bytes first published

    @property
    def project(self) -> str:
        return self.stack.project

    def say(self, session: str, text: str, *, customer: str = "C0007", mid: str | None = None) -> str:
        mid = mid or f"{session}-{uuid.uuid4().hex[:6]}"
        msg = InboundMessage(session_id=session, customer_id=customer, message_id=mid, text=text,
                             sent_at=datetime.now(UTC))  # fmt: skip
        self.publish(msg.to_bytes(), session_id=session)
        self.accepted[mid] = session
        self.payloads[mid] = msg.to_bytes()
        return mid

    def republish(self, mid: str) -> None:
        self.publish(self.payloads[mid], session_id=self.accepted[mid])

    def publish(self, data: bytes, **attributes: str) -> None:
        self.publisher.publish(self.topic, data, **attributes).result(timeout=60)

    def replies_for(self, sessions: set[str]) -> list[AgentReply]:
        return [r for r, _ in replies_of(self.replies.items) if r.session_id in sessions]

    def wait_answered(self, mids: set[str], timeout_s: float = TURN_TIMEOUT_S) -> None:
        def done(_: object) -> bool:
            answered = {m for r, _ in replies_of(self.replies.items) for m in r.answers}
            return mids <= answered

        if not self.replies.wait_for(done, timeout_s):
            answered = {m for r, _ in replies_of(self.replies.items) for m in r.answers}
            raise AssertionError(
                f"not answered within {timeout_s:.0f} s: {sorted(mids - answered)}\n{self.pipeline.log_tail(30)}"
            )

    def verdict(self, sessions: set[str], settle_s: float = 1.0) -> Verdict:
        time.sleep(settle_s)  # late duplicates, if the pipeline made any, land in the record
        accepted = {m: s for m, s in self.accepted.items() if s in sessions}
        return check_delivery(accepted, self.replies_for(sessions), dead_letters_of(self.dead.items), sessions=sessions)

    def dead_letters_for(self, mid: str) -> list[dict]:
        return [d for d in dead_letters_of(self.dead.items) if mid in (d.get("message_ids") or ())]

    def reply_to(self, mid: str) -> AgentReply:
        for r, _ in replies_of(self.replies.items):
            if mid in r.answers:
                return r
        raise AssertionError(f"no reply answers {mid}")


@pytest.fixture(scope="module")
def rig(seeded_stack: LocalStack) -> Iterator[Rig]:
    stack = seeded_stack
    server = GeminiServer().start()
    replies = TopicRecorder(stack.project, REPLY_TOPIC, ordering=True, prefix="faults")
    dead = TopicRecorder(stack.project, DEAD_LETTER_TOPIC, prefix="faults")
    extra = [
        f"--gemini_base_url={server.url}",
        "--quiet_window_s=0.3",
        "--max_hold_s=1.5",
        "--max_agent_steps=4",
        "--model_max_tokens=64",
        "--inflight_timeout_s=60",
    ]
    env = {**stack.env, "GOOGLE_API_KEY": "test-key-not-secret"}
    command = pipeline_command(stack.bigquery_endpoint, "gemini", [*extra, *RETRY_ARGS])
    pipeline = PipelineProcess(command, env, stack.log_dir / f"pipeline-faults-{RUN}.log").start()
    publisher = pubsub_v1.PublisherClient()
    r = Rig(stack, server, pipeline, replies, dead, publisher, publisher.topic_path(stack.project, INBOUND_TOPIC))
    try:
        warm = r.say(f"warm-{RUN}", "hello")
        r.wait_answered({warm}, timeout_s=240)
        yield r
    finally:
        pipeline.stop()
        replies.close()
        dead.close()
        server.stop()


def marker(name: str) -> str:
    return f"FLT{RUN}{name}"


# ---------------------------------------------------------------------------
# 1. The model misbehaves
# ---------------------------------------------------------------------------


MODEL_FAULTS: dict[str, tuple[list[Reply], str, str]] = {
    # name: (what the model answers first, expected reply kind, a word of the dead letter's reason)
    "rl429": ([Reply.rate_limited(retry_delay_s=0.3)] * 3, "reply", ""),
    "un503": ([Reply.unavailable()] * 2, "reply", ""),
    "slow": ([Reply.slow(4.0)], "reply", ""),  # one attempt past the 2.5 s attempt timeout
    "malformed": ([Reply.malformed()] * 2, "reply", ""),
    "down": ([Reply.unavailable()] * 12, "error", "503"),
    "hang": ([Reply.slow(4.0)] * 12, "error", "timeout"),
    "garbage": ([Reply.malformed()] * 12, "error", "malformed"),
}


def test_model_faults_cost_latency_not_messages(rig: Rig) -> None:
    sessions: dict[str, str] = {}
    mids: dict[str, str] = {}
    for name, (script, _, _) in MODEL_FAULTS.items():
        rig.server.script(marker(name), *script)
    t0 = time.monotonic()
    for name in MODEL_FAULTS:
        sessions[name] = f"fm-{RUN}-{name}"
        mids[name] = rig.say(sessions[name], f"{marker(name)} where is my order?")
    # Healthy customers at the same moment: what the faults cost everyone else (head-of-line blocking).
    control = {f"fm-{RUN}-ok{i}": "" for i in range(3)}
    for s in control:
        control[s] = rig.say(s, "what is your returns policy?")
    rig.wait_answered(set(mids.values()) | set(control.values()))
    verdict = rig.verdict(set(sessions.values()) | set(control))
    assert verdict.ok, verdict.explain()
    for name, (script, kind, reason_word) in MODEL_FAULTS.items():
        reply = rig.reply_to(mids[name])
        assert reply.kind == kind, (name, reply)
        requests = rig.server.requests_for(marker(name))
        if kind == "reply":
            assert len(requests) >= len(script) + 1, (name, len(requests))  # each fault retried, then answered
        else:
            dls = rig.dead_letters_for(mids[name])
            assert len(dls) == 1 and dls[0]["stage"] == "AgentTurn", (name, dls)
            assert reason_word in dls[0]["reason"].lower(), (name, dls[0]["reason"])
            assert RETRY_POLICY["max_attempts"] >= len(requests) >= 2, (name, len(requests))
    slow = rig.reply_to(mids["slow"])
    assert slow.timings.model_ms >= RETRY_POLICY["attempt_timeout_s"] * 1000, slow.timings
    # A request that hangs is bounded by the request deadline, not by the server.
    hang = rig.reply_to(mids["hang"])
    assert hang.timings.model_ms <= (RETRY_POLICY["deadline_s"] + 3) * 1000, hang.timings
    worst_control = max(rig.reply_to(m).timings.total_ms for m in control.values())
    print(f"\nmodel faults: all answered in {time.monotonic() - t0:.1f} s; healthy turns at the same time "
          f"waited up to {worst_control:.0f} ms (hang: model_ms {hang.timings.model_ms:.0f})")  # fmt: skip


def test_model_rate_limited_for_a_stretch(rig: Rig) -> None:
    """Every model call gets 429 (retryDelay 0.4 s) for 1.5 s after the first one: all turns still answered."""
    lock = threading.Lock()
    window: dict[str, float] = {}
    limited = 0

    def stretch(request: RecordedRequest) -> Reply:
        nonlocal limited
        with lock:
            start = window.setdefault("start", time.monotonic())
            if time.monotonic() - start < 1.5:
                limited += 1
                return Reply.rate_limited(retry_delay_s=0.4)
        return echo(request)

    rig.server.responder = stretch
    try:
        sessions = {f"rl-{RUN}-{i}" for i in range(5)}
        mids = {rig.say(s, f"is there a warranty on item {i}?") for i, s in enumerate(sorted(sessions))}
        rig.wait_answered(mids)
    finally:
        rig.server.responder = echo
    verdict = rig.verdict(sessions)
    assert verdict.ok, verdict.explain()
    assert limited >= 2, f"the stretch answered only {limited} requests with 429: it tested nothing"
    assert all(rig.reply_to(m).kind == "reply" for m in mids), [rig.reply_to(m) for m in mids]


# ---------------------------------------------------------------------------
# 3. Redelivery: re-published ids, late duplicates, a nack storm
# ---------------------------------------------------------------------------


class NackStorm:
    """A competing consumer on the pipeline's own subscription that nacks everything it pulls."""

    def __init__(self, project: str) -> None:
        self._sub = pubsub_v1.SubscriberClient()
        self._path = self._sub.subscription_path(project, INBOUND_SUBSCRIPTION)
        self._stop = threading.Event()
        self.nacked = 0
        self._thread = threading.Thread(target=self._run, name="nack-storm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._sub.pull(
                    request={"subscription": self._path, "max_messages": 50, "return_immediately": True}, timeout=5
                )
            except Exception:  # noqa: BLE001 - a storm that hiccups just pulls again
                continue
            ack_ids = [m.ack_id for m in response.received_messages]
            if ack_ids:
                self._sub.modify_ack_deadline(
                    request={"subscription": self._path, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
                )
                self.nacked += len(ack_ids)
            else:
                self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sub.close()


def test_redelivered_messages_are_answered_once(rig: Rig) -> None:
    sessions = [f"rd-{RUN}-{i}" for i in range(5)]
    turns: dict[str, list[list[str]]] = {s: [] for s in sessions}
    storm = NackStorm(rig.project)
    try:
        for i, s in enumerate(sessions):  # turn 1: a burst, every message published two or three times
            burst = [rig.say(s, f"{marker('rd')} order question {i}.{k}") for k in range(1 + i % 2)]
            for k, mid in enumerate(burst):
                for _ in range(1 + (i + k) % 2):
                    rig.republish(mid)
            turns[s].append(burst)
        time.sleep(2.0)  # the storm bounces turn 1 around for a while
    finally:
        storm.stop()
    rig.wait_answered({m for s in sessions for m in turns[s][0]})
    for i, s in enumerate(sessions):  # late duplicates of turn 1, then turn 2 (also duplicated)
        for mid in turns[s][0]:
            rig.republish(mid)
        mid = rig.say(s, f"{marker('rd')} and a follow-up {i}")
        rig.republish(mid)
        turns[s].append([mid])
    rig.wait_answered({m for s in sessions for m in turns[s][1]})
    for s in sessions:  # duplicates of everything, once more, after the conversation
        for turn in turns[s]:
            for mid in turn:
                rig.republish(mid)
    verdict = rig.verdict(set(sessions), settle_s=3.0)
    assert verdict.ok, verdict.explain()
    got = rig.replies_for(set(sessions))
    per_session = {s: sorted({r.turn_index for r in got if r.session_id == s}) for s in sessions}
    # Two turns each (a burst split by the quiet window would make three; never more).
    assert all(len(ix) in (2, 3) for ix in per_session.values()), per_session
    model_calls = len(rig.server.requests_for(marker("rd")))
    assert model_calls == len({r.turn_id for r in got}), f"{model_calls} model calls for {len(got)} turns"
    assert storm.nacked > 0, "the nack storm never got a message: the test did not test redelivery"
    print(f"\nredelivery: {storm.nacked} nacks, {verdict.duplicate_deliveries} duplicate reply deliveries")


# ---------------------------------------------------------------------------
# 4. Bad payloads
# ---------------------------------------------------------------------------


def _msg(**overrides: object) -> dict:
    base: dict = {
        "session_id": f"bad-{RUN}",
        "customer_id": "C0007",
        "message_id": f"bad-{uuid.uuid4().hex[:6]}",
        "text": "where is my order?",
        "sent_at": datetime.now(UTC).isoformat(),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rejected_payloads() -> dict[str, tuple[bytes, str]]:
    """name -> (payload, a word the dead letter's reason must contain)."""
    ok = _msg()
    j = json.dumps
    return {
        "not_json": (b'{"session_id": "s", ', "not JSON"),
        "empty": (b"", "empty"),
        "binary": (bytes(range(256)) * 4, "UTF-8"),
        "utf16": (j(ok).encode("utf-16"), "UTF-8"),
        "latin1": (j(_msg(text="caf\u00e9 cr\u00e8me"), ensure_ascii=False).encode("latin-1"), "UTF-8"),
        "utf8_bom": (b"\xef\xbb\xbf" + j(ok).encode(), "JSON"),
        "huge": (j(_msg(text="x" * (MAX_PAYLOAD_BYTES + 100))).encode(), "too large"),
        "huge_binary": (bytes(range(256)) * 80, "too large"),
        "text_over_limit": (j(_msg(text="y" * (MAX_TEXT_CHARS + 1))).encode(), "text"),
        "blank_text": (j(_msg(text=" \n\t ")).encode(), "blank"),
        "unknown_version": (j(_msg(schema_version=2)).encode(), "schema_version"),
        "version_as_string": (j(_msg(schema_version="1")).encode(), "schema_version"),
        "version_null": (b'{"schema_version": null}', "schema_version"),
        "bad_id_chars": (j(_msg(session_id="a/b c")).encode(), "session_id"),
        "id_too_long": (j(_msg(message_id="m" * 129)).encode(), "message_id"),
        "not_an_object": (b"[1, 2, 3]", "JSON object"),
        "lone_surrogate": (j(_msg(text="broken \ud800 text")).encode(), "text"),
        "bad_timestamp": (j(_msg(sent_at="yesterday")).encode(), "sent_at"),
        "missing_fields": (b'{"text": "hi"}', "session_id"),
    }


ODD_BUT_VALID: dict[str, dict] = {
    "emoji_rtl_combining": {"text": "\U0001f4e6 \u05d0\u05d9\u05e4\u05d4 \u05d4\u05d6\u05de\u05e0\u05d4? cafe\u0301"},
    "nul_char": {"text": "order\u0000 status please"},
    "max_text": {"text": "z" * MAX_TEXT_CHARS},
    "unknown_fields": {"text": "hello", "future_field": {"nested": [1, 2]}, "priority": "high"},
    "naive_timestamp": {"text": "hello there", "sent_at": "2026-11-25T11:00:00"},
    "explicit_version": {"text": "hi, version one", "schema_version": 1},
}


def test_bad_payloads_are_dead_lettered_with_their_reason(rig: Rig) -> None:
    probes = rejected_payloads()
    for name, (data, _) in probes.items():
        rig.publish(data, probe=f"{RUN}-{name}")
    valid: dict[str, str] = {}
    for name, fields in ODD_BUT_VALID.items():
        session = f"odd-{RUN}-{name.replace('_', '-')}"
        body = _msg(session_id=session, message_id=f"{session}-m", **fields)
        rig.publish(json.dumps(body).encode(), session_id=session)
        rig.accepted[body["message_id"]] = session
        valid[name] = body["message_id"]
    rig.wait_answered(set(valid.values()))
    want = {f"{RUN}-{name}": word for name, (_, word) in probes.items()}

    def all_probes(_: object) -> bool:
        seen = {(d.get("attributes") or {}).get("probe") for d in dead_letters_of(rig.dead.items)}
        return set(want) <= seen

    rig.dead.wait_for(all_probes, 60)
    problems = check_rejected(want, dead_letters_of(rig.dead.items))
    assert not problems, "\n".join(problems)
    for dl in dead_letters_of(rig.dead.items):
        if str((dl.get("attributes") or {}).get("probe", "")).startswith(RUN):
            assert dl["stage"] == "ParseInbound", dl
            assert dl["payload_encoding"] in ("utf-8", "base64"), dl
    verdict = rig.verdict(set(rig.accepted[m] for m in valid.values()))
    assert verdict.ok, verdict.explain()
    assert rig.pipeline.alive(), rig.pipeline.log_tail()


# ---------------------------------------------------------------------------
# 5. A refund asked for twice
# ---------------------------------------------------------------------------


def make_customer(project: str) -> tuple[str, str]:
    """A customer of this test alone (a copy of seed customer 1, whose newest order is placed): (id, order id)."""
    from packs.shop.seed import build_customer

    source = build_customer(1)
    cid = f"C8{int(RUN, 16) % 1000:03d}"
    db = firestore_client(project)
    customer = db.collection("customers").document(cid)
    for sub in ("orders", "tickets", "audit", "refunds", "returns", "handoffs"):
        for doc in customer.collection(sub).stream():
            doc.reference.delete()
    customer.set(source.profile)
    placed = ""
    for n, (_, order) in enumerate(source.orders.items(), start=1):
        oid = f"O-{cid}-{n:02d}"
        customer.collection("orders").document(oid).set(order)
        if order["status"] == "placed":
            placed = oid
    assert placed, "seed customer 1's newest order is no longer 'placed' (packs/shop/seed.py changed)"
    return cid, placed


def test_refund_asked_twice_is_applied_once(rig: Rig) -> None:
    cid, order = make_customer(rig.project)
    session = f"refund-{RUN}"
    call = {"order_id": order, "kind": "refund", "reason": "changed my mind"}
    first, second = marker("refundA"), marker("refundB")
    rig.server.script(
        first,
        Reply.function_call("start_refund_or_return", call, call_id="call-1"),
        Reply.function_call("start_refund_or_return", {**call, "reason": "asked again"}, call_id="call-2"),
        Reply.text("I have started the refund for your order."),
    )
    m1 = rig.say(session, f"{first} please cancel and refund order {order}", customer=cid)
    rig.wait_answered({m1})
    rig.republish(m1)  # the same request redelivered
    rig.republish(m1)
    rig.server.script(
        second,
        Reply.function_call("start_refund_or_return", call, call_id="call-3"),
        Reply.text("A refund was already requested for this order."),
    )
    m2 = rig.say(session, f"{second} did the refund for {order} go through? refund it please", customer=cid)
    rig.wait_answered({m2})
    verdict = rig.verdict({session}, settle_s=2.0)
    assert verdict.ok, verdict.explain()
    assert len({r.turn_id for r in rig.replies_for({session})}) == 2

    db = firestore_client(rig.project)
    customer = db.collection("customers").document(cid)
    refunds = [d.to_dict() | {"id": d.id} for d in customer.collection("refunds").stream()]
    assert len(refunds) == 1, refunds
    audit = [d.to_dict() for d in customer.collection("audit").stream()]
    done = [a for a in audit if a["tool"] == "start_refund_or_return" and a["status"] == "done"]
    assert len(done) == 1, audit
    assert done[0]["replays"] == 1, done[0]  # the model's second call in turn 1 got the stored result
    assert done[0]["result"]["refund_id"] == refunds[0]["id"]
    later = [a for a in audit if a["turn_id"] != done[0]["turn_id"]]
    assert [a["status"] for a in later] == ["denied"], audit  # turn 2: already requested
    assert (customer.collection("orders").document(order).get().to_dict()["refund"]["refund_id"]) == refunds[0]["id"]

    bq = bigquery_client(rig.project, rig.stack.bigquery_endpoint)
    sql = f"SELECT turn_id, flags, details FROM `{rig.project}.{EVAL_DATASET}.{TURNS_TABLE}`"
    turn1 = rig.reply_to(m1).turn_id
    row: dict = {}
    deadline = time.monotonic() + 60
    while not row and time.monotonic() < deadline:
        row = next((dict(r) for r in bq.query(sql).result() if r["turn_id"] == turn1), {})
        time.sleep(0.5)
    assert "tool_replayed" in row["flags"], row
    calls = json.loads(row["details"])["tool_calls"]
    assert [c["replayed"] for c in calls] == [False, True], calls
