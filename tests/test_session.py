"""The session DoFn under Beam's TestStream: processing-time advances drive its timers.

The DoFn gets ``element_clock``, so "now" is the element's (or timer's)
timestamp; each test stamps elements with the processing time it has
advanced to, which keeps the DoFn's clock and TestStream's clock in step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from contract.messages import AgentReply, InboundMessage
from contract.turn import Role
from pipeline.session import CLOSED_TAG, DEAD_LETTER_TAG, SessionConfig, SessionDoFn, element_clock

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


class Script:
    """Builds a TestStream where every event happens at a processing time the test names."""

    def __init__(self) -> None:
        self.stream = TestStream().advance_watermark_to(0)
        self.now = 0.0

    def at(self, t: float, *events: InboundMessage | AgentReply) -> Script:
        assert t >= self.now
        if t > self.now:
            self.stream = self.stream.advance_processing_time(t - self.now)
            self.now = t
        if events:
            self.stream = self.stream.add_elements([TimestampedValue((e.session_id, e), t) for e in events])
        return self

    def build(self) -> TestStream:
        # Finite watermark first: timers that wait for +infinity never reach assert_that (apache/beam#18987).
        return self.stream.advance_watermark_to(self.now + 1).advance_watermark_to_infinity()


Summary = Callable[[object], object]


def run(script: Script, config: SessionConfig = CFG, **expected: tuple[Summary, list]) -> None:
    """Runs the DoFn; each keyword names an output (turns, closed, dead) and its expected summaries."""
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        outs = (
            p
            | script.build()
            | beam.ParDo(SessionDoFn(config, clock=element_clock)).with_outputs(
                CLOSED_TAG, DEAD_LETTER_TAG, main="turns"
            )
        )
        pcolls = {"turns": outs.turns, "closed": outs[CLOSED_TAG], "dead": outs[DEAD_LETTER_TAG]}
        for name in pcolls:
            summarise, want = expected.get(name, (str, []))
            assert_that(
                pcolls[name] | f"summarise_{name}" >> beam.Map(summarise), equal_to(want), label=f"check_{name}"
            )


def turn_summary(t) -> tuple:  # noqa: ANN001
    return (t.session_id, t.turn_index, tuple(t.message_ids))


def test_a_burst_becomes_one_turn():
    s = Script().at(0, msg("m1", "hi", 0)).at(0.5, msg("m2", "my order", 0.5)).at(1.0, msg("m3", "is late", 1.0))
    s.at(10)
    turns = (turn_summary, [("s1", 0, ("m1", "m2", "m3"))])
    run(s, turns=turns)


def test_a_duplicate_is_never_answered():
    s = Script().at(0, msg("m1", "hi", 0)).at(0.2, msg("m1", "hi", 0)).at(5)
    s.at(5, reply(0, "hello")).at(6, msg("m1", "hi", 0), msg("m2", "again", 6)).at(20)
    turns = (turn_summary, [("s1", 0, ("m1",)), ("s1", 1, ("m2",))])
    run(s, turns=turns)


def test_out_of_order_messages_are_sorted_by_sent_at():
    s = Script().at(0, msg("m3", "third", 2.0)).at(0.1, msg("m1", "first", 0.0)).at(0.2, msg("m2", "second", 1.0))
    s.at(10)
    turns = (turn_summary, [("s1", 0, ("m1", "m2", "m3"))])
    run(s, turns=turns)


def test_a_message_during_a_turn_in_flight_waits_for_the_next_turn():
    s = Script().at(0, msg("m1", "hi", 0)).at(2)  # turn 0 released at 1.5
    s.at(3, msg("m2", "hello??", 3)).at(10)  # quiet window passed, but turn 0 is still in flight
    s.at(12, reply(0, "hi there")).at(20)  # reply back: m2 released as turn 1
    turns = (
        lambda t: (turn_summary(t), [(h.role, h.text) for h in t.history]),
        [
            (("s1", 0, ("m1",)), []),
            (("s1", 1, ("m2",)), [(Role.USER, "hi"), (Role.AGENT, "hi there")]),
        ],
    )
    run(s, turns=turns)


def test_max_hold_caps_a_long_burst():
    s = Script()
    for i in range(8):  # a message every second never leaves a 1.5 s quiet window
        s.at(float(i), msg(f"m{i}", f"part {i}", float(i)))
    s.at(20)
    # max_hold 4 s: the turn goes at t=4 with m0..m3 (the timer fires before m4 arrives at t=4);
    # the rest wait for a reply that never comes, so no second turn is released.
    turns = (turn_summary, [("s1", 0, ("m0", "m1", "m2", "m3"))])
    run(s, turns=turns)


def test_history_is_bounded_and_keeps_the_first_message():
    s = Script()
    t = 0.0
    for i in range(6):
        s.at(t, msg(f"m{i}", f"question {i}", t))
        t += 2
        s.at(t, reply(i, f"answer {i}"))
        t += 1
    s.at(t, msg("last", "final", t)).at(t + 5)
    turns = (
        lambda tr: (tr.turn_index, len(tr.history), tr.omitted_history, tr.history[0].text if tr.history else None),
        [
            (0, 0, 0, None),
            (1, 2, 0, "question 0"),
            (2, 4, 0, "question 0"),
            (3, 6, 0, "question 0"),
            (4, 6, 2, "question 0"),
            (5, 6, 4, "question 0"),
            (6, 6, 6, "question 0"),
        ],
    )
    run(s, turns=turns)


def test_idle_sessions_close_and_free_their_state():
    s = Script().at(0, msg("m1", "hi", 0)).at(2).at(3, reply(0, "hello")).at(40)
    # Same session id after close: state was cleared, so it starts again at turn 0.
    s.at(41, msg("m9", "back again", 41)).at(50)
    closed = (lambda c: (c.session_id, c.turns, c.messages, c.outcome), [("s1", 1, 1, "idle")])
    turns = (turn_summary, [("s1", 0, ("m1",)), ("s1", 0, ("m9",))])
    run(s, closed=closed, turns=turns)


def test_another_customer_cannot_join_a_session():
    s = Script().at(0, msg("m1", "hi", 0)).at(0.5, msg("m2", "show me C0001's orders", 0.5, customer="C0002")).at(5)
    turns = (turn_summary, [("s1", 0, ("m1",))])
    dead = (lambda d: (d.stage, d.message_ids, "customer_id" in d.reason), [("Sessions", ["m2"], True)])
    run(s, turns=turns, dead=dead)


def test_sessions_are_independent():
    s = (
        Script()
        .at(0, msg("a1", "x", 0, session="A"), msg("b1", "y", 0, session="B"))
        .at(0.5, msg("a2", "z", 0.5, session="A"))
    )
    s.at(10)
    turns = (turn_summary, [("A", 0, ("a1", "a2")), ("B", 0, ("b1",))])
    run(s, turns=turns)


def test_config_is_validated():
    with pytest.raises(ValueError):
        SessionConfig(quiet_window_s=5, max_hold_s=1)
    with pytest.raises(ValueError):
        SessionConfig(max_history=1)


@pytest.mark.timeout(120)
def test_timer_due_times_that_floats_cannot_hold_exactly():
    # 2.6 + 1.5 = 4.1 as a float is a hair above what a microsecond timestamp holds, so the
    # timer fires just before the due time. The DoFn must release the turn, not re-arm forever.
    s = Script().at(2.6, msg("m1", "hi", 2.6)).at(10)
    run(s, turns=(turn_summary, [("s1", 0, ("m1",))]))


def test_a_lost_reply_times_the_turn_out_and_the_waiting_message_goes_next():
    """No reply for turn 0: at inflight_timeout_s the freshness timer (the only timer a released turn sets)
    times the turn out, and the message that waited is released as turn 1."""
    cfg = SessionConfig(quiet_window_s=1.5, max_hold_s=4.0, inflight_timeout_s=25, idle_timeout_s=300, max_history=6)
    s = Script().at(0, msg("m1", "hi", 0)).at(2).at(3, msg("m2", "anyone there?", 3)).at(20).at(26).at(30)
    turns = (turn_summary, [("s1", 0, ("m1",)), ("s1", 1, ("m2",))])
    run(s, cfg, turns=turns)
