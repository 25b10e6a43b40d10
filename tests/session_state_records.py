"""Records of every kind in session state layout version 1, with every optional part set and unset.

The golden bytes in tests/fixtures/session_state_v1/records.json were written from these by
``python -m tests.session_state_records`` when version 1 was defined; tests/test_session_state.py
checks that today's encoders still write exactly those bytes and today's readers still read them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from contract.turn import HistoryEntry, Role, UserMessage
from pipeline import session_codec as codec
from pipeline.session_core import InFlight, PendingMessage, SessionMeta

FIXTURE = Path(__file__).parent / "fixtures" / "session_state_v1" / "records.json"
T = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))

RECORDS: dict[str, tuple[str, object]] = {
    "meta_new": ("meta", SessionMeta(customer_id="C0001", opened=1.5, last_activity=1.5)),
    "meta_full": (
        "meta",
        SessionMeta(
            customer_id="C-ünï",
            opened=10.25,
            last_activity=99.125,
            next_turn=7,
            messages=15,
            duplicates=2,
            handed_off=True,
            omitted_history=9,
            history_stored=31,
            last_history_at=T.astimezone(PLUS2),
            pending_count=2,
            pending_first=90.0,
            pending_last=95.5,
            in_flight=InFlight(turn_index=6, released=88.0, oldest_arrived=80.5),
            seen_stored=13,
        ),
    ),
    "meta_inflight_no_oldest": (
        "meta",
        SessionMeta(customer_id="C2", opened=0.0, last_activity=3.0, in_flight=InFlight(0, 3.0, None)),
    ),
    "pending_received": (
        "pending",
        PendingMessage(UserMessage("m-1", "where is my order? ✓", T, T + timedelta(seconds=1)), arrived=5.5),
    ),
    "pending_no_received": ("pending", PendingMessage(UserMessage("m-2", "hi", T.astimezone(PLUS2)), arrived=6.0)),
    "history_user": ("history", HistoryEntry(Role.USER, "where is my order?", 0, T)),
    "history_agent_naive_time": ("history", HistoryEntry(Role.AGENT, "It ships today.", 0, datetime(2026, 1, 2, 3))),
}

ENCODE = {"meta": codec.encode_meta, "pending": codec.encode_pending, "history": codec.encode_history}
DECODE = {"meta": codec.decode_meta, "pending": codec.decode_pending, "history": codec.decode_history}


if __name__ == "__main__":
    FIXTURE.write_text(
        json.dumps({name: ENCODE[kind](value).hex() for name, (kind, value) in RECORDS.items()}, indent=1) + "\n"
    )
