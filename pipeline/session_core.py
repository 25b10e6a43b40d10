"""The session stage's rules, free of Beam: what a session does with a message, a reply or a timer.

``SessionDoFn`` (pipeline/session.py) drives this core with Beam's state cells and timers;
``SessionSimulator`` (pipeline/session_simulator.py) drives the same core with in-memory ones, so an
eval or a test can replay a conversation at chosen times without a runner.

State is split by how it changes (docs/session-state.md):

- ``meta``: one small cell of scalars (``SessionMeta``), rewritten on each event (~100 bytes);
- ``pending``: a bag of the messages waiting for the next turn, cleared when the turn is released;
- ``history``: a bag, appended to; compacted to "anchor + newest ``max_history - 1``" only once it
  holds ``2 * max_history`` entries, so a turn writes its new entries, not the whole history;
- ``seen``: a bag of 8-byte message-id fingerprints, appended to; once it holds ``2 * max_seen_ids``
  it is rewritten to the newest ``max_seen_ids``. At least the newest ``max_seen_ids`` ids (at most
  twice that) are remembered, and a message writes 8 bytes, not the set.

The meta cell is also where version 0 lived (one pickled ``SessionState`` under the same state
name): a version-0 value read there is migrated into the cells on first touch (``migrate``).

Timers, one per purpose (``Purpose``): turn release, in-flight timeout, freshness probe, idle close.
A timer that fires when its purpose has passed (a reply came back, the session closed) does nothing.
A released turn sets the freshness timer only: while the turn is in flight it fires every ``probe_s``
and, at ``inflight_timeout_s``, times the turn out itself, so a session holds one timer fewer in the
runner (whose timer scan costs per timer held), and the callbacks that may meet a version-0 state (a
message, a reply, the release and idle timers) need not declare the in-flight timer. The in-flight timer
is still handled, for timers set by the code before.
The idle timer is set when a session opens and re-arms itself for ``last_activity + idle_timeout_s``
when it fires early, so events do not rewrite it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from contract.messages import AgentReply, DeadLetter, InboundMessage, ReplyKind
from contract.turn import HistoryEntry, Role, SessionClosed, Turn, UserMessage

# Timer timestamps have microsecond precision: a timer set for `due` may fire a
# hair before it. Without slack the session would re-arm the same timer forever.
TIMER_SLACK_S = 1e-3


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


class Purpose(StrEnum):
    """One timer per purpose; the value is the Beam timer's name ("turn" and "idle" predate the split)."""

    RELEASE = "turn"
    INFLIGHT = "inflight"
    FRESHNESS = "freshness"
    IDLE = "idle"


@dataclass(frozen=True)
class PendingMessage:
    message: UserMessage
    arrived: float  # session-stage clock, seconds


@dataclass(frozen=True)
class InFlight:
    turn_index: int
    released: float
    oldest_arrived: float | None = None


@dataclass(frozen=True)
class SessionMeta:
    """Every scalar of a session: what each event reads first and rewrites (one small cell)."""

    customer_id: str
    opened: float
    last_activity: float
    next_turn: int = 0
    messages: int = 0
    duplicates: int = 0
    handed_off: bool = False
    omitted_history: int = 0  # entries compacted away; the Turn adds those its view leaves out
    history_stored: int = 0  # entries in the history bag
    last_history_at: datetime | None = None  # the newest history entry's time (late-message check)
    pending_count: int = 0
    pending_first: float = 0.0  # arrival of the first / last waiting message (valid when pending_count)
    pending_last: float = 0.0
    in_flight: InFlight | None = None
    seen_stored: int = 0  # fingerprints in the seen bag

    def release_due(self, cfg: SessionConfig) -> float:
        return min(self.pending_last + cfg.quiet_window_s, self.pending_first + cfg.max_hold_s)

    def inflight_due(self, cfg: SessionConfig) -> float:
        """When the turn in flight times out (``in_flight`` must be set)."""
        assert self.in_flight is not None
        return self.in_flight.released + cfg.inflight_timeout_s

    def oldest_unanswered(self) -> float | None:
        """When the oldest unanswered message reached the stage: waiting, or in the turn in flight."""
        times = [self.pending_first] if self.pending_count else []
        if self.in_flight is not None:
            f = self.in_flight
            times.append(f.oldest_arrived if f.oldest_arrived is not None else f.released)
        return min(times) if times else None


# ------------------------------------------------------------------ what the core needs from a runner


class Cell(Protocol):
    def read(self) -> Any: ...
    def write(self, value: Any) -> None: ...
    def clear(self) -> None: ...


