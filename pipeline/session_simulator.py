"""Sessions without a runner: the session stage's own rules (``SessionCore``) on in-memory state.

For evals and tests that need the stage's timing (quiet window, max hold, in-flight timeout,
idle close) at chosen times, without Beam. Time is the caller's: every call names "now",
and timers fire at exactly their due time, in time order, before an event at a later time.

    sim = SessionSimulator(SessionConfig(quiet_window_s=1.5))
    sim.message(msg, at=0.0)
    sim.advance_to(2.0)           # the quiet window passed: sim.turns has the turn
    sim.reply(reply, at=3.0)
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from contract.messages import AgentReply, DeadLetter, InboundMessage
from contract.turn import SessionClosed, Turn
from pipeline.session_core import Hooks, Output, Purpose, SessionCells, SessionConfig, SessionCore, memory_cells


@dataclass
class _SessionTimers:
    """Timers of one session: one due time per purpose; setting one again replaces it (as in Beam)."""

    owner: SessionSimulator
    session_id: str
    due: dict[Purpose, float] = field(default_factory=dict)

    def set(self, purpose: Purpose, at: float) -> None:
        self.due[purpose] = at
        self.owner._schedule(self.session_id, purpose, at)


class SessionSimulator:
    """Many sessions, keyed by session id, each with in-memory cells and timers."""

    def __init__(self, config: SessionConfig, probe_s: float = 10.0, hooks: Hooks | None = None) -> None:
        self.core = SessionCore(config, probe_s=probe_s, hooks=hooks)
        self.now = float("-inf")
        self.cells: dict[str, SessionCells] = {}
        self.timers: dict[str, _SessionTimers] = {}
        self._queue: list[tuple[float, int, str, Purpose]] = []
        self._sequence = itertools.count()  # ties in time fire in the order scheduled
        self.turns: list[Turn] = []
        self.dead_letters: list[DeadLetter] = []
        self.closed: list[SessionClosed] = []

    @property
    def counts(self) -> dict[str, int]:
        return self.core.hooks.counts

    # -- events

    def message(self, msg: InboundMessage, at: float) -> list[Output]:
        """Timers due by ``at`` fire first; then the message arrives at ``at``."""
        out = self.advance_to(at)
        cells, timers = self._session(msg.session_id)
        return out + self._collect(self.core.on_message(msg.session_id, msg, at, cells, timers))

    def reply(self, reply: AgentReply, at: float) -> list[Output]:
        out = self.advance_to(at)
        cells, timers = self._session(reply.session_id)
        return out + self._collect(self.core.on_reply(reply, at, cells, timers))

    def advance_to(self, t: float) -> list[Output]:
        """Fire every timer due at or before ``t``, each at its own due time; returns what they emitted."""
        if t < self.now:
            raise ValueError(f"time goes backwards: {t} < {self.now}")
        out: list[Output] = []
        while self._queue and self._queue[0][0] <= t:
            at, _, session_id, purpose = heapq.heappop(self._queue)
            timers = self.timers[session_id]
            if timers.due.get(purpose) != at:
                continue  # replaced by a later set
            del timers.due[purpose]
            self.now = max(self.now, at)
            out += self._collect(self.core.on_timer(purpose, session_id, at, self.cells[session_id], timers))
        self.now = t
        return out

    def next_due(self) -> float | None:
        """The earliest live timer, or None when nothing is scheduled."""
        while self._queue:
            at, _, session_id, purpose = self._queue[0]
            if self.timers[session_id].due.get(purpose) == at:
                return at
            heapq.heappop(self._queue)
        return None

    def open_sessions(self) -> list[str]:
        return [k for k, c in self.cells.items() if c.meta.read() is not None]

    # -- internals

    def _session(self, session_id: str) -> tuple[SessionCells, _SessionTimers]:
        if session_id not in self.cells:
            self.cells[session_id] = memory_cells()
            self.timers[session_id] = _SessionTimers(self, session_id)
        return self.cells[session_id], self.timers[session_id]

    def _schedule(self, session_id: str, purpose: Purpose, at: float) -> None:
        heapq.heappush(self._queue, (at, next(self._sequence), session_id, purpose))

    def _collect(self, outputs: list[Output]) -> list[Output]:
        for o in outputs:
            if isinstance(o, Turn):
                self.turns.append(o)
            elif isinstance(o, DeadLetter):
                self.dead_letters.append(o)
            else:
                self.closed.append(o)
        return outputs
