"""The session stage: one stateful DoFn that owns each conversation.

Keyed by session id, it receives two kinds of events, merged by key:
the customer's ``InboundMessage``s and the pipeline's own ``AgentReply``s,
read back from the reply topic (the reply topic is both the frontend's
feed and the session's memory, so a reply joins the history only once it
was really published).

States of a session (all in one ``ReadModifyWriteState``)::

    idle ──user msg──▶ collecting ──quiet window / max hold──▶ in flight
      ▲                    ▲                                      │
      │                    └────── reply back, messages waiting ◀─┤
      └─────────────────────────── reply back, nothing waiting ◀──┘
    idle for idle_timeout ──▶ closed (SessionClosed emitted, state cleared)

Rules:
- A message id seen before in this session is dropped and counted.
- Waiting messages are ordered by (sent_at, message_id) when a turn is released.
- A turn is released ``quiet_window_s`` after the last message of a burst, and
  never later than ``max_hold_s`` after its first. While a turn is in flight,
  new messages wait for the next turn. If no reply comes back within
  ``inflight_timeout_s`` the session stops waiting (the agent stage
  dead-letters failures itself, so this only guards a lost reply).
- History keeps the session's first user message (what the customer came
  for) plus the last ``max_history - 1`` entries; older entries are dropped
  and counted in ``Turn.omitted_history``.
- A session whose customer id differs from the one that opened it is never
  merged: that message is dead-lettered (a session only ever sees one
  customer's data).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from contract.messages import AgentReply, DeadLetter, InboundMessage, ReplyKind
from contract.turn import HistoryEntry, Role, SessionClosed, Turn, UserMessage
from pipeline.metrics import FreshnessProbe, oldest_unanswered

CLOSED_TAG = "closed"
DEAD_LETTER_TAG = "dead_letter"

Clock = Callable[[Timestamp], float]

# Timer timestamps have microsecond precision: a timer set for `due` may fire a
# hair before it. Without slack the DoFn would re-arm the same timer forever.
TIMER_SLACK_S = 1e-3


def wall_clock(_ts: Timestamp) -> float:
    """Production clock: the worker's wall time."""
    return time.time()


def element_clock(ts: Timestamp) -> float:
    """Test clock: the element's (or timer's) timestamp stands for "now".

    TestStream's processing time starts at 0 and moves only when the test
    advances it; tests stamp elements with the same times, so timers set from
    this clock fire exactly when the test says.
    """
    return float(ts)


@dataclass(frozen=True)
class SessionConfig:
    quiet_window_s: float = 1.5
    max_hold_s: float = 6.0
    inflight_timeout_s: float = 180.0
    idle_timeout_s: float = 600.0
    max_history: int = 20
    max_seen_ids: int = 2000

    def __post_init__(self) -> None:
        if self.quiet_window_s <= 0 or self.max_hold_s < self.quiet_window_s:
            raise ValueError("need 0 < quiet_window_s <= max_hold_s")
        if self.max_history < 2:
            raise ValueError("max_history must be at least 2 (anchor + latest)")
        if self.max_seen_ids < 1 or self.idle_timeout_s <= 0 or self.inflight_timeout_s <= 0:
            raise ValueError("timeouts and max_seen_ids must be positive")


@dataclass
class _Pending:
    message: UserMessage
    arrived: float


@dataclass
class _InFlight:
    turn_index: int
    released: float
    # Added after launch: a default keeps state written without it loadable (PickleCoder restores __dict__).
    oldest_arrived: float | None = None


@dataclass
class SessionState:
    customer_id: str
    opened: float
    last_activity: float
    next_turn: int = 0
    messages: int = 0
    duplicates: int = 0
    handed_off: bool = False
    pending: list[_Pending] = field(default_factory=list)
    in_flight: _InFlight | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    omitted_history: int = 0
    # Insertion-ordered, bounded: oldest ids fall out first.
    seen: dict[str, None] = field(default_factory=dict)

    def remember(self, message_id: str, bound: int) -> None:
        self.seen[message_id] = None
        while len(self.seen) > bound:
            del self.seen[next(iter(self.seen))]

    def add_history(self, entry: HistoryEntry, bound: int) -> None:
        self.history.append(entry)
        # Keep the anchor (first entry) and the newest bound-1 entries.
        while len(self.history) > bound:
            del self.history[1]
            self.omitted_history += 1

    def release_due(self, cfg: SessionConfig) -> float:
        first = min(p.arrived for p in self.pending)
        last = max(p.arrived for p in self.pending)
        return min(last + cfg.quiet_window_s, first + cfg.max_hold_s)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class SessionDoFn(beam.DoFn):
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
        s.remember(msg.message_id, self.cfg.max_seen_ids)
        s.messages += 1
        s.last_activity = now
        if s.history and msg.sent_at < s.history[-1].at:
            self.late_messages.inc()  # its neighbours were answered already: it joins the next turn
        s.pending.append(_Pending(UserMessage(msg.message_id, msg.text, msg.sent_at), arrived=now))
        if s.in_flight is None:
            turn_timer.set(Timestamp.of(max(now, s.release_due(self.cfg))))
        state.write(s)

    def _on_reply(self, reply: AgentReply, s, now, state, turn_timer) -> None:  # noqa: ANN001
        if s is None or s.in_flight is None or reply.turn_index != s.in_flight.turn_index:
            self.stale_replies.inc()  # redelivered, or the session moved on
            return
        self.freshness.observe(oldest_unanswered(s), now)  # the answered turn's age (and anything waiting)
        s.add_history(HistoryEntry(Role.AGENT, reply.text, reply.turn_index, reply.created_at), self.cfg.max_history)
        s.in_flight = None
        s.last_activity = now
        s.handed_off = s.handed_off or reply.kind == ReplyKind.HANDOFF
        if s.pending:
            turn_timer.set(Timestamp.of(max(now, s.release_due(self.cfg))))
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
        due = s.release_due(self.cfg)
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
            s.add_history(HistoryEntry(Role.USER, m.text, s.next_turn, m.sent_at), self.cfg.max_history)
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