class Bag(Protocol):
    def read(self) -> Iterable[Any]: ...
    def add(self, value: Any) -> None: ...
    def clear(self) -> None: ...


@dataclass
class SessionCells:
    """One session's state: Beam's state objects in the DoFn, ``MemoryCell``/``MemoryBag`` in memory.

    ``meta`` reads as a ``SessionMeta``, or as the version-0 ``SessionState`` of a session written before
    the split (the core migrates it).
    """

    meta: Cell
    pending: Bag
    history: Bag
    seen: Bag


class Timers(Protocol):
    def set(self, purpose: Purpose, at: float) -> None: ...


class Hooks:
    """Counters, distributions and the freshness probe. The default keeps counts in a dict."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def distribution(self, name: str, value: int) -> None:
        pass

    def freshness(self, oldest_unanswered: float | None, now: float) -> None:
        pass


class MemoryCell:
    def __init__(self) -> None:
        self.value: Any = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class MemoryBag:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def read(self) -> list[Any]:
        return list(self.items)

    def add(self, value: Any) -> None:
        self.items.append(value)

    def clear(self) -> None:
        self.items = []


def memory_cells() -> SessionCells:
    return SessionCells(MemoryCell(), MemoryBag(), MemoryBag(), MemoryBag())


Output = Turn | DeadLetter | SessionClosed


def fingerprint(message_id: str) -> bytes:
    """8 bytes per remembered id. Two of a session's ids share one with odds ~ n / 2**64 (n ≤ 4,000)."""
    return hashlib.blake2b(message_id.encode(), digest_size=8).digest()


def history_view(stored: list[HistoryEntry], bound: int) -> tuple[list[HistoryEntry], int]:
    """What a Turn shows: the anchor (first entry) and the newest bound-1, and how many that leaves out."""
    if len(stored) <= bound:
        return stored, 0
    return [stored[0], *stored[len(stored) - bound + 1 :]], len(stored) - bound


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# ------------------------------------------------------------------ the rules

Migrate = Callable[[Any, SessionConfig, SessionCells], SessionMeta]


