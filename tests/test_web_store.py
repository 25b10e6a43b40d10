"""The web frontend's in-memory parts, without emulators: session store, operator counts, socket fan-out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from contract.messages import AgentReply, InboundMessage, ReplyKind, TurnTimings
from web.hub import Listener
from web.ops import OpsStats, percentile
from web.store import SessionConflict, SessionStore, UnknownSession, event_key


def msg(session: str, mid: str, text: str = "hello") -> InboundMessage:
    return InboundMessage(session_id=session, customer_id="C0001", message_id=mid, text=text, sent_at=datetime.now(UTC))


def reply(session: str, n: int, kind: ReplyKind = ReplyKind.REPLY, total_ms: float = 100.0) -> AgentReply:
    return AgentReply(
        session_id=session,
        turn_id=f"{session}#{n}",
        turn_index=n,
        answers=[f"m{n}"],
        kind=kind,
        text=f"answer {n}",
        model="instant",
        timings=TurnTimings(total_ms=total_ms),
    )


# -- session store ----------------------------------------------------------------------------------------------


def test_session_belongs_to_one_customer() -> None:
    store = SessionStore()
    assert store.open("s1", "C0001") == "C0001"
    assert store.open("s1", None) == "C0001"  # a reloaded page that lost its customer id
    with pytest.raises(SessionConflict):
        store.open("s1", "C0002")
    with pytest.raises(UnknownSession):
        store.open("nope", None)


def test_reply_stored_once_and_only_for_held_sessions() -> None:
    store = SessionStore()
    store.open("s1", "C0001")
    assert store.add_message(msg("s1", "m0")) is not None
    assert store.add_message(msg("s1", "m0")) is None
    first = store.add_reply(reply("s1", 0))
    assert first is not None and first["type"] == "reply" and first["turn_id"] == "s1#0"
    assert store.add_reply(reply("s1", 0)) is None  # Pub/Sub redelivery
    assert store.add_reply(reply("other", 0)) is None  # another frontend's session
    snap = store.snapshot("s1")
    assert [event_key(e) for e in snap.events] == ["m:m0", "r:s1#0"]
    assert (store.duplicate_replies, store.ignored_replies) == (1, 1)


def test_history_window_is_bounded_and_dedupe_outlives_it() -> None:
    store = SessionStore(max_events=3)
    store.open("s", "C0001")
    for n in range(5):
        store.add_reply(reply("s", n))
    snap = store.snapshot("s")
    assert [e["turn_index"] for e in snap.events] == [2, 3, 4]
    assert snap.omitted == 2
    assert store.add_reply(reply("s", 0)) is None  # scrolled out, still recognised
    store.add_message(msg("s", "late"))
    assert store.find_message("s", "late") is not None
    assert store.find_message("s", "never") is None


def test_eviction_is_lru_and_spares_attached_sessions() -> None:
    store = SessionStore(max_sessions=2)
    store.open("a", "C0001")
    store.attach("a")  # a socket listens on a
    store.open("b", "C0001")
    store.open("c", "C0001")  # over the bound: b (oldest unattached) goes, a stays
    assert "a" in store and "b" not in store and "c" in store
    store.detach("a")
    store.open("d", "C0001")
    assert "a" not in store and len(store) == 2


# -- operator counts ------------------------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0


def test_ops_counts_by_minute_and_dedupes_turns() -> None:
    now = [1_000_000.0 * 60]
    ops = OpsStats(window_minutes=5, clock=lambda: now[0])
    assert ops.record_reply(reply("s", 0, total_ms=100))
    assert not ops.record_reply(reply("s", 0, total_ms=100))
    ops.record_reply(reply("s", 1, ReplyKind.HANDOFF, total_ms=300))
    now[0] += 61
    ops.record_reply(reply("s", 2, ReplyKind.ERROR, total_ms=200))
    ops.record_dead_letter("ParseInbound", "payload is not JSON", None, None)
    snap = ops.snapshot({"sockets": 3})
    assert (snap["turns"], snap["handoffs"], snap["errors"], snap["dead_letters"]) == (3, 1, 1, 1)
    assert snap["duplicate_turns"] == 1 and snap["sockets"] == 3
    assert snap["turns_per_minute"] == 1  # only the last 60 s
    assert snap["p50_ms"] == 200 and snap["p99_ms"] == 300
    series = snap["series"]
    assert len(series) == 5 and [m["turns"] for m in series[-2:]] == [2, 1]
    assert series[-2]["p99_ms"] == 300 and series[-1]["dead_letters"] == 1
    assert snap["recent_dead_letters"][0]["stage"] == "ParseInbound"
    now[0] += 10 * 60  # the window rolls on with nothing arriving
    assert sum(m["turns"] for m in ops.snapshot()["series"]) == 0


# -- fan-out ------------------------------------------------------------------------------------------------------


def test_listener_sends_each_event_once_and_overflows_cleanly() -> None:
    async def run() -> None:
        listener = Listener("s")
        event = {"type": "reply", "turn_id": "s#0"}
        listener.offer(event)
        listener.offer(dict(event))
        assert listener.queue.qsize() == 1
        small = Listener("s", queue=asyncio.Queue(maxsize=2))
        for n in range(5):
            small.offer({"type": "reply", "turn_id": f"s#{n}"})
        assert small.overflowed
        items = [small.queue.get_nowait() for _ in range(small.queue.qsize())]
        assert [i["turn_id"] for i in items] == ["s#0", "s#1"]  # the rest dropped; the writer closes the socket
        small.offer({"type": "reply", "turn_id": "s#9"})
        assert small.queue.qsize() == 0

    asyncio.run(run())


# -- turn order -------------------------------------------------------------------------------------------------


def keys(store: SessionStore, session: str) -> list[str]:
    return [event_key(e) for e in store.snapshot(session).events]


def test_replies_arriving_out_of_order_are_kept_in_turn_order() -> None:
    store = SessionStore()
    store.open("s", "C0001")
    for n in range(4):
        store.add_message(msg("s", f"m{n}"))
    for n in (2, 0, 3, 1, 0):  # as WriteToPubSub on Dataflow may deliver them (no ordering key), one redelivered
        store.add_reply(reply("s", n))
    # Replies in turn order, each after the messages it answers; messages stay where they were sent.
    assert keys(store, "s") == ["m:m0", "m:m1", "m:m2", "m:m3", "r:s#0", "r:s#1", "r:s#2", "r:s#3"]
    assert store.duplicate_replies == 1


def test_a_restarted_turn_numbering_stays_after_the_turns_before_it() -> None:
    """The local runner renumbers a session's turns from 0 after it lost state: those replies answer later
    messages, so they stay after the first run of numbers."""
    store = SessionStore()
    store.open("s", "C0001")
    store.add_message(msg("s", "m0"))
    store.add_message(msg("s", "m1"))
    store.add_reply(reply("s", 0))
    store.add_reply(reply("s", 1))
    store.add_message(msg("s", "m9"))
    again = AgentReply(session_id="s", turn_id="s#again", turn_index=0, answers=["m9"], text="x", model="instant")
    store.add_reply(again)
    assert keys(store, "s") == ["m:m0", "m:m1", "r:s#0", "r:s#1", "m:m9", "r:s#again"]
