"""Fault: the pipeline process is SIGKILLed mid-run and started again on the same subscriptions.

What the local runner keeps and loses (``pipeline/local_acks.py``): Beam's direct runner acks a
Pub/Sub message right after its pull, so a kill used to lose every message pulled but not answered.
The patched reader holds an inbound message's ack until its reply is read back, so the kill's
in-flight messages are redelivered to the next process and answered there; replies published but
not read back before the kill are read first by the next process, which then drops their
redeliveries. What is lost is the runner's in-memory state: a session that spans the kill starts
again empty, its turn numbers from 0 (Dataflow keeps state in its store and checkpoints acks with it);
turn ids do not depend on those numbers (``contract.turn.Turn.turn_id``), so they stay unique.

Asserted: every message published (before, during and after the outage) is answered by exactly one
turn, none is lost; messages held by the killed process really were in flight (pulled, not answered,
invisible on the subscription); no turn id names two different turns; turns are renumbered only in
sessions that had a reply before the kill, and every other session passes the full invariant
(``bench.harness.check_delivery``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.types import PubsubMessage, PullResponse, ReceivedMessage

from bench.harness import TopicRecorder, check_delivery, check_rejected, dead_letters_of, replies_of
from contract.messages import AgentReply, DeadLetter, InboundMessage
from packs.shop.seed import seed_firestore
from pipeline.local_acks import AckLedger, PromptPullClient, settled_keys
from pipeline.options import DEAD_LETTER_TOPIC, HANDOFF_TOPIC, INBOUND_SUBSCRIPTION, INBOUND_TOPIC, REPLY_TOPIC
from stack.clients import firestore_client
from stack.emulators import LocalStack
from stack.resources import ensure_resources
from stack.service import PipelineProcess, pipeline_command

RUN = uuid.uuid4().hex[:6]
# A quiet window long enough that a burst is certainly pulled and waiting in session state at the kill.
QUIET_S = 3.0
PIPELINE_ARGS = [f"--quiet_window_s={QUIET_S}", f"--max_hold_s={2 * QUIET_S}", "--model_max_tokens=16"]


@dataclass
class Rig:
    stack: LocalStack
    env: dict[str, str]
    replies: TopicRecorder
    dead: TopicRecorder
    publisher: pubsub_v1.PublisherClient
    topic: str
    accepted: dict[str, str] = field(default_factory=dict)  # message id -> session id
    handoffs: TopicRecorder | None = None

    def say(self, session: str, text: str = "where is my order?") -> str:
        mid = f"{session}-{uuid.uuid4().hex[:6]}"
        customer = f"C{int(session.rsplit('-', 1)[1]) + 1:04d}"
        msg = InboundMessage(session_id=session, customer_id=customer, message_id=mid, text=text,
                             sent_at=datetime.now(UTC))  # fmt: skip
        self.publisher.publish(self.topic, msg.to_bytes()).result(timeout=30)
        self.accepted[mid] = session
        return mid

    def answered(self) -> set[str]:
        return {m for r, _ in replies_of(self.replies.items) for m in r.answers}

    def wait_answered(self, mids: set[str], timeout_s: float, pipeline: PipelineProcess) -> None:
        if not self.replies.wait_for(lambda _: mids <= self.answered(), timeout_s):
            missing = sorted(mids - self.answered())
            raise AssertionError(f"not answered: {missing}\n{pipeline.log_tail(20)}")

    def start_pipeline(self, name: str) -> PipelineProcess:
        command = pipeline_command(self.stack.bigquery_endpoint, "instant", PIPELINE_ARGS)
        return PipelineProcess(command, self.env, self.stack.log_dir / f"pipeline-{name}.log").start()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, bq_venv: Path) -> Iterator[Rig]:
    stack = LocalStack(state_dir=tmp_path_factory.mktemp("restartstack"), bq_venv=bq_venv).start()
    recorders: list[TopicRecorder] = []
    try:
        env = stack.apply_env()  # restored by stack.stop()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        seed_firestore(firestore_client(stack.project), 20)
        recorders = [
            TopicRecorder(stack.project, REPLY_TOPIC, ordering=True, prefix="rs"),
            TopicRecorder(stack.project, DEAD_LETTER_TOPIC, prefix="rs"),
            TopicRecorder(stack.project, HANDOFF_TOPIC, ordering=True, prefix="rs"),
        ]
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(stack.project, INBOUND_TOPIC)
        yield Rig(stack, env, recorders[0], recorders[1], publisher, topic, handoffs=recorders[2])
    finally:
        for r in recorders:
            r.close()
        stack.stop()


def visible_backlog(project: str) -> set[str]:
    """Message ids on the pipeline's inbound subscription that nobody holds a lease on (put back at once)."""
    sub = pubsub_v1.SubscriberClient()
    path = sub.subscription_path(project, INBOUND_SUBSCRIPTION)
    seen: set[str] = set()
    try:
        while True:
            request = {"subscription": path, "max_messages": 1000, "return_immediately": True}
            got = sub.pull(request=request).received_messages
            if not got:
                return seen
            for m in got:
                with contextlib.suppress(ValueError, KeyError, TypeError):  # a malformed payload has no id
                    seen.add(json.loads(m.message.data)["message_id"])
            sub.modify_ack_deadline(
                request={"subscription": path, "ack_ids": [m.ack_id for m in got], "ack_deadline_seconds": 0}
            )
            if len(got) < 1000:
                return seen
    finally:
        sub.close()


