"""The session stage: one stateful DoFn that owns each conversation.

Keyed by session id, it receives two kinds of events, merged by key:
the customer's ``InboundMessage``s and the pipeline's own ``AgentReply``s,
read back from the reply topic (the reply topic is both the frontend's
feed and the session's memory, so a reply joins the history only once it
was really published).

States of a session::

    idle ──user msg──▶ collecting ──quiet window / max hold──▶ in flight
      ▲                    ▲                                      │
      │                    └────── reply back, messages waiting ◀─┤
      └─────────────────────────── reply back, nothing waiting ◀──┘
    idle for idle_timeout ──▶ closed (SessionClosed emitted, state cleared)

Rules (``pipeline/session_core.py`` holds them, free of Beam; this DoFn drives it):
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

State is split by how it changes, each part in explicit versioned bytes
(``pipeline/session_codec.py``; layout, sizes and the upgrade rule: docs/session-state.md):
``session`` (the scalars, one cell; where version 0 kept its one pickle, which the coder
still reads, to migrate), ``pending`` (bag), ``history`` (bag, appended), ``seen``
(bag of message-id fingerprints).
Timers, one per purpose: ``turn`` (release), ``inflight``, ``freshness``, ``idle``. A released turn sets
``freshness`` alone (it keeps the in-flight deadline too); ``inflight`` still fires for timers set before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder, Coder, FastPrimitivesCoder, registry
from apache_beam.coders.coders import DeterministicFastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from contract.dead_letters import DEAD_LETTER_TAG
from contract.messages import InboundMessage
from contract.turn import SessionClosed, Turn
from pipeline import session_codec as codec
from pipeline.metrics import FreshnessProbe
from pipeline.session_core import TIMER_SLACK_S, Hooks, Output, Purpose, SessionCells, SessionConfig, SessionCore
from pipeline.session_legacy import SessionState, _InFlight, _Pending, migrate_v0

CLOSED_TAG = "closed"

Clock = Callable[[Timestamp], float]

__all__ = [
    "CLOSED_TAG",
    "DEAD_LETTER_TAG",
    "SESSION_EVENT",
    "TIMER_SLACK_S",
    "SessionConfig",
    "SessionDoFn",
    "SessionKey",
    "SessionKeyCoder",
    "SessionState",
    "_InFlight",
    "_Pending",
    "element_clock",
    "wall_clock",
]


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


# ---------------------------------------------------------------- the session key


class SessionKey(str):
    """The session stage's key (a session id), as a type hint: it selects ``SessionKeyCoder``.

    Keys stay plain ``str`` at run time; only the declared type of the keyed events
    (``SESSION_EVENT``, on MergeSessionEvents in pipeline/graph.py) names this class.
    """


class SessionKeyCoder(DeterministicFastPrimitivesCoder):
    """Deterministic key coder for the session state: the exact bytes ``FastPrimitivesCoder`` wrote for a str key.

    Beam warned that the inferred key coder (FastPrimitivesCoder for an untyped input) "may not be
    deterministic". ``StrUtf8Coder`` would be deterministic too, but its bytes differ (no type tag), so
    state stored under the old key bytes would no longer be found after an update; this coder keeps them.
    It fails at encode time on anything that is not deterministically encodable.
    """

    def __init__(self) -> None:
        super().__init__(FastPrimitivesCoder(), "Sessions")

    def to_type_hint(self) -> type:
        return SessionKey


registry.register_coder(SessionKey, SessionKeyCoder)
SESSION_EVENT = tuple[SessionKey, Any]  # what the session stage consumes: (session id, InboundMessage | AgentReply)


# ---------------------------------------------------------------- coders: the version-1 records as Beam coders


class _RecordCoder(Coder):
    """A state coder over one of session_codec's record encodings (deterministic: bytes depend on values only)."""

    encode_fn: Callable[[Any], bytes]
    decode_fn: Callable[[bytes], Any]

    def encode(self, value: Any) -> bytes:
        return type(self).encode_fn(value)

    def decode(self, encoded: bytes) -> Any:
        return type(self).decode_fn(encoded)

    def is_deterministic(self) -> bool:
        return True


class SessionMetaCoder(_RecordCoder):
    """The ``session`` cell: writes version 1's meta; reads it, or version 0's pickle (to be migrated)."""

    encode_fn = staticmethod(codec.encode_meta)
    decode_fn = staticmethod(codec.decode_session_cell)


class PendingMessageCoder(_RecordCoder):
    encode_fn = staticmethod(codec.encode_pending)
    decode_fn = staticmethod(codec.decode_pending)


class HistoryEntryCoder(_RecordCoder):
    encode_fn = staticmethod(codec.encode_history)
    decode_fn = staticmethod(codec.decode_history)


# ---------------------------------------------------------------- Beam's side of the core's interfaces


