"""Live operator counts, from what this web process receives on the reply and dead-letter topics.

Everything is counted by *arrival* time at this process (the operator's "now"),
in one-minute buckets kept for ``window_minutes``; latency figures come from
the replies' own ``timings.total_ms`` (first user message sent -> reply built).
Counts cover every session on the reply topic, not only this process's chats,
and start when the process (and so its subscriptions) started.

A reply Pub/Sub delivers twice is counted once (bounded memory of turn ids).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from contract.messages import AgentReply, ReplyKind

DEFAULT_WINDOW_MINUTES = 30
LATENCY_WINDOW_S = 300.0  # p50/p99 headline: replies received in the last 5 minutes
MAX_LATENCY_SAMPLES = 20_000
MAX_SEEN_TURNS = 50_000
RECENT_DEAD_LETTERS = 20


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ascending = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ascending)))
    return ascending[min(rank, len(ascending)) - 1]


@dataclass
class _Minute:
    start: int  # epoch seconds, multiple of 60
    turns: int = 0
    handoffs: int = 0
    errors: int = 0
    dead_letters: int = 0
    latencies: list[float] = field(default_factory=list)


class OpsStats:
    def __init__(self, window_minutes: int = DEFAULT_WINDOW_MINUTES, clock: Any = time.time) -> None:
        self.window_minutes = window_minutes
        self._clock = clock
        self._lock = threading.Lock()
        self._minutes: deque[_Minute] = deque()
        self._latencies: deque[tuple[float, float]] = deque(maxlen=MAX_LATENCY_SAMPLES)  # (received_at, total_ms)
        self._seen_turns: OrderedDict[str, None] = OrderedDict()
        self._dead: deque[dict[str, Any]] = deque(maxlen=RECENT_DEAD_LETTERS)
        self.started_at = clock()
        self.turns = 0
        self.handoffs = 0
        self.errors = 0
        self.dead_letters = 0
        self.bad_replies = 0  # payloads on the reply topic that do not parse as AgentReply
        self.duplicate_turns = 0

    def _bucket(self, now: float) -> _Minute:
        start = int(now // 60 * 60)
        if not self._minutes or self._minutes[-1].start < start:
            self._minutes.append(_Minute(start))
        oldest = start - (self.window_minutes - 1) * 60
        while self._minutes and self._minutes[0].start < oldest:
            self._minutes.popleft()
        return self._minutes[-1]

    def record_reply(self, reply: AgentReply) -> bool:
        """Count one reply; False when that turn was already counted."""
        now = self._clock()
        with self._lock:
            if reply.turn_id in self._seen_turns:
                self.duplicate_turns += 1
                return False
            self._seen_turns[reply.turn_id] = None
            if len(self._seen_turns) > MAX_SEEN_TURNS:
                self._seen_turns.popitem(last=False)
            b = self._bucket(now)
            b.turns += 1
            self.turns += 1
            if reply.kind == ReplyKind.HANDOFF:
                b.handoffs += 1
                self.handoffs += 1
            elif reply.kind == ReplyKind.ERROR:
                b.errors += 1
                self.errors += 1
            total_ms = reply.timings.total_ms
            b.latencies.append(total_ms)
            self._latencies.append((now, total_ms))
            return True

    def record_bad_reply(self) -> None:
        with self._lock:
            self.bad_replies += 1

    def record_dead_letter(self, stage: str, reason: str, session_id: str | None, created_at: str | None) -> None:
        now = self._clock()
        with self._lock:
            self._bucket(now).dead_letters += 1
            self.dead_letters += 1
            self._dead.appendleft(
                {
                    "received_at": now,
                    "stage": stage,
                    "reason": reason[:300],
                    "session_id": session_id,
                    "created_at": created_at,
                }
            )

    def snapshot(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready view: headline figures, per-minute series (oldest first, gaps filled), recent dead letters."""
        now = self._clock()
        with self._lock:
            self._bucket(now)  # rolls the window forward even when nothing arrives
            by_start = {m.start: m for m in self._minutes}
            first = int(now // 60 * 60) - (self.window_minutes - 1) * 60
            series = []
            for start in range(first, first + self.window_minutes * 60, 60):
                m = by_start.get(start) or _Minute(start)
                series.append(
                    {
                        "start": start,
                        "turns": m.turns,
                        "handoffs": m.handoffs,
                        "errors": m.errors,
                        "dead_letters": m.dead_letters,
                        "p50_ms": percentile(m.latencies, 50),
                        "p99_ms": percentile(m.latencies, 99),
                    }
                )
            recent = [ms for at, ms in self._latencies if at >= now - LATENCY_WINDOW_S]
            last_minute = sum(1 for at, _ in self._latencies if at >= now - 60)
            out: dict[str, Any] = {
                "now": now,
                "since": self.started_at,
                "turns_per_minute": last_minute,
                "latency_window_s": LATENCY_WINDOW_S,
                "latency_samples": len(recent),
                "p50_ms": percentile(recent, 50),
                "p99_ms": percentile(recent, 99),
                "turns": self.turns,
                "handoffs": self.handoffs,
                "errors": self.errors,
                "dead_letters": self.dead_letters,
                "bad_replies": self.bad_replies,
                "duplicate_turns": self.duplicate_turns,
                "series": series,
                "recent_dead_letters": list(self._dead),
            }
        return out | (extra or {})