@pytest.mark.e2e
def test_pipeline_killed_and_restarted_loses_no_message(rig: Rig) -> None:
    t0 = time.monotonic()
    sessions = [f"rs{RUN}-{i}" for i in range(12)]
    first = rig.start_pipeline("before-kill")
    try:
        # Before: eight sessions get a first reply (they will span the kill).
        answered_before = {rig.say(s, "hello, where is my order?") for s in sessions[:8]}
        rig.wait_answered(answered_before, 240, first)
        # In flight: a second message to those eight, a first to four more; killed inside the quiet window.
        in_flight = {rig.say(s, "and the refund?") for s in sessions}
        time.sleep(0.8 * QUIET_S)  # pulled within ~0.1 s when idle; released no sooner than QUIET_S after
        assert first.alive(), first.log_tail(20)
        assert first.proc is not None
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        at_kill = rig.answered()
    finally:
        first.stop()
    pulled = in_flight - at_kill - visible_backlog(rig.stack.project)
    assert pulled, f"nothing was in flight at the kill (answered by then: {len(in_flight & at_kill)}): test is void"
    # Down: more messages wait on the subscription.
    during = {rig.say(s, "hello? anyone?") for s in sessions[::2]}
    second = rig.start_pipeline("after-restart")
    try:
        after = {rig.say(s, "still there?") for s in sessions[1::3]}
        everything = set(rig.accepted)
        rig.wait_answered(everything, 120, second)
        time.sleep(1.0)  # late duplicates, if any, land in the record
        assert second.alive(), second.log_tail(20)
    finally:
        second.stop()

    replies: list[AgentReply] = [r for r, _ in replies_of(rig.replies.items)]
    distinct = {(r.turn_id, r.text, tuple(r.answers)): r for r in replies}.values()
    turns_of: dict[str, list[str]] = defaultdict(list)
    for r in distinct:
        for m in r.answers:
            turns_of[m].append(r.turn_id)
    # Nothing lost, nothing answered twice: before, in flight, during and after the outage alike.
    assert set(turns_of) == everything, f"lost: {sorted(everything - set(turns_of))}"
    twice = {m: t for m, t in turns_of.items() if len(t) > 1}
    assert not twice, f"answered by more than one turn: {twice}"
    # What the kill loses: the session state, so turn numbers restart at 0 where a turn came before. Turn
    # ids stay unique all the same: a consumer that de-duplicates on turn_id (web/store.py) shows every reply.
    by_turn: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    index_zero: dict[str, int] = defaultdict(int)
    for r in distinct:
        by_turn[r.turn_id].add(tuple(r.answers))
        index_zero[r.session_id] += r.turn_index == 0
    reused_ids = {t: a for t, a in by_turn.items() if len(a) > 1}
    assert not reused_ids, f"a turn id names turns of different messages: {reused_ids}"
    renumbered = {s for s, n in index_zero.items() if n > 1}
    spanned = {rig.accepted[m] for m in at_kill}
    assert renumbered <= spanned, f"sessions renumbered with no turn before the kill: {renumbered - spanned}"
    clean = set(sessions) - spanned
    verdict = check_delivery(
        {m: s for m, s in rig.accepted.items() if s in clean}, replies, dead_letters_of(rig.dead.items)
    )
    assert verdict.ok, verdict.explain()
    print(
        f"\nrestart: {len(pulled)} of {len(in_flight)} messages held by the killed process, {len(during)} sent while "
        f"down, {len(after)} after; all {len(everything)} answered once in {time.monotonic() - t0:.0f} s; "
        f"{len(renumbered)} of {len(spanned)} spanning sessions renumbered from turn 0 (state lost), turn ids unique"
    )