class SessionCore:
    """The session's rules over ``SessionCells`` and ``Timers``; holds no per-session state itself.

    ``probe_s`` is the freshness probe's period while a turn is in flight. ``migrate`` writes a
    version-0 state read from ``cells.meta`` into the cells (pipeline/session_legacy.py).
    """

    def __init__(
        self, config: SessionConfig, probe_s: float = 10.0, hooks: Hooks | None = None, migrate: Migrate | None = None
    ) -> None:
        self.cfg = config
        self.probe_s = probe_s
        self.hooks = hooks or Hooks()
        self.migrate = migrate

    # -- loading (and upgrading) a session

    def _load(self, cells: SessionCells, timers: Timers, now: float) -> SessionMeta | None:
        meta = cells.meta.read()
        if meta is None or isinstance(meta, SessionMeta):
            return meta
        if self.migrate is None:
            raise TypeError(f"session state of an older layout ({type(meta).__name__}) and no migration given")
        meta = self.migrate(meta, self.cfg, cells)
        cells.meta.write(meta)
        # The old single timer did every job: arm each purpose the migrated state still needs.
        if meta.in_flight is not None:
            self._arm_freshness(meta, now, timers)
        elif meta.pending_count:
            timers.set(Purpose.RELEASE, max(now, meta.release_due(self.cfg)))
        timers.set(Purpose.IDLE, max(now, meta.last_activity + self.cfg.idle_timeout_s))
        self.hooks.count("migrated_v0")
        return meta

    # -- events

    def on_message(
        self, session_id: str, msg: InboundMessage, now: float, cells: SessionCells, timers: Timers
    ) -> list[Output]:
        meta = self._load(cells, timers, now)
        out: list[Output] = []
        if meta is None:
            meta = SessionMeta(customer_id=msg.customer_id, opened=now, last_activity=now)
            # Set once per session: when it fires it re-arms for last_activity + idle_timeout_s, so an event
            # does not rewrite it (a timer write saved per event).
            timers.set(Purpose.IDLE, now + self.cfg.idle_timeout_s)
        elif meta.customer_id != msg.customer_id:
            self.hooks.count("customer_mismatch")
            out.append(
                DeadLetter(
                    stage="Sessions",
                    reason="customer_id does not match the customer that opened this session",
                    payload=msg.model_dump_json(),
                    session_id=session_id,
                    message_ids=[msg.message_id],
                )
            )
            return out
        fp = fingerprint(msg.message_id)
        if meta.seen_stored and fp in cells.seen.read():
            self.hooks.count("duplicates")
            cells.meta.write(replace(meta, duplicates=meta.duplicates + 1))
            return out
        meta = self._remember(meta, fp, cells)
        if meta.last_history_at is not None and msg.sent_at < meta.last_history_at:
            self.hooks.count("late_messages")  # its neighbours were answered already: it joins the next turn
        message = UserMessage(msg.message_id, msg.text, msg.sent_at, msg.received_at)
        cells.pending.add(PendingMessage(message, arrived=now))
        first = meta.pending_first if meta.pending_count else now
        meta = replace(
            meta,
            messages=meta.messages + 1,
            last_activity=now,
            pending_count=meta.pending_count + 1,
            pending_first=min(first, now),
            pending_last=max(meta.pending_last, now) if meta.pending_count else now,
        )
        if meta.in_flight is None:
            timers.set(Purpose.RELEASE, max(now, meta.release_due(self.cfg)))
        cells.meta.write(meta)
        return out

    def _remember(self, meta: SessionMeta, fp: bytes, cells: SessionCells) -> SessionMeta:
        cells.seen.add(fp)
        stored = meta.seen_stored + 1
        if stored > 2 * self.cfg.max_seen_ids:  # compaction: amortised, one rewrite per max_seen_ids messages
            keep = list(cells.seen.read())[-self.cfg.max_seen_ids :]
            cells.seen.clear()
            for kept in keep:
                cells.seen.add(kept)
            stored = len(keep)
        return replace(meta, seen_stored=stored)

    def on_reply(self, reply: AgentReply, now: float, cells: SessionCells, timers: Timers) -> list[Output]:
        meta = self._load(cells, timers, now)
        if meta is None or meta.in_flight is None or reply.turn_index != meta.in_flight.turn_index:
            self.hooks.count("stale_replies")  # redelivered, or the session moved on
            return []
        self.hooks.freshness(meta.oldest_unanswered(), now)  # the answered turn's age (and anything waiting)
        entry = HistoryEntry(Role.AGENT, reply.text, reply.turn_index, reply.created_at)
        meta = self._append_history(meta, [entry], cells)
        meta = replace(
            meta, in_flight=None, last_activity=now, handed_off=meta.handed_off or reply.kind == ReplyKind.HANDOFF
        )
        if meta.pending_count:
            timers.set(Purpose.RELEASE, max(now, meta.release_due(self.cfg)))
        cells.meta.write(meta)
        return []

    def _append_history(self, meta: SessionMeta, entries: list[HistoryEntry], cells: SessionCells) -> SessionMeta:
        for e in entries:
            cells.history.add(e)
        stored = meta.history_stored + len(entries)
        omitted = meta.omitted_history
        if stored > 2 * self.cfg.max_history:  # compaction: amortised, one rewrite per max_history appends
            kept, dropped = history_view(list(cells.history.read()), self.cfg.max_history)
            cells.history.clear()
            for e in kept:
                cells.history.add(e)
            stored, omitted = len(kept), omitted + dropped
        return replace(meta, history_stored=stored, omitted_history=omitted, last_history_at=entries[-1].at)

    # -- timers

    def on_timer(
        self, purpose: Purpose, session_id: str, now: float, cells: SessionCells, timers: Timers
    ) -> list[Output]:
        meta = self._load(cells, timers, now)
        if meta is None:
            return []
        if purpose is Purpose.RELEASE:
            return self._on_release(session_id, meta, now, cells, timers)
        if purpose is Purpose.INFLIGHT:
            return self._on_inflight(session_id, meta, now, cells, timers)
        if purpose is Purpose.FRESHNESS:
            return self._on_freshness(session_id, meta, now, cells, timers)
        return self._on_idle(session_id, meta, now, cells, timers)

    def _on_freshness(
        self, session_id: str, meta: SessionMeta, now: float, cells: SessionCells, timers: Timers
    ) -> list[Output]:
        """The probe while a turn is in flight; it also keeps the in-flight deadline (one timer, not two)."""
        if meta.in_flight is None:
            return []
        if now + TIMER_SLACK_S >= meta.inflight_due(self.cfg):
            return self._on_inflight(session_id, meta, now, cells, timers)
        self.hooks.freshness(meta.oldest_unanswered(), now)
        self._arm_freshness(meta, now, timers)
        return []

    def _arm_freshness(self, meta: SessionMeta, now: float, timers: Timers) -> None:
        """The next probe of the turn in flight, never later than its in-flight deadline: the one timer keeps both
        (a timer fewer per session in the runner's store)."""
        timers.set(Purpose.FRESHNESS, min(now + self.probe_s, meta.inflight_due(self.cfg)))

    def _on_release(
        self, session_id: str, meta: SessionMeta, now: float, cells: SessionCells, timers: Timers
    ) -> list[Output]:
        if meta.in_flight is not None or not meta.pending_count:
            return []  # released already, or waiting for the reply (which re-arms this timer)
        due = meta.release_due(self.cfg)
        if now + TIMER_SLACK_S < due:
            timers.set(Purpose.RELEASE, due)
            return []
        return [self._release(session_id, meta, now, cells, timers)]

    def _on_inflight(
        self, session_id: str, meta: SessionMeta, now: float, cells: SessionCells, timers: Timers
    ) -> list[Output]:
        if meta.in_flight is None:
            return []
        deadline = meta.inflight_due(self.cfg)
        if now + TIMER_SLACK_S < deadline:
            timers.set(Purpose.INFLIGHT, deadline)
            return []
        self.hooks.count("inflight_timeouts")
        self.hooks.freshness(meta.oldest_unanswered(), now)
        meta = replace(meta, in_flight=None)
        if meta.pending_count and now + TIMER_SLACK_S >= meta.release_due(self.cfg):
            return [self._release(session_id, meta, now, cells, timers)]
        if meta.pending_count:
            timers.set(Purpose.RELEASE, meta.release_due(self.cfg))
        cells.meta.write(meta)
        return []

    def _release(self, session_id: str, meta: SessionMeta, now: float, cells: SessionCells, timers: Timers) -> Turn:
        self.hooks.freshness(meta.oldest_unanswered(), now)
        pending: list[PendingMessage] = list(cells.pending.read())
        msgs = tuple(sorted((p.message for p in pending), key=lambda m: (m.sent_at, m.message_id)))
        shown, left_out = history_view(list(cells.history.read()), self.cfg.max_history)
        turn = Turn(
            session_id=session_id,
            customer_id=meta.customer_id,
            turn_index=meta.next_turn,
            messages=msgs,
            history=tuple(shown),
            omitted_history=meta.omitted_history + left_out,
            released_at=_at(now),
        )
        meta = self._append_history(
            meta, [HistoryEntry(Role.USER, m.text, meta.next_turn, m.sent_at) for m in msgs], cells
        )
        cells.pending.clear()
        oldest = min(p.arrived for p in pending)
        meta = replace(
            meta,
            pending_count=0,
            pending_first=0.0,
            pending_last=0.0,
            in_flight=InFlight(turn_index=meta.next_turn, released=now, oldest_arrived=oldest),
            next_turn=meta.next_turn + 1,
            last_activity=now,
        )
        cells.meta.write(meta)
        self._arm_freshness(meta, now, timers)
        self.hooks.count("turns")
        self.hooks.distribution("burst_size", len(msgs))
        self.hooks.distribution("history_size", min(meta.history_stored, self.cfg.max_history))
        return turn

    def _on_idle(self, session_id: str, meta: SessionMeta, now: float, cells: SessionCells, timers: Timers) -> list:
        due = meta.last_activity + self.cfg.idle_timeout_s
        if meta.pending_count or meta.in_flight is not None or now + TIMER_SLACK_S < due:
            timers.set(Purpose.IDLE, max(due, now + 1.0))
            return []
        self.hooks.count("closed")
        self.hooks.distribution("session_turns", meta.next_turn)
        self.hooks.distribution("session_length_s", int(meta.last_activity - meta.opened))
        closed = SessionClosed(
            session_id=session_id,
            customer_id=meta.customer_id,
            turns=meta.next_turn,
            messages=meta.messages,
            duplicates=meta.duplicates,
            opened_at=_at(meta.opened),
            closed_at=_at(now),
            outcome="handoff" if meta.handed_off else "idle",
        )
        for c in (cells.meta, cells.pending, cells.history, cells.seen):
            c.clear()
        return [closed]


__all__ = [
    "TIMER_SLACK_S",
    "Hooks",
    "InFlight",
    "MemoryBag",
    "MemoryCell",
    "Output",
    "PendingMessage",
    "Purpose",
    "SessionCells",
    "SessionConfig",
    "SessionCore",
    "SessionMeta",
    "Timers",
    "fingerprint",
    "history_view",
    "memory_cells",
]
