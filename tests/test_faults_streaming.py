"""Killed while streaming: the pipeline (Gemini backend, the local Gemini server streaming slowly) is
killed with SIGKILL while turns are publishing their deltas, and restarted.

Asserted: every message still ends exactly once (one final reply, never two turns for one message);
the deltas of a turn the restart writes again come with the same ``(turn_id, seq)`` and the same text
(so a client's de-duplication by that key is sound); and for every turn the frontend's promise holds
on what a client assembles (``stack.delta_view``): its deltas equal the final, or a retraction was
published for it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from google.cloud import pubsub_v1

from bench.harness import TopicRecorder, replies_of
from contract.deltas import DeltaKind, ReplyDelta, parse_delta
from contract.messages import InboundMessage
from packs.shop.seed import seed_firestore
from pipeline.options import DELTA_TOPIC, INBOUND_TOPIC, REPLY_TOPIC
from stack.clients import firestore_client
from stack.delta_view import DeltaView
from stack.emulators import DEFAULT_STATE_DIR, LocalStack, ensure_bq_venv
from stack.resources import ensure_resources
from stack.service import PipelineProcess, pipeline_command
from tests.gemini_server import GeminiServer, Reply

pytestmark = pytest.mark.e2e

TEXT = (
    "Thanks for your patience, I have looked into this for you. Your order left our warehouse, "
    "and the carrier has it now. It should reach you within two working days; is there anything else?"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(
        state_dir=tmp_path_factory.mktemp("streamkill"), bq_venv=ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")
    ).start()
    try:
        s.apply_env()
        ensure_resources(s.project, s.bigquery_endpoint)
        seed_firestore(firestore_client(s.project), 10)
        yield s
    finally:
        s.stop()


def test_killed_mid_stream_every_message_ends_once(stack: LocalStack) -> None:
    server = GeminiServer(lambda request: Reply.text(TEXT)).start()
    server.stream_delay_s = 0.3  # ~4 s per reply: a kill lands mid-stream
    replies = TopicRecorder(stack.project, REPLY_TOPIC, ordering=True, prefix="sk")
    deltas = TopicRecorder(stack.project, DELTA_TOPIC, prefix="sk")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.project, INBOUND_TOPIC)
    accepted: dict[str, str] = {}
    extra = [f"--gemini_base_url={server.url}", "--quiet_window_s=0.3", "--max_hold_s=1", "--max_agent_steps=2"]
    env = {**stack.env, "GOOGLE_API_KEY": "test-key-not-secret"}

    def start(name: str) -> PipelineProcess:
        command = pipeline_command(stack.bigquery_endpoint, "gemini", extra)
        return PipelineProcess(command, env, stack.log_dir / f"pipeline-{name}.log").start()

    def say(session: str, customer: str, text: str) -> str:
        mid = f"{session}-{uuid.uuid4().hex[:6]}"
        msg = InboundMessage(session_id=session, customer_id=customer, message_id=mid, text=text,
                             sent_at=datetime.now(UTC))  # fmt: skip
        publisher.publish(topic, msg.to_bytes()).result(timeout=30)
        accepted[mid] = session
        return mid

    def answered() -> set[str]:
        return {m for r, _ in replies_of(replies.items) for m in r.answers}

    def delta_list() -> list[ReplyDelta]:
        return [parse_delta(d.data) for d in deltas.items]

    sessions = [(f"sk{uuid.uuid4().hex[:6]}-{i}", f"C{i + 1:04d}") for i in range(6)]
    first = start("stream-before-kill")
    try:
        warm = {say(s, c, "hello, can you help me?") for s, c in sessions}
        assert replies.wait_for(lambda _: warm <= answered(), 240), first.log_tail(20)
        before = {d.turn_id for d in delta_list()}
        second_round = {say(s, c, "where is my parcel right now?") for s, c in sessions}
        assert deltas.wait_for(lambda _: {d.turn_id for d in delta_list()} - before, 60), first.log_tail(20)
        time.sleep(0.5)
        assert first.proc is not None and first.alive()
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        at_kill = answered()
    finally:
        first.stop()
    cut = second_round - at_kill
    assert cut, "every turn had finished before the kill: the test is void"
    second = start("stream-after-restart")
    try:
        assert replies.wait_for(lambda _: set(accepted) <= answered(), 240), second.log_tail(20)
        time.sleep(2.0)  # late deltas and duplicates land in the record
    finally:
        second.stop()
        replies.close()
        deltas.close()
        publisher.stop()
        server.stop()

    finals = [r for r, _ in replies_of(replies.items)]
    distinct = {(r.turn_id, r.text, tuple(r.answers)): r for r in finals}.values()
    turns_of: dict[str, set[str]] = defaultdict(set)
    for r in distinct:
        for m in r.answers:
            turns_of[m].add(r.turn_id)
    assert set(turns_of) == set(accepted), f"lost: {sorted(set(accepted) - set(turns_of))}"
    assert all(len(t) == 1 for t in turns_of.values()), {m: t for m, t in turns_of.items() if len(t) > 1}
    # Deltas are at-least-once: the same key always carries the same piece.
    by_key: dict[tuple[str, int], set[tuple[str, str]]] = defaultdict(set)
    for d in delta_list():
        by_key[d.key].add((d.kind.value, d.text))
    assert all(len(v) == 1 for v in by_key.values()), {k: v for k, v in by_key.items() if len(v) > 1}
    # The promise, on what a client assembles from what it received.
    final_of = {r.turn_id: r for r in distinct}
    streamed = 0
    for turn_id, r in final_of.items():
        view = DeltaView(r.session_id)
        mine = [d for d in delta_list() if d.turn_id == turn_id]
        for d in sorted(mine, key=lambda d: d.seq):
            view.add(d)
        shown = view.final(turn_id)
        if mine:
            streamed += 1
            retracted = any(d.kind == DeltaKind.RETRACT for d in mine)
            assert shown == r.text or retracted, (turn_id, shown, r.text)
    assert streamed >= len(accepted) // 2, f"only {streamed} turns streamed"
    print(f"\nkilled mid-stream: {len(cut)} turns cut, all {len(accepted)} messages answered once, "
          f"{streamed} turns streamed, {len(by_key)} distinct delta keys")  # fmt: skip
