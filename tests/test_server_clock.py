"""Latency and freshness run on the server's clock, whatever the client's ``sent_at`` says.

A client with a wrong clock (a phone set to 2001, a laptop 8 hours off, one a year ahead) must not
poison a turn's timings, its eval row or the SLI metrics: timings start at the message's receipt
(its Pub/Sub publish time, else when ParseInbound read it), and the skew is flagged on the eval row.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from google.cloud import pubsub_v1

from agents.backends.instant import InstantHandler
from agents.state import StepConfig
from contract.eval_rows import FLAG_CLIENT_CLOCK_SKEW, TURNS_TABLE
from contract.messages import MAX_CLOCK_SKEW_S, AgentReply, InboundMessage, parse_inbound
from contract.turn import EnrichedTurn, Turn, UserMessage
from pipeline import metrics as m
from pipeline.agent_stage import AgentTurn
from pipeline.options import EVAL_DATASET, INBOUND_TOPIC
from pipeline.parse import DEAD_LETTER_TAG, ParseInbound
from pipeline.session_core import Hooks, SessionConfig
from pipeline.session_simulator import SessionSimulator
from stack.chat import ReplyListener
from stack.clients import bigquery_client
from stack.emulators import LocalStack
from stack.service import PipelineProcess, pipeline_command

LATENCY_SLO_S = 30.0
# sent_at offsets from the true time: the three wrong clocks, and one right one.
SKEWS = {
    "y2001": datetime(2001, 1, 1, tzinfo=UTC) - datetime.now(UTC),
    "behind8h": -timedelta(hours=8),
    "ahead1y": timedelta(days=365),
    "honest": timedelta(0),
}


def inbound(session: str, skew: timedelta, message_id: str | None = None) -> InboundMessage:
    return InboundMessage(
        session_id=session,
        customer_id="C0001",
        message_id=message_id or f"{session}-m0",
        text="where is my order?",
        sent_at=datetime.now(UTC) + skew,
    )


# -- the contract: received_at is the server's field ---------------------------------------------------------------


def test_a_client_cannot_set_received_at() -> None:
    payload = json.loads(inbound("s", SKEWS["honest"]).to_bytes())
    assert "received_at" not in payload  # producers keep the documented shape
    payload["received_at"] = "2001-01-01T00:00:00Z"
    assert parse_inbound(json.dumps(payload).encode()).received_at is None
    payload["received_at"] = "not a time"  # and cannot break their own message with it
    assert parse_inbound(json.dumps(payload).encode()).received_at is None


def test_skew_is_measured_against_receipt_and_sent_at_bounded() -> None:
    received = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    msg = inbound("s", timedelta(0)).model_copy(
        update={"sent_at": received - timedelta(hours=8), "received_at": received}
    )
    assert msg.clock_skew_s == -8 * 3600
    assert msg.bounded_sent_at == received - timedelta(seconds=MAX_CLOCK_SKEW_S)
    ahead = msg.model_copy(update={"sent_at": received + timedelta(days=365)})
    assert ahead.bounded_sent_at == received + timedelta(seconds=MAX_CLOCK_SKEW_S)
    unreceived = inbound("s", SKEWS["y2001"])  # built outside the pipeline: nothing to bound it by
    assert unreceived.clock_skew_s == 0 and unreceived.bounded_sent_at == unreceived.sent_at


# -- the pipeline's own stages, in process ------------------------------------------------------------------------


def _turn(msg: InboundMessage, release_after_s: float) -> EnrichedTurn:
    """What the session stage hands on: the message with its receipt time, released a little later."""
    assert msg.received_at is not None
    turn = Turn(
        session_id=msg.session_id,
        customer_id=msg.customer_id,
        turn_index=0,
        messages=(UserMessage(msg.message_id, msg.text, msg.sent_at, msg.received_at),),
        history=(),
        omitted_history=0,
        released_at=msg.received_at + timedelta(seconds=release_after_s),
    )
    return EnrichedTurn(turn=turn, context={})


class _SkewedClients(beam.PTransform):
    """Pub/Sub messages (publish time: now) from clients with wrong clocks -> parse -> agent -> SLIs."""

    def __init__(self, published: datetime, project: str) -> None:
        super().__init__()
        self.published, self.project = published, project

    def expand(self, p: beam.pvalue.PBegin) -> tuple[beam.PCollection, beam.PCollection]:
        messages = [
            PubsubMessage(inbound(name, skew).to_bytes(), {}, message_id=name, publish_time=self.published)
            for name, skew in SKEWS.items()
        ]
        parsed = p | beam.Create(messages) | beam.ParDo(ParseInbound()).with_outputs(DEAD_LETTER_TAG, main="messages")
        config = StepConfig(max_steps=1, max_tokens=16, tools=(), policy_digests=False)
        handler = InstantHandler(max_tokens=16)
        agent = AgentTurn(handler, project=self.project, version="support_system_v1", config=config)
        replies, rows, _, _ = parsed.messages | beam.Map(_turn, release_after_s=0.25) | agent
        recorded = replies | beam.ParDo(m.RecordTurnSLIs(latency_slo_s=LATENCY_SLO_S))
        return recorded, rows


def test_wrong_client_clocks_leave_timings_rows_and_slis_true(local_stack: LocalStack) -> None:
    published = datetime.now(UTC)
    p = beam.Pipeline(runner=FnApiRunner())
    replies, rows = p | _SkewedClients(published, local_stack.project)  # the agent's tool executor: Firestore
    started = time.time()

    def check_replies(got: list) -> None:
        elapsed_ms = (time.time() - started) * 1000 + 60_000  # generous: the pipeline's own run time
        assert sorted(r.session_id for r in got) == sorted(SKEWS)
        for r in got:
            t = r.timings
            assert t.queue_ms == pytest.approx(250.0, abs=1.0), (r.session_id, t)  # release - receipt, exactly
            assert t.queue_ms <= t.total_ms < elapsed_ms, (r.session_id, t)  # no 26 years, no 0

    def check_rows(got: list) -> None:
        by_session = {row["session_id"]: row for _, row in got}
        assert sorted(by_session) == sorted(SKEWS)
        for name, row in by_session.items():
            skewed = name != "honest"
            assert (FLAG_CLIENT_CLOCK_SKEW in row["flags"]) is skewed, (name, row["flags"])
            assert row["queue_ms"] == pytest.approx(250.0, abs=1.0) and row["total_ms"] < 120_000, row

    assert_that(replies, check_replies, label="CheckReplies")
    assert_that(rows, check_rows, label="CheckRows")
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(m.NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in found["counters"]}
    dists = {d.key.metric.name: d.committed for d in found["distributions"]}
    assert counters[m.TURNS_ANSWERED] == len(SKEWS)
    assert counters.get(m.TURNS_OVER_LATENCY_SLO, 0) == 0  # the 2001 phone no longer fires the SLO alert
    latency = dists[m.TURN_LATENCY_MS]
    assert latency.count == len(SKEWS) and latency.max < LATENCY_SLO_S * 1000 and latency.min >= 250
    queue = dists[m.STAGE_QUEUE_MS]
    assert 249 <= queue.min <= queue.max <= 251
    skewed = result.metrics().query(MetricsFilter().with_name("client_clock_skewed"))["counters"]
    assert sum(c.committed for c in skewed) == len(SKEWS) - 1


def test_parse_stamps_read_time_when_there_is_no_publish_time() -> None:
    msg = PubsubMessage(inbound("s", SKEWS["y2001"]).to_bytes(), {})
    (parsed,) = list(ParseInbound(clock=lambda: 1_800_000_000.0).process(msg))
    assert parsed.received_at == datetime.fromtimestamp(1_800_000_000.0, UTC)
    assert parsed.sent_at.year == 2001  # kept as sent: it still orders the turn's messages


# -- the session stage: turns carry the receipt time, freshness runs on the stage's clock ---------------------------


class _FreshnessLog(Hooks):
    def __init__(self) -> None:
        super().__init__()
        self.ages: list[float] = []

    def freshness(self, oldest_unanswered: float | None, now: float) -> None:
        if oldest_unanswered is not None:
            self.ages.append(now - oldest_unanswered)


def test_sessions_carry_receipt_times_and_freshness_ignores_client_clocks() -> None:
    t0 = 1_800_000_000.0  # the session stage's clock (seconds), and the receipt time of every message
    received = datetime.fromtimestamp(t0, UTC)
    hooks = _FreshnessLog()
    sim = SessionSimulator(SessionConfig(quiet_window_s=1.5, max_hold_s=3.0), probe_s=1.0, hooks=hooks)
    for name, skew in SKEWS.items():
        msg = inbound(name, timedelta(0)).model_copy(update={"sent_at": received + skew, "received_at": received})
        sim.message(msg, at=t0)
    sim.advance_to(t0 + 2.0)
    assert sorted(t.session_id for t in sim.turns) == sorted(SKEWS)
    for turn in sim.turns:
        assert turn.first_received_at == received  # what FinishTurn measures from
        assert (turn.released_at - turn.first_received_at).total_seconds() == pytest.approx(1.5)
    for turn in sim.turns:
        done = AgentReply(
            session_id=turn.session_id,
            turn_id=turn.turn_id,
            turn_index=0,
            answers=turn.message_ids,
            text="ok",
            model="m",
        )
        sim.reply(done, at=t0 + 3.0)
    assert hooks.ages and all(0.0 <= age <= 3.0 for age in hooks.ages), hooks.ages  # no 26 years, no negatives


# -- an outside client through the real stack ---------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_outside_clients_with_wrong_clocks_through_the_stack(seeded_stack: LocalStack) -> None:
    """Publish straight onto the inbound topic (as ``gcloud pubsub topics publish`` would), read the replies."""
    stack = seeded_stack
    project = stack.project
    run = uuid.uuid4().hex[:6]
    sessions = {f"clock-{name}-{run}": skew for name, skew in SKEWS.items()}
    replies = ReplyListener(project, sessions=set(sessions))
    log = stack.log_dir / f"pipeline-clock-{run}.log"
    extra = ["--quiet_window_s=0.5", "--max_hold_s=1.0"]
    pipeline = PipelineProcess(pipeline_command(stack.bigquery_endpoint, "instant", extra), stack.env, log).start()
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, INBOUND_TOPIC)
    got: dict[str, object] = {}
    wall_ms: dict[str, float] = {}
    try:
        published_at: dict[str, float] = {}
        for session, skew in sessions.items():
            published_at[session] = time.time()
            publisher.publish(topic, inbound(session, skew).to_bytes(), session_id=session).result(timeout=60)
        deadline = time.monotonic() + 420  # the pipeline's start included
        while len(got) < len(sessions) and time.monotonic() < deadline:
            assert pipeline.alive(), pipeline.log_tail()
            try:
                reply = replies.replies.get(timeout=1)
            except Exception:  # noqa: BLE001 - queue.Empty: keep waiting
                continue
            got[reply.session_id] = reply
            wall_ms[reply.session_id] = (time.time() - published_at[reply.session_id]) * 1000
        assert set(got) == set(sessions), f"replies for {sorted(got)}\n{pipeline.log_tail()}"
        for session, reply in got.items():
            t = reply.timings
            # Measured from the publish time: at most the client's own publish-to-receive wall time.
            assert 0 < t.total_ms <= wall_ms[session] + 50, (session, t, wall_ms[session])
            assert t.queue_ms <= t.total_ms, (session, t)
        bq = bigquery_client(project, stack.bigquery_endpoint)
        sql = f"SELECT session_id, flags, total_ms FROM `{project}.{EVAL_DATASET}.{TURNS_TABLE}`"
        rows: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(rows) < len(sessions) and time.monotonic() < deadline:
            rows = {r["session_id"]: dict(r) for r in bq.query(sql).result() if r["session_id"] in sessions}
            time.sleep(0.5)
        assert set(rows) == set(sessions)
        for session, row in rows.items():
            assert (FLAG_CLIENT_CLOCK_SKEW in row["flags"]) is (sessions[session] != timedelta(0)), row
            assert row["total_ms"] == pytest.approx(got[session].timings.total_ms, abs=0.01)
    finally:
        replies.close()
        pipeline.stop()