class _BeamHooks(Hooks):
    """The core's counters as Beam metrics (namespace ``session``), and the freshness SLI probe."""

    COUNTERS = (
        "duplicates",
        "turns",
        "stale_replies",
        "inflight_timeouts",
        "late_messages",
        "customer_mismatch",
        "closed",
        "migrated_v0",
    )
    DISTRIBUTIONS = ("burst_size", "history_size", "session_turns", "session_length_s")

    def __init__(self, freshness: FreshnessProbe) -> None:
        super().__init__()
        self.probe = freshness
        self.counters = {n: Metrics.counter("session", n) for n in self.COUNTERS}
        self.distributions = {n: Metrics.distribution("session", n) for n in self.DISTRIBUTIONS}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name].inc(n)

    def distribution(self, name: str, value: int) -> None:
        self.distributions[name].update(value)

    def freshness(self, oldest_unanswered: float | None, now: float) -> None:
        self.probe.observe(oldest_unanswered, now)


class _BeamTimers:
    """The timers a callback declared; setting one it did not declare is a bug, and says so."""

    __slots__ = ("_timers",)

    def __init__(self, **timers: Any) -> None:  # noqa: ANN401 - Beam's runtime timers
        self._timers = {Purpose[name.upper()]: t for name, t in timers.items()}

    def set(self, purpose: Purpose, at: float) -> None:
        timer = self._timers.get(purpose)
        if timer is None:
            raise RuntimeError(f"this callback does not declare the {purpose.value!r} timer")
        timer.set(Timestamp.of(at))