# ---------------------------------------------------------------------------
# Session ownership across kills, and one outcome per message at scale
# ---------------------------------------------------------------------------

SETTLING = {"ParseInbound", "CheckSessionOwner", "Sessions", "AgentTurn"}  # eval writers' dead letters end nothing
LEASE_WAIT_S = 12.0  # past the local runner's LEASE_S: a held message not settled would be redelivered by then


def publish(rig: Rig, session: str, customer: str, text: str, mid: str | None = None) -> InboundMessage:
    mid = mid or f"{session}-{uuid.uuid4().hex[:8]}"
    msg = InboundMessage(session_id=session, customer_id=customer, message_id=mid, text=text,
                         sent_at=datetime.now(UTC))  # fmt: skip
    rig.publisher.publish(rig.topic, msg.to_bytes()).result(timeout=30)
    return msg


def kill(pipeline: PipelineProcess) -> None:
    assert pipeline.alive() and pipeline.proc is not None, pipeline.log_tail(20)
    os.killpg(pipeline.proc.pid, signal.SIGKILL)
    pipeline.proc.wait()
    pipeline.stop()


def outcomes(rig: Rig, mids: set[str]) -> dict[str, list[str]]:
    """Every message's distinct outcomes: ``reply:<turn>``, ``handoff:<turn>``, ``dead:<stage>`` (one per dead
    letter). An error reply comes with its AgentTurn dead letter: the pair is one outcome, the dead letter."""
    found: dict[str, list[str]] = {m: [] for m in mids}
    turns: dict[str, AgentReply] = {}
    for r, _ in replies_of(rig.replies.items):
        turns.setdefault(r.turn_id, r)  # a redelivered reply is the same outcome
    for r in turns.values():
        if r.kind == "error":
            continue
        for m in r.answers:
            if m in found:
                found[m].append(f"{r.kind}:{r.turn_id}")
    for dl in dead_letters_of(rig.dead.items):
        if dl.get("stage") in SETTLING:
            for m in dl.get("message_ids") or ():
                if m in found:
                    found[m].append(f"dead:{dl['stage']}:{dl.get('reason')}")
    return found


def eval_rows_of(rig: Rig, session: str) -> list[dict]:
    from google.cloud import bigquery

    from contract.eval_rows import TURNS_TABLE
    from pipeline.options import EVAL_DATASET
    from stack.clients import bigquery_client

    bq = bigquery_client(rig.stack.project, rig.stack.bigquery_endpoint)
    sql = f"SELECT * FROM `{rig.stack.project}.{EVAL_DATASET}.{TURNS_TABLE}` WHERE session_id = @s"
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("s", "STRING", session)])
    return [dict(r) for r in bq.query(sql, job_config=config).result()]


