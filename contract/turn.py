"""What the session stage hands to the agent, and what it reports when a session ends.

These travel between pipeline stages (not on a topic), so they are plain
frozen dataclasses: cheap to pickle, and Beam's state coders handle them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    USER = "user"
    AGENT = "agent"


@dataclass(frozen=True)
class HistoryEntry:
    role: Role
    text: str
    turn_index: int
    at: datetime


@dataclass(frozen=True)
class UserMessage:
    message_id: str
    text: str
    sent_at: datetime  # the client's clock: sorts the turn's messages only
    received_at: datetime | None = None  # the server's clock (InboundMessage.received_at); None: not known

    @property
    def clock_skew_s(self) -> float:
        """How far the client's clock was off when it sent this (0 when the receipt time is not known)."""
        return 0.0 if self.received_at is None else (self.sent_at - self.received_at).total_seconds()


@dataclass(frozen=True)
class Turn:
    """One agent turn: the user messages it answers plus the bounded history before it."""

    session_id: str
    customer_id: str
    turn_index: int
    messages: tuple[UserMessage, ...]
    history: tuple[HistoryEntry, ...]
    omitted_history: int  # entries dropped by the history bound (see pipeline/session.py)
    released_at: datetime  # when the session stage let the turn go

    @property
    def turn_id(self) -> str:
        """``<session>#<digest of the turn's first message id>``: unique per turn, stable under redelivery.

        Not the turn index: a runner that loses session state (the local runner when its process is
        killed) numbers turns from 0 again, and consumers that de-duplicate on turn_id would drop the
        new turns' replies. The first message of a turn belongs to no other turn, and a redelivered
        turn gets its old id back, so action ids (tools/scope.py) still see a retry as a replay.
        """
        first = min(self.messages, key=lambda m: (m.sent_at, m.message_id), default=None)
        key = first.message_id if first else f"index:{self.turn_index}"
        return f"{self.session_id}#{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    @property
    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages]

    @property
    def first_sent_at(self) -> datetime:
        return min(m.sent_at for m in self.messages)

    @property
    def first_received_at(self) -> datetime:
        """When the turn's first message reached the pipeline, on the server's clock: where latencies start.

        Never ``sent_at`` (a client's clock can be years off). Without receipt times (a turn built outside the
        pipeline) the release time stands in: a queue time of 0 is a smaller lie than a client's clock.
        """
        received = [m.received_at for m in self.messages if m.received_at is not None]
        return min(received, default=self.released_at)

    @property
    def max_clock_skew_s(self) -> float:
        """The largest gap, either way, between a message's sent_at and its receipt (0 without receipt times)."""
        return max((abs(m.clock_skew_s) for m in self.messages), default=0.0)


@dataclass(frozen=True)
class EnrichedTurn:
    """A turn with the customer's context attached by the enrichment stage."""

    turn: Turn
    context: dict[str, Any]  # the customer's documents; empty when unknown
    context_flags: tuple[str, ...] = ()  # e.g. "customer_unknown", "context_unavailable"
    enrich_ms: float = 0.0


@dataclass(frozen=True)
class SessionClosed:
    session_id: str
    customer_id: str
    turns: int
    messages: int
    duplicates: int
    opened_at: datetime
    closed_at: datetime
    outcome: str  # "idle" | "handoff"
    extra: dict[str, Any] = field(default_factory=dict)
