"""Timed messages through the session stage's own rules, end to end on the Firestore emulator.

The shipped scenarios of evals/scenarios/timing.yaml run through ``evals.harness.run_trial`` with the
instant backend (the real agent steps, no model): the quiet window makes a burst one turn, a redelivered
message id is dropped, the max hold releases a customer who keeps typing, and what arrives while a turn
is in flight waits for the next one, released when the reply comes back.
"""

from __future__ import annotations

import os

import pytest

from evals.harness import Agent, run_trial, session_config
from evals.html_report import render_html
from evals.packworld import scenarios_folder
from evals.report import RunResult
from evals.run import build_agent
from evals.scenario import CountRange, Scenario, load_scenarios
from evals.scoring import score
from stack.emulators import LocalStack

DEFAULT_SCENARIOS = scenarios_folder("shop")  # the default pack's dev split

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def agent(local_stack: LocalStack) -> Agent:
    assert os.environ["FIRESTORE_EMULATOR_HOST"]
    return build_agent("instant").load()


def _scenario(sid: str) -> Scenario:
    [scenario] = load_scenarios([DEFAULT_SCENARIOS], ids=[sid])
    return scenario


def test_a_burst_is_one_turn_and_the_handoff_record_covers_it(agent: Agent) -> None:
    scenario = _scenario("handoff-burst-one-record")
    trace = run_trial(scenario, 1, agent, "sfeval-timing-burst")
    assert not trace.harness_error, trace.harness_error
    [turn] = trace.turns
    assert turn.message_ids == ("hello", "late", "human")
    quiet = session_config().quiet_window_s
    assert turn.released_s == pytest.approx(1.2 + quiet)  # the quiet window after the last message of the burst
    assert turn.handoff is not None and turn.handoff["message_ids"] == ["hello", "late", "human"]
    result = score(scenario, trace)
    assert result.passed, result.failures


def test_a_redelivered_message_is_dropped(agent: Agent) -> None:
    scenario = _scenario("orders-redelivered-message")
    trace = run_trial(scenario, 1, agent, "sfeval-timing-dup")
    assert not trace.harness_error, trace.harness_error
    assert [t.message_ids for t in trace.turns] == [("ask",)] and trace.duplicates == 1
    assert trace.sent_message_ids == ["ask"]
    assert score(scenario, trace).passed


def test_max_hold_releases_and_a_message_in_flight_waits_for_the_reply(agent: Agent) -> None:
    scenario = _scenario("orders-typing-past-max-hold")
    cfg = session_config()
    trace = run_trial(scenario, 1, agent, "sfeval-timing-hold")
    assert not trace.harness_error, trace.harness_error
    first, second = trace.turns
    assert first.message_ids == tuple(f"m-{i}" for i in range(7)) and first.released_s == pytest.approx(cfg.max_hold_s)
    # "thanks" (6.5 s) arrived while the first turn was in flight: it is released when the reply is back.
    assert second.message_ids == ("m-7",)
    assert second.released_s == pytest.approx(cfg.max_hold_s + scenario.user.reply_after_s)
    assert "hi\nI have a question" in first.user_text
    result = score(scenario, trace)
    assert result.passed
    # A scenario that wanted one turn fails, and its report shows what the session stage made of the messages.
    one = scenario.model_copy(update={"expect": scenario.expect.model_copy(update={"turns": CountRange(min=1, max=1)})})
    failed = score(one, trace)
    assert {c.name for c in failed.failures} == {"turns"}
    run = RunResult({"run_id": "t", "backend": "instant", "k": 1}, [one], [trace], [failed])
    page = render_html(run.to_json())
    assert "[released at 6 s: m-0, m-1, m-2, m-3, m-4, m-5, m-6]" in page and "[released at 9 s: m-7]" in page


def test_with_a_longer_quiet_window_the_same_messages_make_other_turns(agent: Agent) -> None:
    """The turns come from the session rules, not from the file: spacing the burst out splits it."""
    scenario = _scenario("handoff-burst-one-record")
    spaced = [m.model_copy(update={"at": 4.0 * i}) for i, m in enumerate(scenario.user.messages or ())]
    user = scenario.user.model_copy(update={"messages": spaced})
    split = scenario.model_copy(update={"user": user})
    trace = run_trial(split, 1, agent, "sfeval-timing-split")
    assert not trace.harness_error, trace.harness_error
    assert [t.message_ids for t in trace.turns] == [("hello",), ("late",), ("human",)]
    result = score(split, trace)
    failed = {c.name for c in result.failures}
    assert failed == {"turns", "handoff_record"}, result.failures  # the record covers only the last message