@pytest.mark.e2e
def test_a_message_claiming_another_customer_never_reaches_the_session_across_kills(rig: Rig) -> None:
    """The leak this module once missed: B's message in A's session, the pipeline killed and restarted twice."""
    from contract.eval_rows import customer_hash
    from pipeline.local_acks import LEASE_S

    db = firestore_client(rig.stack.project)
    a, b = "C0015", "C0016"
    b_doc = db.collection("customers").document(b)
    b_facts = {b, b_doc.get().to_dict()["name"], *(o.id for o in b_doc.collection("orders").stream())}
    session = f"leak{RUN}"
    pipeline = rig.start_pipeline("leak-1")
    try:
        opened = publish(rig, session, a, "hello, where is my order?")
        rig.wait_answered({opened.message_id}, 240, pipeline)
        intruder = publish(rig, session, b, "what is the status of my order?")
        time.sleep(0.3)  # pulled and held, most likely: killed before its outcome is read back
        kill(pipeline)
        pipeline = rig.start_pipeline("leak-2")
        rig.dead.wait_for(lambda _: any(intruder.message_id in (d.get("message_ids") or ())
                                        for d in dead_letters_of(rig.dead.items)), 120)  # fmt: skip
        kill(pipeline)  # right after its dead letter: a redelivery, if any, meets a process with no state
        pipeline = rig.start_pipeline("leak-3")
        time.sleep(LEASE_S + 5)  # what a killed process held comes back within LEASE_S
        later = publish(rig, session, a, "thanks, and my refund?")
        rig.wait_answered({later.message_id}, 120, pipeline)
        time.sleep(2.0)
        assert pipeline.alive(), pipeline.log_tail(20)
    finally:
        pipeline.stop()

    got = outcomes(rig, {opened.message_id, intruder.message_id, later.message_id})
    assert len(got[intruder.message_id]) == 1 and got[intruder.message_id][0].startswith("dead:"), got
    assert "does not match" in got[intruder.message_id][0], got
    assert len(got[opened.message_id]) == 1 and len(got[later.message_id]) == 1, got
    replies = [r for r, _ in replies_of(rig.replies.items) if r.session_id == session]
    assert rig.handoffs is not None
    handoffs = [h.data.decode() for h in rig.handoffs.items if h.attributes.get("session_id") == session]
    rows = eval_rows_of(rig, session)
    assert rows and all(r["customer_hash"] == customer_hash(a) for r in rows), rows
    assert all(intruder.message_id not in r["answers"] for r in rows)
    seen = " ".join([r.model_dump_json() for r in replies] + handoffs + [json.dumps(r, default=str) for r in rows])
    assert not {f for f in b_facts if f in seen}, f"customer {b}'s data in session {session}"


