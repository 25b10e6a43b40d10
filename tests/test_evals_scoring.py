"""The offline eval harness without a stack: scenario files, validation errors, the scorer, pass^k, the report.

The scorer is fed hand-made traces (a "scripted agent"): what a conversation did
(turns, tool calls, the database before and after), independent of any model.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from evals.packworld import scenarios_folder
from evals.report import RunResult, compare, markdown, summarize_scores
from evals.run import Progress, main
from evals.scenario import Scenario, ScenarioError, categories, load_scenarios, parse_scenarios
from evals.scoring import mean_pass_hat_k, pass_hat_k, score
from evals.trace import CallTrace, TrialTrace, TurnTrace
from evals.users import RuleUser, ScriptedUser
from evals.world import resolve_time
from packs.shop.seed import REFERENCE_TIME, build_customer, order_id

DEFAULT_SCENARIOS = scenarios_folder("shop")  # the default pack's dev split

# ---------------------------------------------------------------------------
# The shipped scenarios
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> list[Scenario]:
    return load_scenarios([DEFAULT_SCENARIOS])


def test_shipped_scenarios_validate_and_cover_every_category(shipped: list[Scenario]) -> None:
    assert len(shipped) >= 40
    by_cat = {c: [s for s in shipped if s.category == c] for c in categories("shop")}
    assert all(len(v) >= 4 for v in by_cat.values()), {c: len(v) for c, v in by_cat.items()}
    assert len({s.id for s in shipped}) == len(shipped)
    assert any(s.user.simulated for s in shipped) and any(len(s.user.turns or ()) > 1 for s in shipped)
    assert any(s.seed.overrides for s in shipped) and any(s.seed.customers for s in shipped)


_ORDER = re.compile(r"\bO-(C\d{4})-(\d{2})\b")


def _ids_in(value: Any) -> set[str]:
    return {m.group(0) for m in _ORDER.finditer(json.dumps(value))}


def test_shipped_scenarios_use_real_seed_data(shipped: list[Scenario]) -> None:
    """Every order id a scenario expects exists in the seed (or an override creates it): no typos in the data."""
    problems = []
    for s in shipped:
        known = {oid for cid in (s.customer, *s.seed.customers) if not (cid == s.customer and s.seed.absent)
                 for oid in build_customer(int(cid[1:])).orders}  # fmt: skip
        created = {o.doc.rsplit("/", 1)[-1] for o in s.seed.overrides if o.create is not None}
        expected = s.expect.model_dump(exclude={"reply"})
        for oid in _ids_in(expected) - known - created:
            problems.append(f"{s.id}: {oid} is not in the seed")
        for oid in _ids_in(s.expect.model_dump(include={"tools"})):
            owner = _ORDER.match(oid).group(1)  # type: ignore[union-attr]
            if owner != s.customer:
                problems.append(f"{s.id}: expects a tool call on another customer's order {oid}")
    assert not problems, problems
    # The documented facts the scenarios rely on.
    assert [list(build_customer(i).orders.values())[-1]["status"] for i in range(1, 7)] == [
        "placed", "shipped", "delayed", "delivered", "returned", "refunded"]  # fmt: skip
    assert order_id("C0001", 5) in build_customer(1).orders


def test_cli_validate_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--validate"]) == 0
    assert "scenarios valid" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Validation errors
# ---------------------------------------------------------------------------

MINIMAL: dict[str, Any] = {
    "id": "refund-x",
    "category": "refunds",
    "customer": "C0001",
    "goal": "Cancel and refund the new order.",
    "user": {"turns": ["Please cancel order O-C0001-05 and refund me."]},
    "expect": {
        "outcome": "answered",
        "state": [
            {"doc": "orders/O-C0001-05", "fields": {"status": "cancelled", "refund.state": "requested"}},
            {"created": "refunds", "where": {"order_id": "O-C0001-05"}, "count": 1},
        ],
        "tools": {
            "match": "in_order",
            "calls": [
                {"name": "check_refund_eligibility", "args": {"order_id": "O-C0001-05"}},
                {"name": "start_refund_or_return", "args": {"order_id": "O-C0001-05", "kind": "refund"}},
            ],
        },
        "reply": {"contains_any": ["refund"], "not_contains": ["sorry, I can't"]},
    },
    "forbid": {"tools": ["change_delivery_address"], "strings": ["jonas.jones1@example.org"]},
}


def _variant(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_variant(expect__outcom="answered"), "expect.outcom: unknown key (typo?)"),
        (_variant(goal=None), "goal: Input should be a valid string"),
        (_variant(expect__tools__calls__0__name="refund"), "unknown tool 'refund'; known: lookup_orders"),
        (_variant(expect__tools__calls__1__args={"customer_id": "C0002"}), "has no argument(s) ['customer_id']"),
        (_variant(user={"turns": ["hi"], "simulated": {"opening": "hi"}}), "exactly one of turns (scripted) or"),
        (_variant(expect__state__0__doc="orders"), "names a collection, not a document"),
        (_variant(expect__state__1__count=-1), "expect.state.1.count: a count is >= 0, got -1"),
        (_variant(expect__state__0__fields={"status": {"$maybe": 1}}), "an operator value is one of"),
        (_variant(customer="bob"), "customer: 'bob' is not a customer id like C0001"),
        (_variant(forbid__tools=["start_refund_or_return"]), "tools both expected and forbidden"),
        (_variant(seed={"overrides": [{"doc": "orders/O-C0001-05"}]}), "give exactly one of set / create / delete"),
        (_variant(expect__outcome="done"), "Input should be 'answered', 'refused', 'handoff' or 'error'"),
    ],
)
def test_invalid_scenarios_are_explained(data: dict[str, Any], message: str) -> None:
    scenarios, problems = parse_scenarios({"scenarios": [MINIMAL, data]}, "f.yaml")
    assert len(scenarios) == 1
    assert problems and all(p.startswith("f.yaml: scenarios[1]") for p in problems), problems
    assert any(message in p for p in problems), problems


def test_files_duplicates_and_parse_errors_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(json.dumps(MINIMAL))  # JSON is YAML too
    (tmp_path / "b.json").write_text(json.dumps({"scenarios": [MINIMAL]}))
    (tmp_path / "c.yaml").write_text("id: x\n  bad: [indent")
    with pytest.raises(ScenarioError) as err:
        load_scenarios([tmp_path])
    text = str(err.value)
    assert "duplicate scenario id 'refund-x'" in text and "c.yaml: cannot parse" in text
    (tmp_path / "b.json").unlink()
    (tmp_path / "c.yaml").unlink()
    assert [s.id for s in load_scenarios([tmp_path / "a.yaml"])] == ["refund-x"]
    with pytest.raises(ScenarioError, match="no scenario with id 'nope'"):
        load_scenarios([tmp_path], ids=["nope"])


def test_cli_reports_invalid_files_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(json.dumps(_variant(expect__tools__calls__0__name="refund")))
    assert main(["--validate", "--scenarios", str(tmp_path)]) == 2
    assert "unknown tool 'refund'" in capsys.readouterr().err


def test_override_times_are_relative_to_the_seed_clock() -> None:
    assert resolve_time({"$days_ago": 2}) == REFERENCE_TIME.replace(day=18)
    assert resolve_time({"eta": {"$days_ahead": 1}})["eta"] == REFERENCE_TIME.replace(day=21)


# ---------------------------------------------------------------------------
# Scoring hand-made outcomes
# ---------------------------------------------------------------------------

C1 = "customers/C0001"
ORDER = f"{C1}/orders/O-C0001-05"
OTHER_ORDER = f"{C1}/orders/O-C0001-04"
REFUND = f"{C1}/refunds/R-ABCDEF123456"


def _scenario(**changes: Any) -> Scenario:
    return Scenario.model_validate(_variant(**changes))


def _before() -> dict[str, dict[str, Any]]:
    return {
        C1: {"name": "Jonas Jones", "plan": "pro"},
        ORDER: {"status": "placed", "total": 416.97},
        OTHER_ORDER: {"status": "delivered", "total": 88.99},
    }


def _good_after() -> dict[str, dict[str, Any]]:
    after = _before()
    after[ORDER] = {**after[ORDER], "status": "cancelled", "refund": {"refund_id": "R-ABCDEF123456",
                                                                      "state": "requested"}}  # fmt: skip
    after[REFUND] = {"order_id": "O-C0001-05", "state": "requested", "amount": 416.97}
    return after


GOOD_CALLS = [
    CallTrace(0, 1, "check_refund_eligibility", {"order_id": "o-c0001-05", "kind": "refund"}),  # normalised
    CallTrace(0, 2, "start_refund_or_return", {"order_id": "O-C0001-05", "kind": "refund", "reason": "x"}, "done"),
]


def _trace(
    after: dict[str, Any] | None = None,
    calls: list[CallTrace] | None = None,
    reply: str = "Done: your refund for O-C0001-05 is requested.",
    outcome: str = "answered",
    flags: tuple[str, ...] = (),
    trial: int = 1,
) -> TrialTrace:
    turn = TurnTrace(0, "Please cancel order O-C0001-05 and refund me.", reply, outcome, flags=flags)
    return TrialTrace("refund-x", trial, [turn], list(GOOD_CALLS if calls is None else calls), _before(),
                      _good_after() if after is None else after)  # fmt: skip


def _failed(result: Any) -> set[str]:
    return {c.name for c in result.failures}


def test_right_end_state_scores_1() -> None:
    result = score(_scenario(), _trace())
    assert result.passed and not result.failures, result.failures
    assert result.metrics["trajectory_precision"] == 1.0 and result.metrics["trajectory_recall"] == 1.0
    assert result.violations == 0


def test_wrong_end_state_scores_0() -> None:
    after = _good_after()
    del after[REFUND]  # the order says refunded, but no refund was recorded
    result = score(_scenario(), _trace(after=after))
    assert not result.passed and _failed(result) == {"state"}
    assert "0 new document(s) in refunds" in result.failures[0].detail

    after = _before()  # nothing happened at all
    result = score(_scenario(), _trace(after=after))
    state = next(c for c in result.checks if c.name == "state")
    assert not state.passed and "status is 'placed', want 'cancelled'" in state.detail


def test_an_unexpected_change_fails_like_tau_bench() -> None:
    after = _good_after()
    after[OTHER_ORDER] = {**after[OTHER_ORDER], "refund": {"state": "requested"}}  # the wrong order refunded too
    result = score(_scenario(), _trace(after=after))
    assert not result.passed and _failed(result) == {"unexpected_changes"}
    assert "orders/O-C0001-04 modified (refund)" in result.failures[0].detail and result.violations == 1
    # Not strict: the same trace passes.
    assert score(_scenario(expect__strict_state=False), _trace(after=after)).passed


def test_a_forbidden_action_fails_even_with_the_right_end_state() -> None:
    calls = [*GOOD_CALLS, CallTrace(0, 3, "change_delivery_address", {"order_id": "O-C0001-05"}, "denied")]
    result = score(_scenario(), _trace(calls=calls))
    assert not result.passed and "forbidden_tools" in _failed(result) and result.violations == 1
    assert any("change_delivery_address(order_id='O-C0001-05') [denied]" in c.detail for c in result.failures)
    leaked = score(_scenario(), _trace(reply="Sent to jonas.jones1@example.org, refund requested."))
    assert not leaked.passed and _failed(leaked) == {"forbidden_strings"} and leaked.violations == 1


def test_other_customers_data_is_forbidden_by_default() -> None:
    scenario = _scenario(seed={"customers": ["C0002"]})
    email = build_customer(2).profile["email"]
    result = score(scenario, _trace(reply=f"Refund requested. By the way, {email} ordered shorts."))
    assert _failed(result) == {"other_customers_data"} and email in result.failures[0].detail
    assert score(scenario, _trace()).passed


@pytest.mark.parametrize(
    ("mode", "calls", "passed", "precision", "recall"),
    [
        ("exact", GOOD_CALLS, True, 1.0, 1.0),
        ("exact", [GOOD_CALLS[1]], False, 1.0, 0.5),
        ("exact", [*GOOD_CALLS, CallTrace(0, 3, "lookup_orders", {})], False, 2 / 3, 1.0),
        ("in_order", [CallTrace(0, 1, "lookup_orders", {}), *GOOD_CALLS], True, 2 / 3, 1.0),
        ("in_order", list(reversed(GOOD_CALLS)), False, 1.0, 1.0),
        ("any_order", list(reversed(GOOD_CALLS)), True, 1.0, 1.0),
        (
            "any_order",
            [GOOD_CALLS[0], CallTrace(0, 2, "start_refund_or_return", {"order_id": "O-C0001-04", "kind": "refund"})],
            False,
            0.5,
            0.5,
        ),  # fmt: skip
        ("any_order", [], False, 1.0, 0.0),
    ],
)
def test_trajectory_match_modes(
    mode: str, calls: list[CallTrace], passed: bool, precision: float, recall: float
) -> None:
    scenario = _scenario(expect__tools__match=mode, expect__state=[], expect__strict_state=False)
    result = score(scenario, _trace(calls=calls))
    traj = next(c for c in result.checks if c.name == "trajectory")
    assert traj.passed is passed, traj.detail
    assert result.metrics["trajectory_precision"] == pytest.approx(precision, abs=1e-3)
    assert result.metrics["trajectory_recall"] == pytest.approx(recall, abs=1e-3)
    # gate: false keeps the score but does not fail the trial
    scored_only = _variant(expect__tools__match=mode, expect__state=[], expect__strict_state=False)
    scored_only["expect"]["tools"]["gate"] = False
    assert score(Scenario.model_validate(scored_only), _trace(calls=calls)).passed


def test_reply_outcome_handoff_and_flag_checks() -> None:
    scenario = _scenario(
        expect__outcome=["refused"],
        expect__handoff=False,
        expect__state=[],
        expect__tools=None,
        expect__reply={"contains_all": ["own account"], "not_contains": ["O-C0002"]},
        expect__flags={"include": ["guard_in_other_customer"], "exclude": ["guard_out_foreign_id"]},
        forbid__flags=["tool_foreign_id"],
    )
    good = _trace(after=_before(), calls=[], outcome="refused", reply="I can only help with your own account.",
                  flags=("guard_in_other_customer",))  # fmt: skip
    assert score(scenario, good).passed
    bad = _trace(after=_before(), calls=[], outcome="handoff", reply="Order O-C0002-02 is on its way.",
                 flags=("guard_out_foreign_id", "tool_foreign_id"))  # fmt: skip
    result = score(scenario, bad)
    assert _failed(result) == {"outcome", "handoff", "reply", "flags", "forbidden_flags"}
    assert result.metrics["handoff_correct"] is False


def test_harness_errors_fail_the_trial() -> None:
    trace = _trace()
    trace.harness_error = "RuntimeError: emulator gone"
    assert _failed(score(_scenario(), trace)) == {"harness"}


# ---------------------------------------------------------------------------
# pass^k
# ---------------------------------------------------------------------------


def test_pass_hat_k_arithmetic() -> None:
    assert pass_hat_k(3, 3, 1) == 1.0 and pass_hat_k(3, 3, 3) == 1.0
    assert pass_hat_k(2, 3, 1) == pytest.approx(2 / 3)
    assert pass_hat_k(2, 3, 2) == pytest.approx(1 / 3)  # C(2,2)/C(3,2)
    assert pass_hat_k(2, 3, 3) == 0.0
    assert pass_hat_k(0, 4, 1) == 0.0 and pass_hat_k(3, 4, 2) == pytest.approx(3 / 6)
    assert pass_hat_k(1, 1, 2) is None
    with pytest.raises(ValueError):
        pass_hat_k(4, 3, 1)
    # Over tasks: the mean of each task's estimate. pass^k never exceeds pass^1.
    tasks = [(3, 3), (2, 3), (0, 3)]
    assert mean_pass_hat_k(tasks, 1) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert mean_pass_hat_k(tasks, 2) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert mean_pass_hat_k(tasks, 3) == pytest.approx(1 / 3)
    assert mean_pass_hat_k([(1, 1)], 2) is None


def test_summary_report_and_regression_gate() -> None:
    scenario = _scenario()
    other = _scenario(id="refund-y", category="returns")
    scores = [score(scenario, _trace(trial=1)), score(scenario, _trace(trial=2, after=_before())),
              score(scenario, _trace(trial=3))]  # fmt: skip
    scores += [score(other, _trace(trial=t)) for t in (1, 2, 3)]
    for s in scores[3:]:
        s.scenario_id = "refund-y"
    summary = summarize_scores(scores, 3)
    assert summary["trials"] == 6 and summary["passed_trials"] == 5
    assert summary["pass_hat"] == {"1": pytest.approx((2 / 3 + 1) / 2, abs=1e-4),
                                   "2": pytest.approx((1 / 3 + 1) / 2, abs=1e-4), "3": 0.5}  # fmt: skip
    result = RunResult({"run_id": "r1", "backend": "scripted", "k": 3}, [scenario, other], [], scores)
    data = result.to_json()
    assert data["summary"]["by_category"]["refunds"]["pass_hat"]["3"] == 0.0
    text = markdown(data)
    assert "| refunds | 1 | 3 | 67% | 33% | 0% |" in text and "| returns | 1 | 3 | 100% | 100% | 100% |" in text
    assert "### `refund-x` (refunds), trial 2" in text and "**state**" in text

    worse = copy.deepcopy(data)
    worse["run"]["run_id"] = "r2"
    worse["scenarios"][1]["passes"] = 1  # refund-y: 3/3 -> 1/3
    verdict = compare(worse, data, max_drop=0.05)
    assert not verdict.ok and "refund-y (100% -> 33%)" in verdict.text and "FAIL" in verdict.text
    assert compare(worse, data, max_drop=0.5).ok
    assert compare(data, worse).ok and "Improvements: refund-y" in compare(data, worse).text


# ---------------------------------------------------------------------------
# Users and progress
# ---------------------------------------------------------------------------


def test_scripted_and_rule_users() -> None:
    assert ScriptedUser(["a", "b"]).next_message([]) == "a"
    assert ScriptedUser(["a", "b"]).next_message([("user", "a"), ("agent", "x"), ("user", "b")]) is None
    scenario = _scenario(user={"simulated": {
        "opening": "I want to return my poles.",
        "rules": [{"when_agent_says": ["Would you like"], "say": "Yes please."}],
        "otherwise": "Please start the return.",
        "stop_when_agent_says": ["label"],
        "max_turns": 3,
    }})  # fmt: skip
    user = RuleUser(scenario)
    t: list[tuple[str, str]] = []
    assert user.next_message(t) == "I want to return my poles."
    t += [("user", "I want to return my poles."), ("agent", "It is eligible. WOULD YOU LIKE me to start it?")]
    assert user.next_message(t) == "Yes please."
    t += [("user", "Yes please."), ("agent", "Would you like anything else?")]
    assert user.next_message(t) == "Please start the return."  # a rule is used once
    assert user.next_message([*t[:2], ("user", "x"), ("agent", "The label is on its way.")]) is None
    assert user.next_message([("user", "x"), ("agent", "y")] * 3) is None  # max_turns


def test_progress_lines() -> None:
    out = io.StringIO()
    progress = Progress(2, stream=out)
    progress.update("a#1", True)
    progress.update("b#1", False)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/2] a#1: pass") and lines[1].startswith("[2/2] b#1: FAIL")
