"""Service-level indicators as Beam metrics: one namespace, documented names, tiny helpers.

Every SLI lives in the namespace ``supportflow`` and its name starts with
``sli_``, so one filter finds them all in the Dataflow console and in Cloud
Monitoring (``dataflow.googleapis.com/job/user_counter``, label ``metric_name``).
``METRICS`` is the table docs/operations.md's "SLOs and metrics" section shows; a test
keeps the two in step.

Counters are what the alert policies use (deploy/monitoring/): Beam
distributions are cumulative over a job's life, so their max never comes down
after one bad minute, while the *increase* of a counter over a window is
exactly "how many turns were slow in the last hour". Distributions are for
dashboards.

Where each helper is called (see docs/operations.md for the wiring):

- ``RecordTurnSLIs`` (pass-through DoFn) on every ``AgentReply`` just before
  ``ToReplyMessage``: turns, latency, per-stage latencies, hand-offs, model errors.
- ``RecordDeadLetters`` (pass-through DoFn) on every ``DeadLetter`` just before
  ``ToDeadLetterMessage``: dead letters, total and per stage.
- ``FreshnessProbe`` inside the session stage: the age of a session's oldest
  unanswered user message, observed on the turn timer while a turn is in
  flight and when its reply comes back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from contract.messages import AgentReply, DeadLetter, ReplyKind

NAMESPACE = "supportflow"

TURNS_ANSWERED = "sli_turns_answered"
TURNS_OVER_LATENCY_SLO = "sli_turns_over_latency_slo"
TURN_LATENCY_MS = "sli_turn_latency_ms"
STAGE_QUEUE_MS = "sli_stage_queue_ms"
STAGE_ENRICH_MS = "sli_stage_enrich_ms"
STAGE_MODEL_MS = "sli_stage_model_ms"
STAGE_TOOLS_MS = "sli_stage_tools_ms"
HANDOFFS = "sli_handoffs"
MODEL_ERRORS = "sli_model_errors"
DEAD_LETTERS = "sli_dead_letters"
DEAD_LETTERS_BY_STAGE = "sli_dead_letters_{stage}"
RETRIES = "sli_retries_{component}"
FRESHNESS_PROBES = "sli_freshness_probes"
UNANSWERED_OVER_FRESHNESS_SLO = "sli_unanswered_over_freshness_slo"
OLDEST_UNANSWERED_AGE_MS = "sli_oldest_unanswered_age_ms"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "counter" | "distribution"
    unit: str
    where: str
    meaning: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(TURNS_ANSWERED, "counter", "turns", "RecordTurnSLIs", "turns that got a reply of any kind"),
    MetricSpec(
        TURNS_OVER_LATENCY_SLO,
        "counter",
        "turns",
        "RecordTurnSLIs",
        "turns whose reply came later than --slo_turn_latency_s after their first message was received (latency SLO)",
    ),
    MetricSpec(
        TURN_LATENCY_MS,
        "distribution",
        "ms",
        "RecordTurnSLIs",
        "end-to-end turn latency on the server's clock: first user message received -> reply built (timings.total_ms)",
    ),
    MetricSpec(STAGE_QUEUE_MS, "distribution", "ms", "RecordTurnSLIs", "first message received -> turn released"),
    MetricSpec(STAGE_ENRICH_MS, "distribution", "ms", "RecordTurnSLIs", "customer-context lookup"),
    MetricSpec(STAGE_MODEL_MS, "distribution", "ms", "RecordTurnSLIs", "model call(s), retries included"),
    MetricSpec(STAGE_TOOLS_MS, "distribution", "ms", "RecordTurnSLIs", "tool calls"),
    MetricSpec(HANDOFFS, "counter", "turns", "RecordTurnSLIs", "replies of kind handoff"),
    MetricSpec(MODEL_ERRORS, "counter", "turns", "RecordTurnSLIs", "replies of kind error (the model failed the turn)"),
    MetricSpec(DEAD_LETTERS, "counter", "messages", "RecordDeadLetters", "dead letters published, all stages"),
    MetricSpec(
        DEAD_LETTERS_BY_STAGE,
        "counter",
        "messages",
        "RecordDeadLetters",
        "dead letters of one stage, e.g. sli_dead_letters_ParseInbound",
    ),
    MetricSpec(
        RETRIES,
        "counter",
        "attempts",
        "retry_hook() / count_retry()",
        "retried calls of one component, e.g. sli_retries_firestore (Gemini also has supportflow_gemini counters)",
    ),
    MetricSpec(FRESHNESS_PROBES, "counter", "observations", "FreshnessProbe", "observations of an unanswered session"),
    MetricSpec(
        UNANSWERED_OVER_FRESHNESS_SLO,
        "counter",
        "observations",
        "FreshnessProbe",
        "observations where the oldest unanswered message was older than --slo_freshness_s (freshness SLO)",
    ),
    MetricSpec(
        OLDEST_UNANSWERED_AGE_MS,
        "distribution",
        "ms",
        "FreshnessProbe",
        "age of a session's oldest unanswered user message when observed (data freshness)",
    ),
)


def _ms(value: float) -> int:
    return max(0, int(round(value)))


class TurnSLIs:
    """The per-turn SLIs; create once per DoFn (in ``__init__``), call ``record`` per reply."""

    def __init__(self, latency_slo_s: float) -> None:
        self.latency_slo_ms = latency_slo_s * 1000.0
        self.answered = Metrics.counter(NAMESPACE, TURNS_ANSWERED)
        self.slow = Metrics.counter(NAMESPACE, TURNS_OVER_LATENCY_SLO)
        self.latency = Metrics.distribution(NAMESPACE, TURN_LATENCY_MS)
        self.queue = Metrics.distribution(NAMESPACE, STAGE_QUEUE_MS)
        self.enrich = Metrics.distribution(NAMESPACE, STAGE_ENRICH_MS)
        self.model = Metrics.distribution(NAMESPACE, STAGE_MODEL_MS)
        self.tools = Metrics.distribution(NAMESPACE, STAGE_TOOLS_MS)
        self.handoffs = Metrics.counter(NAMESPACE, HANDOFFS)
        self.model_errors = Metrics.counter(NAMESPACE, MODEL_ERRORS)

    def record(self, reply: AgentReply) -> None:
        t = reply.timings
        self.answered.inc()
        self.latency.update(_ms(t.total_ms))
        if t.total_ms > self.latency_slo_ms:
            self.slow.inc()
        self.queue.update(_ms(t.queue_ms))
        self.enrich.update(_ms(t.enrich_ms))
        self.model.update(_ms(t.model_ms))
        self.tools.update(_ms(t.tools_ms))
        if reply.kind == ReplyKind.HANDOFF:
            self.handoffs.inc()
        elif reply.kind == ReplyKind.ERROR:
            self.model_errors.inc()


class RecordTurnSLIs(beam.DoFn):
    """Pass-through: ``AgentReply`` in, the same reply out; records the turn SLIs."""

    def __init__(self, latency_slo_s: float) -> None:
        self.sli = TurnSLIs(latency_slo_s)

    def process(self, reply: AgentReply) -> Iterator[AgentReply]:
        self.sli.record(reply)
        yield reply


def record_dead_letter(dead_letter: DeadLetter) -> None:
    Metrics.counter(NAMESPACE, DEAD_LETTERS).inc()
    stage = "".join(c if c.isalnum() or c == "_" else "_" for c in (dead_letter.stage or "unknown"))
    Metrics.counter(NAMESPACE, DEAD_LETTERS_BY_STAGE.format(stage=stage)).inc()


class RecordDeadLetters(beam.DoFn):
    """Pass-through: ``DeadLetter`` in, the same dead letter out; counts it (total and per stage)."""

    def process(self, dead_letter: DeadLetter) -> Iterator[DeadLetter]:
        record_dead_letter(dead_letter)
        yield dead_letter


def count_retry(component: str, n: int = 1) -> None:
    """One more retry of ``component`` (e.g. "firestore", "bigquery"); call it where the retry happens."""
    Metrics.counter(NAMESPACE, RETRIES.format(component=component)).inc(n)


def _count_retry_hook(component: str, _retry_state: Any) -> None:
    count_retry(component)


def retry_hook(component: str) -> Callable[[Any], None]:
    """A tenacity ``before_sleep`` hook counting each retry of ``component``:
    ``Retrying(..., before_sleep=retry_hook("bigtable"))``. Picklable (a partial, not a closure)."""
    return functools.partial(_count_retry_hook, component)


def oldest_unanswered(state: Any) -> float | None:
    """When (session-stage clock, seconds) a session's oldest unanswered user message reached the pipeline.

    ``state`` is ``pipeline.session.SessionState``: its waiting messages (``pending[].arrived``) and the turn
    in flight, by ``in_flight.oldest_arrived`` when the session stage records it (a field with a default:
    state written before it existed still loads) and otherwise its release time, which is at most
    ``max_hold_s`` later than its oldest message. None when nothing is unanswered.
    """
    if state is None:
        return None
    times = [p.arrived for p in getattr(state, "pending", ())]
    in_flight = getattr(state, "in_flight", None)
    if in_flight is not None:
        oldest = getattr(in_flight, "oldest_arrived", None)
        times.append(oldest if oldest is not None else in_flight.released)
    return min(times) if times else None


class FreshnessProbe:
    """Data freshness from inside the session stage.

    A session knows when each of its unanswered messages reached the pipeline
    (``_Pending.arrived``; for the turn in flight, its release time or, better,
    its oldest message's arrival). ``observe(oldest_unanswered, now)`` reports
    one observation; ``next_check(now, deadline)`` is when to look again (the
    turn timer re-armed at ``min(in-flight deadline, now + probe)``), so a stuck
    turn is reported every ``probe_s`` instead of once at its in-flight timeout.
    """

    def __init__(self, freshness_slo_s: float, probe_s: float) -> None:
        self.slo_s = freshness_slo_s
        self.probe_s = probe_s
        self.probes = Metrics.counter(NAMESPACE, FRESHNESS_PROBES)
        self.stale = Metrics.counter(NAMESPACE, UNANSWERED_OVER_FRESHNESS_SLO)
        self.age = Metrics.distribution(NAMESPACE, OLDEST_UNANSWERED_AGE_MS)

    def observe(self, oldest_unanswered: float | None, now: float) -> float | None:
        """Record the age (seconds) of the oldest unanswered message; None (nothing unanswered) records nothing."""
        if oldest_unanswered is None:
            return None
        age_s = max(0.0, now - oldest_unanswered)
        self.probes.inc()
        self.age.update(_ms(age_s * 1000))
        if age_s > self.slo_s:
            self.stale.inc()
        return age_s

    def next_check(self, now: float, deadline: float) -> float:
        return min(deadline, now + self.probe_s)