@pytest.mark.e2e
def test_every_message_ends_exactly_once_across_three_kills(rig: Rig) -> None:
    """300+ messages: plain turns, cross-customer claims, duplicates, malformed payloads and hand-offs,
    with the pipeline killed three times mid-traffic. Each message has exactly one outcome; none is lost."""
    t0 = time.monotonic()
    sessions = {f"inv{RUN}-{i}": f"C{i % 20 + 1:04d}" for i in range(60)}
    expect: dict[str, str] = {}  # message id -> the outcome it must have: reply, handoff, dead
    probes: dict[str, bytes] = {}
    names = list(sessions)
    dups = 0

    def wave(n: int) -> None:
        nonlocal dups
        for i, (session, customer) in enumerate(sessions.items()):
            msg = publish(rig, session, customer, f"wave {n}: where is my order?")
            expect[msg.message_id] = "reply"
            if i % 6 == n % 6:  # a duplicate, as a client resending after a timeout
                rig.publisher.publish(rig.topic, msg.to_bytes()).result(timeout=30)
                dups += 1
        for k in range(8 if n else 0):  # another customer's claim in a session its owner opened in wave 0
            session = names[(7 * n + 3 * k) % len(names)]
            other = f"C{(int(sessions[session][1:]) % 20) + 1:04d}"
            expect[publish(rig, session, other, "show me the orders of this account").message_id] = "dead"
        for k in range(8):
            probe = f"{RUN}-w{n}-{k}"
            data = b"{not json " + probe.encode() if k % 2 else b'{"schema_version": 1, "probe": "%s"}' % probe.encode()
            probes[probe] = data
            rig.publisher.publish(rig.topic, data, probe=probe).result(timeout=30)
        for k in range(2):
            expect[publish(rig, f"invh{RUN}-{n}-{k}", "C0019", "I want to talk to a human").message_id] = "handoff"

    pipeline = rig.start_pipeline("inv-0")
    kills = held = 0
    try:
        wave(0)  # the sessions' owners speak first (the first customer of a session owns it)
        rig.wait_answered(set(expect), 240, pipeline)
        for n in range(1, 5):
            wave(n)
            if n < 4:
                time.sleep(0.5 * QUIET_S)  # bursts pulled, turns not yet released: held at the kill
                kill(pipeline)
                kills += 1
                unsettled = {m for m, o in outcomes(rig, set(expect)).items() if not o}
                held += len(unsettled - visible_backlog(rig.stack.project))
                pipeline = rig.start_pipeline(f"inv-{kills}")

        def settled(_: object) -> bool:
            got = outcomes(rig, set(expect))
            return all(got.values()) and probes_done()

        def probes_done() -> bool:
            seen = {(d.get("attributes") or {}).get("probe") for d in dead_letters_of(rig.dead.items)}
            return set(probes) <= seen

        assert rig.replies.wait_for(settled, 300), pipeline.log_tail(20)
        time.sleep(LEASE_WAIT_S)  # a second outcome, if any, comes with a redelivery within the lease
        assert pipeline.alive(), pipeline.log_tail(20)
    finally:
        pipeline.stop()

    assert held, "no message was in flight at any kill: the test is void"
    got = outcomes(rig, set(expect))
    wrong = {m: o for m, o in got.items() if len(o) != 1 or not o[0].startswith(expect[m])}
    sample = dict(list(wrong.items())[:10])
    assert not wrong, f"{len(wrong)} of {len(expect)} messages without exactly one right outcome: {sample}"
    assert all("does not match" in o[0] for m, o in got.items() if expect[m] == "dead")
    problems = check_rejected({p: "" for p in probes}, dead_letters_of(rig.dead.items))
    assert not problems, problems
    kinds = {k: sum(v == k for v in expect.values()) for k in ("reply", "dead", "handoff")}
    print(
        f"\ninvariant: {len(expect) + len(probes)} messages ({len(probes)} malformed, {kinds['dead']} "
        f"cross-customer, {kinds['handoff']} hand-offs, {kinds['reply']} plain) plus {dups} duplicates, {kills} "
        f"kills ({held} messages held by killed processes): exactly one outcome each, 0 lost, "
        f"in {time.monotonic() - t0:.0f} s"
    )


# ---------------------------------------------------------------------------
# The ack ledger alone (no emulators): what the e2e test relies on, case by case
# ---------------------------------------------------------------------------

INBOUND, MEMORY = "projects/p/subscriptions/in", "projects/p/subscriptions/mem"


class FakeSubscriber:
    """Records acks and lease changes; ``pull`` serves what the test queued."""

    def __init__(self) -> None:
        self.queue: dict[str, list[ReceivedMessage]] = defaultdict(list)
        self.acked: list[str] = []
        self.leased: dict[str, int] = {}

    def pull(self, request: dict, timeout: float) -> PullResponse:
        got, self.queue[request["subscription"]] = self.queue[request["subscription"]], []
        return PullResponse(received_messages=got)

    def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        self.acked += ack_ids

    def modify_ack_deadline(self, subscription: str, ack_ids: list[str], ack_deadline_seconds: int) -> None:
        self.leased.update(dict.fromkeys(ack_ids, ack_deadline_seconds))


def inbound(mid: str, ack: str, pubsub_id: str = "") -> ReceivedMessage:
    msg = InboundMessage(session_id="s", customer_id="C0001", message_id=mid, text="hi", sent_at=datetime.now(UTC))
    return ReceivedMessage(ack_id=ack, message=PubsubMessage(data=msg.to_bytes(), message_id=pubsub_id or ack))


def reply(answers: list[str], ack: str) -> ReceivedMessage:
    r = AgentReply(session_id="s", turn_id="s#0", turn_index=0, answers=answers, text="ok", model="instant")
    return ReceivedMessage(ack_id=ack, message=PubsubMessage(data=r.to_bytes(), attributes={"turn_id": "s#0"}))


def read(reader: PromptPullClient, client: FakeSubscriber, subscription: str) -> list[str]:
    """What the runner does: pull, then ack everything the pull returned; returns the emitted ack ids."""
    got = [m.ack_id for m in reader.pull(subscription=subscription, max_messages=10, timeout=1).received_messages]
    if got:
        reader.acknowledge(subscription=subscription, ack_ids=got)
    return got


