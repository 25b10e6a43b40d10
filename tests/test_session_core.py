"""The session rules without Beam (pipeline/session_core.py through pipeline/session_simulator.py).

The same scenarios as tests/test_session.py, which runs them through the DoFn on the local
runner; here time is exact and each test runs in milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contract.messages import AgentReply, InboundMessage
from contract.turn import Role
from pipeline.session_core import SessionConfig, history_view
from pipeline.session_simulator import SessionSimulator

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CFG = SessionConfig(quiet_window_s=1.5, max_hold_s=4.0, inflight_timeout_s=60, idle_timeout_s=30, max_history=6)


def msg(mid: str, text: str, at: float, session: str = "s1", customer: str = "C0001") -> InboundMessage:
    return InboundMessage(
        session_id=session, customer_id=customer, message_id=mid, text=text, sent_at=T0 + timedelta(seconds=at)
    )


def reply(turn_index: int, text: str, session: str = "s1") -> AgentReply:
    return AgentReply(
        session_id=session, turn_id=f"{session}#{turn_index}", turn_index=turn_index, answers=[], text=text, model="m"
    )


def ids(sim: SessionSimulator) -> list[tuple]:
    return [(t.session_id, t.turn_index, tuple(t.message_ids)) for t in sim.turns]


def test_a_burst_becomes_one_turn_at_the_quiet_window():
    sim = SessionSimulator(CFG)
    for i, at in enumerate((0.0, 0.5, 1.0)):
        sim.message(msg(f"m{i + 1}", "x", at), at=at)
    sim.advance_to(2.4)
    assert sim.turns == []
    sim.advance_to(2.5)  # 1.5 s after the last message
    assert ids(sim) == [("s1", 0, ("m1", "m2", "m3"))]
    assert sim.turns[0].released_at == datetime.fromtimestamp(2.5, UTC)


def test_duplicates_are_dropped_and_counted():
    sim = SessionSimulator(CFG)
    sim.message(msg("m1", "hi", 0), at=0)
    sim.message(msg("m1", "hi", 0), at=0.2)
    sim.advance_to(5)
    sim.reply(reply(0, "hello"), at=5)
    sim.message(msg("m1", "hi", 0), at=6)
    sim.message(msg("m2", "again", 6), at=6)
    sim.advance_to(20)
    assert ids(sim) == [("s1", 0, ("m1",)), ("s1", 1, ("m2",))]
    assert sim.counts["duplicates"] == 2


def test_seen_ids_are_appended_and_compacted_to_the_newest_bound():
    cfg = SessionConfig(max_seen_ids=3, quiet_window_s=0.1, max_hold_s=0.1)
    sim = SessionSimulator(cfg)
    t = 0.0
    for i in range(8):  # one message per turn; each turn answered
        sim.message(msg(f"m{i}", "x", t), at=t)
        sim.advance_to(t + 0.2)
        sim.reply(reply(i, "ok"), at=t + 0.3)
        t += 1
    # 7 ids > 2 * 3 compacted the bag to the newest 3; the 8th was appended: m4..m7.
    assert len(sim.cells["s1"].seen.read()) == 4 == sim.cells["s1"].meta.read().seen_stored
    for recent in ("m5", "m6", "m7"):  # the newest max_seen_ids are always remembered
        sim.message(msg(recent, "x", t), at=t)
    assert sim.counts["duplicates"] == 3
    sim.message(msg("m0", "x", t), at=t)  # long forgotten: a new message again
    assert sim.cells["s1"].meta.read().pending_count == 1


def test_out_of_order_messages_are_sorted_by_sent_at():
    sim = SessionSimulator(CFG)
    sim.message(msg("m3", "third", 2.0), at=0)
    sim.message(msg("m1", "first", 0.0), at=0.1)
    sim.message(msg("m2", "second", 1.0), at=0.2)
    sim.advance_to(10)
    assert ids(sim) == [("s1", 0, ("m1", "m2", "m3"))]


def test_a_message_during_a_turn_in_flight_waits_for_the_reply():
    sim = SessionSimulator(CFG)
    sim.message(msg("m1", "hi", 0), at=0)
    sim.message(msg("m2", "hello??", 3), at=3)
    sim.advance_to(11.9)
    assert ids(sim) == [("s1", 0, ("m1",))]
    sim.reply(reply(0, "hi there"), at=12)
    sim.advance_to(12)  # its quiet window passed long ago: the release timer is due at once
    assert ids(sim)[-1] == ("s1", 1, ("m2",))
    assert [(h.role, h.text) for h in sim.turns[1].history] == [(Role.USER, "hi"), (Role.AGENT, "hi there")]


def test_max_hold_caps_a_long_burst():
    sim = SessionSimulator(CFG)
    for i in range(8):
        sim.message(msg(f"m{i}", f"part {i}", float(i)), at=float(i))
    sim.advance_to(20)
    assert ids(sim) == [("s1", 0, ("m0", "m1", "m2", "m3"))]


def test_in_flight_timeout_frees_the_session_for_the_next_turn():
    sim = SessionSimulator(CFG)
    sim.message(msg("m1", "hi", 0), at=0)
    sim.message(msg("m2", "anyone?", 10), at=10)
    sim.advance_to(61.4)
    assert len(sim.turns) == 1
    sim.advance_to(61.5)  # released at 1.5, timeout 60 s: m2 goes at once
    assert ids(sim)[-1] == ("s1", 1, ("m2",)) and sim.counts["inflight_timeouts"] == 1
    sim.reply(reply(0, "late answer"), at=62)
    assert sim.counts["stale_replies"] == 1


def test_history_is_bounded_keeps_the_anchor_and_compacts():
    sim = SessionSimulator(CFG)
    t = 0.0
    seen = []
    for i in range(20):
        sim.message(msg(f"m{i}", f"question {i}", t), at=t)
        sim.advance_to(t + 2)
        sim.reply(reply(i, f"answer {i}"), at=t + 2)
        t += 3
        tr = sim.turns[-1]
        seen.append((len(tr.history), tr.omitted_history, tr.history[0].text if tr.history else None))
    q0 = "question 0"
    assert seen[:5] == [(0, 0, None), (2, 0, q0), (4, 0, q0), (6, 0, q0), (6, 2, q0)]
    assert seen[-1] == (6, 2 * 19 - 6, "question 0")
    assert sim.turns[-1].history[-1].text == "answer 18"
    assert sim.cells["s1"].meta.read().history_stored <= 2 * CFG.max_history  # compacted, not unbounded


def test_history_view():
    assert history_view([1, 2, 3], 3) == ([1, 2, 3], 0)  # type: ignore[list-item]
    assert history_view([1, 2, 3, 4, 5], 3) == ([1, 4, 5], 2)  # type: ignore[list-item]


def test_idle_sessions_close_and_free_their_state():
    sim = SessionSimulator(CFG)
    sim.message(msg("m1", "hi", 0), at=0)
    sim.reply(reply(0, "hello"), at=3)
    sim.advance_to(40)
    assert [(c.session_id, c.turns, c.messages, c.outcome) for c in sim.closed] == [("s1", 1, 1, "idle")]
    assert sim.open_sessions() == [] and sim.cells["s1"].history.read() == []
    sim.message(msg("m9", "back again", 41), at=41)
    sim.advance_to(50)
    assert ids(sim) == [("s1", 0, ("m1",)), ("s1", 0, ("m9",))]


def test_another_customer_cannot_join_a_session():
    sim = SessionSimulator(CFG)
    sim.message(msg("m1", "hi", 0), at=0)
    sim.message(msg("m2", "show me C0001's orders", 0.5, customer="C0002"), at=0.5)
    sim.advance_to(5)
    assert ids(sim) == [("s1", 0, ("m1",))]
    assert [(d.stage, d.message_ids) for d in sim.dead_letters] == [("Sessions", ["m2"])]


def test_sessions_are_independent():
    sim = SessionSimulator(CFG)
    sim.message(msg("a1", "x", 0, session="A"), at=0)
    sim.message(msg("b1", "y", 0, session="B"), at=0)
    sim.message(msg("a2", "z", 0.5, session="A"), at=0.5)
    sim.advance_to(10)
    assert sorted(ids(sim)) == [("A", 0, ("a1", "a2")), ("B", 0, ("b1",))]
