"""pipeline.metrics: the SLI helpers report the documented Beam metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from contract.messages import AgentReply, DeadLetter, ReplyKind, TurnTimings
from pipeline import metrics as m


def reply(n: int, kind: ReplyKind, total_ms: float) -> AgentReply:
    return AgentReply(
        session_id="s",
        turn_id=f"s#{n}",
        turn_index=n,
        answers=["m"],
        kind=kind,
        text="t",
        model="instant",
        timings=TurnTimings(queue_ms=1500, enrich_ms=12, model_ms=total_ms - 1600, tools_ms=3, total_ms=total_ms),
    )


def run_and_collect(build: beam.PTransform) -> dict[str, object]:
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | build
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(m.NAMESPACE))
    out: dict[str, object] = {}
    for c in found["counters"]:
        out[c.key.metric.name] = c.committed
    for d in found["distributions"]:
        out[d.key.metric.name] = d.committed
    return out


class _Turns(beam.PTransform):
    def expand(self, p: beam.pvalue.PBegin) -> beam.PCollection:
        replies = [
            reply(0, ReplyKind.REPLY, 2_000),
            reply(1, ReplyKind.REPLY, 45_000),  # slower than the 30 s SLO
            reply(2, ReplyKind.HANDOFF, 3_000),
            reply(3, ReplyKind.ERROR, 1_700),
        ]
        return p | beam.Create(replies) | beam.ParDo(m.RecordTurnSLIs(latency_slo_s=30.0))


def test_turn_slis() -> None:
    got = run_and_collect(_Turns())
    assert got[m.TURNS_ANSWERED] == 4
    assert got[m.TURNS_OVER_LATENCY_SLO] == 1
    assert got[m.HANDOFFS] == 1
    assert got[m.MODEL_ERRORS] == 1
    latency = got[m.TURN_LATENCY_MS]
    assert (latency.count, latency.min, latency.max) == (4, 1_700, 45_000)
    assert got[m.STAGE_QUEUE_MS].mean == 1500
    assert got[m.STAGE_TOOLS_MS].max == 3
    assert got[m.STAGE_MODEL_MS].max == 43_400


class _DeadLetters(beam.PTransform):
    def expand(self, p: beam.pvalue.PBegin) -> beam.PCollection:
        letters = [
            DeadLetter(stage="ParseInbound", reason="bad json", payload="{"),
            DeadLetter(stage="ParseInbound", reason="too big", payload="x"),
            DeadLetter(stage="AgentTurn", reason="model", payload="[]", created_at=datetime.now(UTC)),
        ]
        return p | beam.Create(letters) | beam.ParDo(m.RecordDeadLetters())


def test_dead_letters_total_and_per_stage() -> None:
    got = run_and_collect(_DeadLetters())
    assert got[m.DEAD_LETTERS] == 3
    assert got["sli_dead_letters_ParseInbound"] == 2
    assert got["sli_dead_letters_AgentTurn"] == 1


class _Probe(beam.DoFn):
    def __init__(self) -> None:
        self.probe = m.FreshnessProbe(freshness_slo_s=60.0, probe_s=10.0)

    def process(self, element: tuple[float | None, float]) -> Iterator[float | None]:
        oldest, now = element
        m.retry_hook("firestore")(None)  # what tenacity's before_sleep calls
        yield self.probe.observe(oldest, now)


class _Freshness(beam.PTransform):
    def expand(self, p: beam.pvalue.PBegin) -> beam.PCollection:
        observations = [(100.0, 105.0), (100.0, 190.0), (None, 200.0), (200.0, 199.0)]
        return p | beam.Create(observations) | beam.ParDo(_Probe())


def test_freshness_probe() -> None:
    got = run_and_collect(_Freshness())
    assert got[m.FRESHNESS_PROBES] == 3  # nothing unanswered: nothing observed
    assert got[m.UNANSWERED_OVER_FRESHNESS_SLO] == 1  # 90 s > 60 s
    age = got[m.OLDEST_UNANSWERED_AGE_MS]
    assert (age.count, age.min, age.max) == (3, 0, 90_000)  # a clock step back counts as age 0
    assert got["sli_retries_firestore"] == 4


def test_freshness_probe_schedule() -> None:
    probe = m.FreshnessProbe(freshness_slo_s=60.0, probe_s=10.0)
    assert probe.next_check(now=100.0, deadline=280.0) == 110.0
    assert probe.next_check(now=275.0, deadline=280.0) == 280.0
    assert probe.observe(None, 1.0) is None
    assert probe.observe(10.0, 12.5) == pytest.approx(2.5)


def test_metric_names_are_unique_and_prefixed() -> None:
    names = [spec.name for spec in m.METRICS]
    assert len(names) == len(set(names))
    assert all(n.startswith("sli_") for n in names)
    assert {s.kind for s in m.METRICS} == {"counter", "distribution"}


def test_oldest_unanswered_from_the_session_state() -> None:
    from contract.turn import UserMessage
    from pipeline.session import SessionState, _InFlight, _Pending

    s = SessionState(customer_id="C1", opened=0.0, last_activity=0.0)
    assert m.oldest_unanswered(s) is None and m.oldest_unanswered(None) is None
    msg = UserMessage("m1", "hi", datetime.now(UTC))
    s.pending = [_Pending(msg, arrived=50.0), _Pending(msg, arrived=40.0)]
    assert m.oldest_unanswered(s) == 40.0
    s.in_flight = _InFlight(turn_index=0, released=30.0)
    assert m.oldest_unanswered(s) == 30.0  # the turn in flight, by its release time
    s.in_flight.oldest_arrived = 25.0  # once the session stage records its oldest message's arrival
    assert m.oldest_unanswered(s) == 25.0


def test_retry_hook_pickles() -> None:
    import pickle

    hook = pickle.loads(pickle.dumps(m.retry_hook("bigquery")))
    hook(None)  # outside a pipeline: a no-op, no error