def test_an_inbound_ack_waits_for_its_reply_and_redeliveries_are_dropped() -> None:
    client, ledger = FakeSubscriber(), AckLedger(lease_s=7)
    ledger.configure("in", "mem")
    reader = PromptPullClient(client, ledger)
    client.queue[MEMORY] = [reply(["m0"], "r0")]  # a reply the killed predecessor never read back
    client.queue[INBOUND] = [inbound("m1", "a1"), inbound("m0", "a0"), ReceivedMessage(
        ack_id="bad", message=PubsubMessage(data=b"[" * 5000))]  # fmt: skip
    assert read(reader, client, INBOUND) == [], "inbound pulled before the reply memory was read dry"
    assert read(reader, client, MEMORY) == ["r0"] and read(reader, client, MEMORY) == []
    assert read(reader, client, INBOUND) == ["a1", "bad"]  # m0 was answered: acked, never emitted
    assert set(client.acked) == {"r0", "a0", "bad"} and client.leased == {"a1": 7}
    client.queue[INBOUND] = [inbound("m1", "a1b", pubsub_id="a1")]  # its lease lapsed: redelivered
    assert read(reader, client, INBOUND) == [] and ledger.held == 1
    ledger.extend()
    assert client.leased == {"a1": 7, "a1b": 7}
    client.queue[MEMORY] = [reply(["m1"], "r1")]
    read(reader, client, MEMORY)
    assert {"a1", "a1b", "r1"} <= set(client.acked) and ledger.held == 0


def test_a_message_never_answered_is_acked_after_the_max_hold() -> None:
    client, ledger = FakeSubscriber(), AckLedger(max_hold_s=0.0)
    ledger.configure("in", "mem")
    reader = PromptPullClient(client, ledger)
    read(reader, client, MEMORY)
    client.queue[INBOUND] = [inbound("m1", "a1")]
    assert read(reader, client, INBOUND) == ["a1"] and "a1" not in client.acked
    ledger.extend()
    assert client.acked == ["a1"] and ledger.expired == 1


def test_without_subscriptions_the_runner_acks_on_pull_as_beam_does() -> None:
    client, ledger = FakeSubscriber(), AckLedger()
    ledger.configure(None, None)
    reader = PromptPullClient(client, ledger)
    client.queue[INBOUND] = [inbound("m1", "a1")]
    assert read(reader, client, INBOUND) == ["a1"] and client.acked == ["a1"] and ledger.held == 0


def dead_letter(stage: str, data: bytes | None = None, message_ids: list[str] | None = None) -> DeadLetter:
    from pipeline.parse import dead_letter_for

    if data is not None:
        return dead_letter_for(stage, "payload is not JSON", data)
    return DeadLetter(stage=stage, reason="does not match", payload="{}", message_ids=message_ids or [])


def test_dead_letters_settle_held_messages_and_rejected_payloads_by_their_bytes() -> None:
    client, ledger = FakeSubscriber(), AckLedger()
    ledger.configure("in", "mem", "projects/p/subscriptions/dl", None)
    ledger._settler = object()  # type: ignore[assignment] - no reader thread: the test reads dead letters itself
    ledger.dead_letters_caught_up = True
    reader = PromptPullClient(client, ledger)
    read(reader, client, MEMORY)
    bad = b"\xff\xfe not utf-8 {"
    client.queue[INBOUND] = [inbound("m1", "a1"), ReceivedMessage(ack_id="bad", message=PubsubMessage(data=bad))]
    assert read(reader, client, INBOUND) == ["a1", "bad"] and client.acked == [] and ledger.held == 2
    # An eval writer's dead letter ends nothing: its turn's reply may still be on its way.
    ledger.answered(settled_keys(dead_letter("WriteTurns", message_ids=["m1"])))
    assert client.acked == []
    ledger.answered(settled_keys(dead_letter("CheckSessionOwner", message_ids=["m1"])))
    ledger.answered(settled_keys(dead_letter("ParseInbound", data=bad)))  # kept as base64: the same digest
    assert set(client.acked) == {"a1", "bad"} and ledger.held == 0
    client.queue[INBOUND] = [inbound("m1", "a1-again")]  # redelivered after a kill: settled, acked, dropped
    assert read(reader, client, INBOUND) == [] and "a1-again" in client.acked


