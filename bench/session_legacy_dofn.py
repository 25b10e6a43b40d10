"""The session DoFn as it was before the state split (layout version 0), kept runnable for the benchmark.

``bench/session_state.py --layout legacy`` runs this next to today's ``pipeline.session.SessionDoFn``,
so the before and after byte counts come from the same run. Its code is the pre-split DoFn's (commit
ce1a419), unchanged but for its imports and the receipt time a ``UserMessage`` carries since: one
pickled ``SessionState`` in one ``ReadModifyWriteState``, rewritten whole on every event, and one timer
doing the work of three. Not used by the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from contract.dead_letters import DEAD_LETTER_TAG
from contract.messages import AgentReply, DeadLetter, InboundMessage, ReplyKind
from contract.turn import HistoryEntry, Role, SessionClosed, Turn, UserMessage
from pipeline.metrics import FreshnessProbe, oldest_unanswered
from pipeline.session import CLOSED_TAG, Clock, wall_clock
from pipeline.session_core import TIMER_SLACK_S, SessionConfig
from pipeline.session_legacy import SessionState, _InFlight, _Pending


def _remember(s: SessionState, message_id: str, bound: int) -> None:
    s.seen[message_id] = None
    while len(s.seen) > bound:
        del s.seen[next(iter(s.seen))]


def _add_history(s: SessionState, entry: HistoryEntry, bound: int) -> None:
    s.history.append(entry)
    while len(s.history) > bound:
        del s.history[1]
        s.omitted_history += 1


def _release_due(s: SessionState, cfg: SessionConfig) -> float:
    first = min(p.arrived for p in s.pending)
    last = max(p.arrived for p in s.pending)
    return min(last + cfg.quiet_window_s, first + cfg.max_hold_s)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class LegacySessionDoFn(beam.DoFn):
    """Input: ``(session_id, InboundMessage | AgentReply)``. Output: ``Turn``;
    tagged ``closed`` -> ``SessionClosed``, ``dead_letter`` -> ``DeadLetter``."""

    STATE = ReadModifyWriteStateSpec("session", PickleCoder())
    TURN_TIMER = TimerSpec("turn", TimeDomain.REAL_TIME)
    IDLE_TIMER = TimerSpec("idle", TimeDomain.REAL_TIME)

    def __init__(
        self, config: SessionConfig, clock: Clock = wall_clock, freshness: FreshnessProbe | None = None
    ) -> None:
        self.cfg = config
        self.clock = clock
        self.freshness = freshness or FreshnessProbe(freshness_slo_s=60.0, probe_s=10.0)
        self.duplicates = Metrics.counter("session", "duplicates")
        self.turns = Metrics.counter("session", "turns")
        self.stale_replies = Metrics.counter("session", "stale_replies")
        self.inflight_timeouts = Metrics.counter("session", "inflight_timeouts")
        self.late_messages = Metrics.counter("session", "late_messages")
        self.customer_mismatch = Metrics.counter("session", "customer_mismatch")
        self.closed = Metrics.counter("session", "closed")
        self.burst_size = Metrics.distribution("session", "burst_size")
        self.history_size = Metrics.distribution("session", "history_size")
        self.session_turns = Metrics.distribution("session", "session_turns")
        self.session_length_s = Metrics.distribution("session", "session_length_s")

    def process(
        self,
        element: tuple[str, InboundMessage | AgentReply],
        ts: Timestamp = beam.DoFn.TimestampParam,
        state=beam.DoFn.StateParam(STATE),  # noqa: ANN001, B008 - Beam's parameter markers
        turn_timer=beam.DoFn.TimerParam(TURN_TIMER),  # noqa: ANN001, B008
        idle_timer=beam.DoFn.TimerParam(IDLE_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        session_id, event = element
        now = self.clock(ts)
        s: SessionState | None = state.read()
        if isinstance(event, InboundMessage):
            yield from self._on_message(session_id, event, s, now, state, turn_timer)
        else:
            self._on_reply(event, s, now, state, turn_timer)
        if state.read() is not None:
            idle_timer.set(Timestamp.of(now + self.cfg.idle_timeout_s))

    def _on_message(self, session_id, msg: InboundMessage, s, now, state, turn_timer) -> Iterator:  # noqa: ANN001
        if s is None:
            s = SessionState(customer_id=msg.customer_id, opened=now, last_activity=now)
        elif s.customer_id != msg.customer_id:
            self.customer_mismatch.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                DeadLetter(
                    stage="Sessions",
                    reason="customer_id does not match the customer that opened this session",
                    payload=msg.model_dump_json(),
                    session_id=session_id,
                    message_ids=[msg.message_id],
                ),
            )
            return
        if msg.message_id in s.seen:
            self.duplicates.inc()
            s.duplicates += 1
            state.write(s)
            return
        _remember(s, msg.message_id, self.cfg.max_seen_ids)
        s.messages += 1
        s.last_activity = now
        if s.history and msg.sent_at < s.history[-1].at:
            self.late_messages.inc()  # its neighbours were answered already: it joins the next turn
        s.pending.append(_Pending(UserMessage(msg.message_id, msg.text, msg.sent_at, msg.received_at), arrived=now))
        if s.in_flight is None:
            turn_timer.set(Timestamp.of(max(now, _release_due(s, self.cfg))))
        state.write(s)

    def _on_reply(self, reply: AgentReply, s, now, state, turn_timer) -> None:  # noqa: ANN001
        if s is None or s.in_flight is None or reply.turn_index != s.in_flight.turn_index:
            self.stale_replies.inc()  # redelivered, or the session moved on
            return
        self.freshness.observe(oldest_unanswered(s), now)  # the answered turn's age (and anything waiting)
        _add_history(s, HistoryEntry(Role.AGENT, reply.text, reply.turn_index, reply.created_at), self.cfg.max_history)
        s.in_flight = None
        s.last_activity = now
        s.handed_off = s.handed_off or reply.kind == ReplyKind.HANDOFF
        if s.pending:
            turn_timer.set(Timestamp.of(max(now, _release_due(s, self.cfg))))
        state.write(s)

    @on_timer(TURN_TIMER)
    def on_turn_timer(
        self,
        key: str = beam.DoFn.KeyParam,
        ts: Timestamp = beam.DoFn.TimestampParam,
        state=beam.DoFn.StateParam(STATE),  # noqa: ANN001, B008
        turn_timer=beam.DoFn.TimerParam(TURN_TIMER),  # noqa: ANN001, B008
    ) -> Iterator[Turn]:
        now = self.clock(ts)
        s: SessionState | None = state.read()
        if s is None:
            return
        self.freshness.observe(oldest_unanswered(s), now)
        if s.in_flight is not None:
            deadline = s.in_flight.released + self.cfg.inflight_timeout_s
            if now + TIMER_SLACK_S < deadline:
                turn_timer.set(Timestamp.of(self.freshness.next_check(now, deadline)))
                return
            self.inflight_timeouts.inc()
            s.in_flight = None
        if not s.pending:
            state.write(s)
            return
        due = _release_due(s, self.cfg)
        if now + TIMER_SLACK_S < due:
            turn_timer.set(Timestamp.of(due))
            state.write(s)
            return
        yield self._release(key, s, now)
        turn_timer.set(Timestamp.of(self.freshness.next_check(now, now + self.cfg.inflight_timeout_s)))
        state.write(s)

    def _release(self, session_id: str, s: SessionState, now: float) -> Turn:
        msgs = tuple(sorted((p.message for p in s.pending), key=lambda m: (m.sent_at, m.message_id)))
        turn = Turn(
            session_id=session_id,
            customer_id=s.customer_id,
            turn_index=s.next_turn,
            messages=msgs,
            history=tuple(s.history),
            omitted_history=s.omitted_history,
            released_at=_at(now),
        )
        for m in msgs:
            _add_history(s, HistoryEntry(Role.USER, m.text, s.next_turn, m.sent_at), self.cfg.max_history)
        oldest = min(p.arrived for p in s.pending)
        s.pending = []
        s.in_flight = _InFlight(turn_index=s.next_turn, released=now, oldest_arrived=oldest)
        s.next_turn += 1
        s.last_activity = now
        self.turns.inc()
        self.burst_size.update(len(msgs))
        self.history_size.update(len(s.history))
        return turn

    @on_timer(IDLE_TIMER)
    def on_idle_timer(
        self,
        key: str = beam.DoFn.KeyParam,
        ts: Timestamp = beam.DoFn.TimestampParam,
        state=beam.DoFn.StateParam(STATE),  # noqa: ANN001, B008
        idle_timer=beam.DoFn.TimerParam(IDLE_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        now = self.clock(ts)
        s: SessionState | None = state.read()
        if s is None:
            return
        due = s.last_activity + self.cfg.idle_timeout_s
        if s.pending or s.in_flight is not None or now + TIMER_SLACK_S < due:
            idle_timer.set(Timestamp.of(max(due, now + 1.0)))
            return
        self.closed.inc()
        self.session_turns.update(s.next_turn)
        self.session_length_s.update(int(s.last_activity - s.opened))
        yield beam.pvalue.TaggedOutput(
            CLOSED_TAG,
            SessionClosed(
                session_id=key,
                customer_id=s.customer_id,
                turns=s.next_turn,
                messages=s.messages,
                duplicates=s.duplicates,
                opened_at=_at(s.opened),
                closed_at=_at(now),
                outcome="handoff" if s.handed_off else "idle",
            ),
        )
        state.clear()