class _Undeclared:
    """A state cell a callback does not declare (the runner builds and commits each declared one per call)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _refuse(self, *_: Any) -> Any:  # noqa: ANN401
        raise RuntimeError(f"this callback does not declare the {self.name!r} state")

    read = write = add = clear = _refuse


def _tagged(outputs: list[Output]) -> Iterator:
    for o in outputs:
        if isinstance(o, Turn):
            yield o
        elif isinstance(o, SessionClosed):
            yield beam.pvalue.TaggedOutput(CLOSED_TAG, o)
        else:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, o)


class SessionDoFn(beam.DoFn):
    """Input: ``(session_id, InboundMessage | AgentReply)``. Output: ``Turn``;
    tagged ``closed`` -> ``SessionClosed``, ``dead_letter`` -> ``DeadLetter``."""

    META = ReadModifyWriteStateSpec("session", SessionMetaCoder())  # the name version 0's one cell had
    PENDING = BagStateSpec("pending", PendingMessageCoder())
    HISTORY = BagStateSpec("history", HistoryEntryCoder())
    SEEN = BagStateSpec("seen", BytesCoder())
    RELEASE_TIMER = TimerSpec(Purpose.RELEASE.value, TimeDomain.REAL_TIME)
    INFLIGHT_TIMER = TimerSpec(Purpose.INFLIGHT.value, TimeDomain.REAL_TIME)
    FRESHNESS_TIMER = TimerSpec(Purpose.FRESHNESS.value, TimeDomain.REAL_TIME)
    IDLE_TIMER = TimerSpec(Purpose.IDLE.value, TimeDomain.REAL_TIME)

    def __init__(
        self, config: SessionConfig, clock: Clock = wall_clock, freshness: FreshnessProbe | None = None
    ) -> None:
        self.cfg = config
        self.clock = clock
        self.freshness = freshness or FreshnessProbe(freshness_slo_s=60.0, probe_s=10.0)
        self.core = SessionCore(
            config, probe_s=self.freshness.probe_s, hooks=_BeamHooks(self.freshness), migrate=migrate_v0
        )

    def process(
        self,
        element: tuple[str, Any],
        ts: Timestamp = beam.DoFn.TimestampParam,
        meta=beam.DoFn.StateParam(META),  # noqa: ANN001, B008 - Beam's parameter markers
        pending=beam.DoFn.StateParam(PENDING),  # noqa: ANN001, B008
        history=beam.DoFn.StateParam(HISTORY),  # noqa: ANN001, B008
        seen=beam.DoFn.StateParam(SEEN),  # noqa: ANN001, B008
        release=beam.DoFn.TimerParam(RELEASE_TIMER),  # noqa: ANN001, B008
        fresh=beam.DoFn.TimerParam(FRESHNESS_TIMER),  # noqa: ANN001, B008
        idle=beam.DoFn.TimerParam(IDLE_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        session_id, event = element
        now = self.clock(ts)
        cells = SessionCells(meta, pending, history, seen)
        timers = _BeamTimers(release=release, freshness=fresh, idle=idle)
        if isinstance(event, InboundMessage):
            out = self.core.on_message(session_id, event, now, cells, timers)
        else:
            out = self.core.on_reply(event, now, cells, timers)
        yield from _tagged(out)

    def _timer(self, purpose: Purpose, key: str, ts: Timestamp, *states: Any) -> Iterator:  # noqa: ANN401
        meta, pending, history, seen, release, fresh, idle = states
        cells = SessionCells(meta, pending, history, seen)
        timers = _BeamTimers(release=release, freshness=fresh, idle=idle)
        yield from _tagged(self.core.on_timer(purpose, key, self.clock(ts), cells, timers))

    def _in_flight_timer(
        self,
        purpose: Purpose,
        key: str,
        ts: Timestamp,
        cells: SessionCells,
        **timers: Any,  # noqa: ANN401
    ) -> Iterator:
        yield from _tagged(self.core.on_timer(purpose, key, self.clock(ts), cells, _BeamTimers(**timers)))

    @on_timer(RELEASE_TIMER)
    def on_release_timer(
        self,
        key: str = beam.DoFn.KeyParam,
        ts: Timestamp = beam.DoFn.TimestampParam,
        meta=beam.DoFn.StateParam(META),  # noqa: ANN001, B008
        pending=beam.DoFn.StateParam(PENDING),  # noqa: ANN001, B008
        history=beam.DoFn.StateParam(HISTORY),  # noqa: ANN001, B008
        seen=beam.DoFn.StateParam(SEEN),  # noqa: ANN001, B008
        release=beam.DoFn.TimerParam(RELEASE_TIMER),  # noqa: ANN001, B008
        fresh=beam.DoFn.TimerParam(FRESHNESS_TIMER),  # noqa: ANN001, B008
        idle=beam.DoFn.TimerParam(IDLE_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        states = (meta, pending, history, seen, release, fresh, idle)
        yield from self._timer(Purpose.RELEASE, key, ts, *states)

    # The in-flight and freshness timers exist only from version 1 on, so they never meet a version-0 state
    # (which the migration spreads over every cell): they declare what a turn in flight needs, and no more
    # (the seen ids and the idle timer are not touched there).
    @on_timer(INFLIGHT_TIMER)
    def on_inflight_timer(
        self,
        key: str = beam.DoFn.KeyParam,
        ts: Timestamp = beam.DoFn.TimestampParam,
        meta=beam.DoFn.StateParam(META),  # noqa: ANN001, B008
        pending=beam.DoFn.StateParam(PENDING),  # noqa: ANN001, B008
        history=beam.DoFn.StateParam(HISTORY),  # noqa: ANN001, B008
        release=beam.DoFn.TimerParam(RELEASE_TIMER),  # noqa: ANN001, B008
        inflight=beam.DoFn.TimerParam(INFLIGHT_TIMER),  # noqa: ANN001, B008
        fresh=beam.DoFn.TimerParam(FRESHNESS_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        cells = SessionCells(meta, pending, history, _Undeclared(self.SEEN.name))
        timers = {"release": release, "inflight": inflight, "freshness": fresh}
        yield from self._in_flight_timer(Purpose.INFLIGHT, key, ts, cells, **timers)

    @on_timer(FRESHNESS_TIMER)
    def on_freshness_timer(
        self,
        key: str = beam.DoFn.KeyParam,
        ts: Timestamp = beam.DoFn.TimestampParam,
        meta=beam.DoFn.StateParam(META),  # noqa: ANN001, B008
        pending=beam.DoFn.StateParam(PENDING),  # noqa: ANN001, B008
        history=beam.DoFn.StateParam(HISTORY),  # noqa: ANN001, B008
        release=beam.DoFn.TimerParam(RELEASE_TIMER),  # noqa: ANN001, B008
        fresh=beam.DoFn.TimerParam(FRESHNESS_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        cells = SessionCells(meta, pending, history, _Undeclared(self.SEEN.name))
        yield from self._in_flight_timer(Purpose.FRESHNESS, key, ts, cells, release=release, freshness=fresh)

    @on_timer(IDLE_TIMER)
    def on_idle_timer(
        self,
        key: str = beam.DoFn.KeyParam,
        ts: Timestamp = beam.DoFn.TimestampParam,
        meta=beam.DoFn.StateParam(META),  # noqa: ANN001, B008
        pending=beam.DoFn.StateParam(PENDING),  # noqa: ANN001, B008
        history=beam.DoFn.StateParam(HISTORY),  # noqa: ANN001, B008
        seen=beam.DoFn.StateParam(SEEN),  # noqa: ANN001, B008
        release=beam.DoFn.TimerParam(RELEASE_TIMER),  # noqa: ANN001, B008
        fresh=beam.DoFn.TimerParam(FRESHNESS_TIMER),  # noqa: ANN001, B008
        idle=beam.DoFn.TimerParam(IDLE_TIMER),  # noqa: ANN001, B008
    ) -> Iterator:
        states = (meta, pending, history, seen, release, fresh, idle)
        yield from self._timer(Purpose.IDLE, key, ts, *states)