def test_inbound_waits_for_the_dead_letters_to_be_read_dry() -> None:
    client, ledger = FakeSubscriber(), AckLedger()
    ledger.configure("in", "mem", "projects/p/subscriptions/dl", None)
    ledger._settler = object()  # type: ignore[assignment]
    reader = PromptPullClient(client, ledger)
    read(reader, client, MEMORY)
    client.queue[INBOUND] = [inbound("m1", "a1")]
    assert read(reader, client, INBOUND) == [], "inbound pulled before the dead letters were read dry"
    ledger.dead_letters_caught_up = True
    assert read(reader, client, INBOUND) == ["a1"]


def test_a_dead_letter_leased_to_a_killed_process_still_settles_its_redelivery(rig: Rig) -> None:
    """The kill window of issue 26, on the real emulator. The predecessor held an inbound message (leased for
    ``LEASE_S``), published its dead letter, and its read-back pulled that dead letter; it died before acking
    either. The dead letter is then leased to a dead process, as long as the inbound message: a successor that
    reads the dead letters dry without it would emit the redelivery and dead-letter the message a second time."""
    from pipeline.local_acks import LEASE_S

    run = uuid.uuid4().hex[:8]
    project = rig.stack.project  # the module's stack (its env is applied): not the session one, which rig would unset
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    inbound_topic, dl_topic = (publisher.topic_path(project, f"{name}-{run}") for name in ("once-in", "once-dl"))
    inbound_sub, settle = (subscriber.subscription_path(project, f"{n}-{run}") for n in ("once-in", "once-settle"))
    for topic in (inbound_topic, dl_topic):
        publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": inbound_sub, "topic": inbound_topic})
    subscriber.create_subscription(request={"name": settle, "topic": dl_topic})

    def ledger() -> AckLedger:
        made = AckLedger()
        made.configure(inbound_sub.rsplit("/", 1)[1], f"no-memory-{run}", settle, dl_topic)
        made.caught_up = True  # the reply memory is not under test
        return made

    dead = ledger()
    dead._leaser = dead._settler = object()  # type: ignore[assignment] - a dead process renews and reads nothing
    dead.dead_letters_caught_up = True
    msg = InboundMessage(session_id=f"s-{run}", customer_id="C0001", message_id=f"m-{run}", text="hi",
                         sent_at=datetime.now(UTC))  # fmt: skip
    publisher.publish(inbound_topic, msg.to_bytes()).result(timeout=30)
    held: list[ReceivedMessage] = []
    while not held:
        held = list(PromptPullClient(subscriber, dead).pull(subscription=inbound_sub, max_messages=10, timeout=5)
                    .received_messages)  # fmt: skip
    letter = DeadLetter(stage="CheckSessionOwner", reason="does not match", payload="{}", message_ids=[msg.message_id])
    publisher.publish(dl_topic, letter.to_bytes()).result(timeout=30)
    time.sleep(1.0)  # the dead process's read-back pulls it a moment later, and never acks it
    leased: list[ReceivedMessage] = []
    while not leased:
        leased = list(subscriber.pull(subscription=settle, max_messages=10, timeout=5).received_messages)

    successor = ledger()
    reader = PromptPullClient(pubsub_v1.SubscriberClient(), successor)
    emitted: list[str] = []
    try:
        deadline = time.monotonic() + LEASE_S + 10
        while time.monotonic() < deadline and not successor.dropped:
            got = reader.pull(subscription=inbound_sub, max_messages=10, timeout=5).received_messages
            emitted += [rm.message.message_id for rm in got]
    finally:
        successor.close()
        for sub in (inbound_sub, settle):
            subscriber.delete_subscription(subscription=sub)
        for topic in (inbound_topic, dl_topic):
            publisher.delete_topic(topic=topic)
    assert emitted == [], "the redelivery of a dead-lettered message was emitted again"
    assert successor.dropped == 1 and successor.held == 0
