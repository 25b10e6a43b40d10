"""Session state layout version 0: the whole session pickled into one cell (up to the state split).

Kept for one job: an in-place update from a job that wrote version 0 must read its sessions. The
version-1 meta cell has that cell's state name (``"session"``) and its coder tells the two apart by
the first byte (pickle's 0x80, version 1's 0x01); the first event or timer of an old session reads it
through ``loads_v0``, and ``migrate_v0`` writes the session into the version-1 cells, overwriting the
old value (docs/session-state.md, "Upgrade rule"). Golden bytes: tests/fixtures/session_state_v0/.

``loads_v0`` does not trust the pickle's class paths: it maps exactly the classes version 0 stored
(by the module paths it stored them under) to the ones below and refuses anything else, so moving a
class in a refactor cannot break old state, and a cell cannot make the reader import or call other code.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from contract.turn import HistoryEntry, Role, UserMessage
from pipeline.session_core import (
    InFlight,
    PendingMessage,
    SessionCells,
    SessionConfig,
    SessionMeta,
    fingerprint,
    history_view,
)


@dataclass
class _Pending:
    message: UserMessage
    arrived: float


@dataclass
class _InFlight:
    turn_index: int
    released: float
    # Added after launch: state pickled before it lacks the key (pickle restores __dict__), hence the default.
    oldest_arrived: float | None = None


@dataclass
class SessionState:
    """Version 0's one-cell state, field for field as it was pickled."""

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
    seen: dict[str, None] = field(default_factory=dict)  # insertion-ordered: oldest id first


_V0_CLASSES: dict[tuple[str, str], Any] = {
    **{
        (module, name): cls
        for module in ("pipeline.session", "pipeline.session_legacy")
        for name, cls in (("SessionState", SessionState), ("_Pending", _Pending), ("_InFlight", _InFlight))
    },
    ("contract.turn", "HistoryEntry"): HistoryEntry,
    ("contract.turn", "UserMessage"): UserMessage,
    ("contract.turn", "Role"): Role,
    ("datetime", "datetime"): datetime,
    ("datetime", "timedelta"): timedelta,
    ("datetime", "timezone"): timezone,
}


class _V0Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _V0_CLASSES[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"not a version-0 session state class: {module}.{name}") from None


def loads_v0(data: bytes) -> SessionState:
    state = _V0Unpickler(io.BytesIO(data)).load()
    if not isinstance(state, SessionState):
        raise pickle.UnpicklingError(f"version-0 cell holds {type(state).__name__}, not SessionState")
    if state.in_flight is not None and "oldest_arrived" not in vars(state.in_flight):
        state.in_flight.oldest_arrived = None  # written before the field existed
    return state


def dumps_v0(state: SessionState) -> bytes:
    """Version 0 as it was written (the old layout in bench/session_state.py and the reader's tests)."""
    return pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


def migrate_v0(old: SessionState, cfg: SessionConfig, cells: SessionCells) -> SessionMeta:
    """Writes a version-0 session into the version-1 cells; returns its meta (the caller writes it)."""
    for p in old.pending:
        cells.pending.add(PendingMessage(p.message, p.arrived))
    history, dropped = history_view(list(old.history), cfg.max_history)
    for e in history:
        cells.history.add(e)
    ids = list(old.seen)[-cfg.max_seen_ids :]
    for mid in ids:
        cells.seen.add(fingerprint(mid))
    f = old.in_flight
    arrivals = [p.arrived for p in old.pending]
    return SessionMeta(
        customer_id=old.customer_id,
        opened=old.opened,
        last_activity=old.last_activity,
        next_turn=old.next_turn,
        messages=old.messages,
        duplicates=old.duplicates,
        handed_off=old.handed_off,
        omitted_history=old.omitted_history + dropped,
        history_stored=len(history),
        last_history_at=history[-1].at if history else None,
        pending_count=len(arrivals),
        pending_first=min(arrivals, default=0.0),
        pending_last=max(arrivals, default=0.0),
        in_flight=None if f is None else InFlight(f.turn_index, f.released, f.oldest_arrived),
        seen_stored=len(ids),
    )
