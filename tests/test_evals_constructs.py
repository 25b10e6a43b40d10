"""The scenario constructs that say what a support policy says, each shown to fail a wrong agent and pass a right one.

Every construct is used by a shipped scenario (evals/scenarios/precise.yaml, timing.yaml); the tests score
hand-made traces (a "scripted agent": what the conversation did, the database before and after) against
those very scenarios, and check that each misuse of a construct is reported with file, scenario id and field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from evals.packworld import scenarios_folder
from evals.run import main
from evals.scenario import Scenario, load_scenarios, parse_scenarios
from evals.scoring import TrialScore, score
from evals.trace import CallTrace, TrialTrace, TurnTrace

DEFAULT_SCENARIOS = scenarios_folder("shop")  # the default pack's dev split


@pytest.fixture(scope="module")
def shipped() -> dict[str, Scenario]:
    return {s.id: s for s in load_scenarios([DEFAULT_SCENARIOS])}


def _turn(index: int, reply: str, outcome: str = "answered", **kw: Any) -> TurnTrace:
    return TurnTrace(index, f"message {index}", reply, outcome, message_ids=kw.pop("message_ids", (f"m-{index}",)),
                     **kw)  # fmt: skip


def _trace(sid: str, before: dict[str, Any], after: dict[str, Any], turns: list[TurnTrace],
           calls: list[CallTrace] = ()) -> TrialTrace:  # type: ignore[assignment]  # fmt: skip
    sent = [m for t in turns for m in t.message_ids]
    return TrialTrace(sid, 1, turns, list(calls), before, after, sent_message_ids=sent)


def _failed(result: TrialScore) -> set[str]:
    return {c.name for c in result.failures if c.gate}


def _check(result: TrialScore, name: str) -> Any:
    return next(c for c in result.checks if c.name == name)


# ---------------------------------------------------------------------------
# Audit records, call counts, argument predicates (address-change-written-once)
# ---------------------------------------------------------------------------

C9 = "customers/C0009"
ORDER9 = f"{C9}/orders/O-C0009-04"


def _address(postcode: str) -> dict[str, Any]:
    return {"status": "placed", "shipping": {"address": {"postcode": postcode, "city": "Bordeaux"}}}


def _audit(tool: str, status: str = "done", **args: Any) -> dict[str, Any]:
    return {"tool": tool, "status": status, "args": args, "customer_id": "C0009"}


def _write(postcode: str, status: str = "done") -> CallTrace:
    return CallTrace(0, 1, "change_delivery_address", {"order_id": "O-C0009-04", "postcode": postcode,
                                                       "city": "Bordeaux"}, status)  # fmt: skip


def test_address_written_once_passes_and_twice_fails(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["address-change-written-once"]
    before = {C9: {"name": "x"}, ORDER9: _address("72388")}
    right = {**before, ORDER9: _address("33000"), f"{C9}/audit/a1": _audit("change_delivery_address")}
    good = score(scenario, _trace(scenario.id, before, right, [_turn(0, "Done: it goes to Bordeaux.")],
                                  [_write("33000")]))  # fmt: skip
    assert good.passed, good.failures

    # Half-wrong first, then right: the end state is the same, but two audit records, two writes, a bad postcode.
    twice = {**right, f"{C9}/audit/a0": _audit("change_delivery_address")}
    bad = score(scenario, _trace(scenario.id, before, twice, [_turn(0, "Done.")], [_write("33001"), _write("33000")]))
    assert _failed(bad) == {"state", "tool_counts", "forbidden_tools"}
    assert "2 new document(s) in audit" in _check(bad, "state").detail
    assert "2 call(s), want exactly 1" in _check(bad, "tool_counts").detail
    assert "postcode='33001'" in _check(bad, "forbidden_tools").detail and bad.violations == 1


def test_audit_records_are_exempt_from_strict_state_unless_asked(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["address-change-written-once"]  # strict_audit: true
    before = {C9: {"name": "x"}, ORDER9: _address("72388")}
    after = {**before, ORDER9: _address("33000"), f"{C9}/audit/a1": _audit("change_delivery_address"),
             f"{C9}/audit/a2": _audit("lookup_orders", "denied")}  # fmt: skip
    result = score(scenario, _trace(scenario.id, before, after, [_turn(0, "Done.")], [_write("33000")]))
    assert "audit/a2 created" in _check(result, "unexpected_changes").detail
    # The same without strict_audit: a denied attempt's audit record is bookkeeping, not an unexpected change.
    lenient = scenario.model_copy(update={"expect": scenario.expect.model_copy(update={"strict_audit": False})})
    assert _check(score(lenient, _trace(scenario.id, before, after, [_turn(0, "Done.")], [_write("33000")])),
                  "unexpected_changes").passed  # fmt: skip


# ---------------------------------------------------------------------------
# Forbid by argument, with at_most (refunds-only-the-asked-order)
# ---------------------------------------------------------------------------

C1 = "customers/C0001"


def _refund_world() -> tuple[dict[str, Any], dict[str, Any]]:
    before = {C1: {"name": "x"}, f"{C1}/orders/O-C0001-05": {"status": "placed"},
              f"{C1}/orders/O-C0001-04": {"status": "delivered"}}  # fmt: skip
    after = {**before, f"{C1}/orders/O-C0001-05": {"status": "cancelled", "refund": {"state": "requested"}},
             f"{C1}/refunds/R-1": {"order_id": "O-C0001-05"},
             f"{C1}/audit/a1": {"tool": "start_refund_or_return", "status": "done"}}  # fmt: skip
    return before, after


def _refund_calls(*extra: CallTrace) -> list[CallTrace]:
    ask = {"order_id": "O-C0001-05", "kind": "refund"}
    return [CallTrace(0, 1, "check_refund_eligibility", ask), *extra,
            CallTrace(0, 3, "start_refund_or_return", ask, "done")]  # fmt: skip


def test_a_refund_attempt_on_another_order_fails_even_when_denied(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["refunds-only-the-asked-order"]
    before, after = _refund_world()
    turns = [_turn(0, "Cancelled; your refund is requested.")]
    assert score(scenario, _trace(scenario.id, before, after, turns, _refund_calls())).passed
    peek = CallTrace(0, 2, "check_refund_eligibility", {"order_id": "O-C0001-04", "kind": "refund"})
    assert score(scenario, _trace(scenario.id, before, after, turns, _refund_calls(peek))).passed  # at_most: 1
    fishing = _refund_calls(peek, peek)
    assert _failed(score(scenario, _trace(scenario.id, before, after, turns, fishing))) == {"forbidden_tools"}
    other = CallTrace(0, 2, "start_refund_or_return", {"order_id": "o-c0001-04", "kind": "refund"}, "denied")
    result = score(scenario, _trace(scenario.id, before, after, turns, _refund_calls(other)))
    assert _failed(result) == {"forbidden_tools"} and "start_refund_or_return(order_id='o-c0001-04'" in \
        _check(result, "forbidden_tools").detail  # fmt: skip


# ---------------------------------------------------------------------------
# Optional counts, any_of, several fields, allowed changes (policy-warranty-ticket-optional)
# ---------------------------------------------------------------------------


def _warranty(after_extra: dict[str, Any], reply: str, outcome: str = "answered") -> TrialScore:
    scenario = load_scenarios([DEFAULT_SCENARIOS], ids=["policy-warranty-ticket-optional"])[0]
    before = {C1: {"name": "x"}, f"{C1}/orders/O-C0001-03": {"status": "delivered"}}
    trace = _trace(scenario.id, before, {**before, **after_extra}, [_turn(0, reply, outcome)])
    return score(scenario, trace)


def test_either_explain_the_warranty_or_open_a_ticket_citing_it_or_hand_off() -> None:
    assert _warranty({}, "The tent is covered by our 2-year warranty; here is how to claim it.").passed
    ticket = {"subject": "Broken tent pole", "details": "Warranty claim for O-C0001-03", "status": "open"}
    assert _warranty({f"{C1}/tickets/T-1": ticket}, "I've opened a ticket for you.").passed  # details cite it
    handed = _warranty({f"{C1}/handoffs/H-1": {"state": "waiting"}}, "A colleague will help.", "handoff")
    assert handed.passed, handed.failures  # the third alternative; its document is an allowed change
    # None of the three: one any_of check that names each alternative's failure.
    wrong = _warranty({f"{C1}/tickets/T-1": {**ticket, "details": "tent broke"}}, "Sorry to hear that.")
    assert _failed(wrong) == {"any_of"}
    detail = _check(wrong, "any_of").detail
    assert "[0] reply: none of" in detail and "[1] state: 0 new document(s) in tickets" in detail
    assert "[2] handoff: handed off: False" in detail
    # Optional, but at most one ticket; and another kind of change is still unexpected.
    two = _warranty({f"{C1}/tickets/T-1": ticket, f"{C1}/tickets/T-2": ticket}, "Covered by the warranty.")
    assert _failed(two) == {"state"} and "want at most 1" in _check(two, "state").detail
    refund = _warranty({f"{C1}/returns/RMA-1": {"state": "label_sent"}}, "Covered by the warranty.")
    assert _failed(refund) == {"unexpected_changes"}


def test_a_handoff_with_its_document_passes_through_allowed_changes() -> None:
    scenario = load_scenarios([DEFAULT_SCENARIOS], ids=["policy-warranty-ticket-optional"])[0]
    before = {C1: {"name": "x"}}
    after = {**before, f"{C1}/handoffs/H-1": {"state": "waiting"}}
    record = {"reason": "agent_request", "summary": "broken tent", "message_ids": ["m-0"]}
    trace = _trace(scenario.id, before, after, [_turn(0, "A colleague will help.", "handoff", handoff=record)])
    assert score(scenario, trace).passed
    strict = scenario.model_copy(update={"expect": scenario.expect.model_copy(update={"allowed_changes": []})})
    assert _failed(score(strict, trace)) == {"unexpected_changes"}


def test_asks_which_order_or_reports_both(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["orders-which-of-two"]
    ok = [_turn(0, "You have two orders on the way. Which order do you mean?")]
    assert score(scenario, _trace(scenario.id, {}, {}, ok)).passed
    both = [_turn(0, "O-C0053-04 arrives Friday; O-C0053-05 arrives Monday.")]
    assert score(scenario, _trace(scenario.id, {}, {}, both)).passed
    one = [_turn(0, "O-C0053-04 arrives Friday.")]  # guesses one of the two: neither alternative
    assert _failed(score(scenario, _trace(scenario.id, {}, {}, one))) == {"any_of"}
    calls = [CallTrace(0, i, "get_shipment_status", {"order_id": "O-C0053-04"}) for i in range(3)]
    assert _failed(score(scenario, _trace(scenario.id, {}, {}, ok, calls))) == {"tool_counts"}  # at most 2


# ---------------------------------------------------------------------------
# Any reply / every reply, all_of (returns-every-reply-stays-on-topic)
# ---------------------------------------------------------------------------


def test_some_reply_explains_and_no_reply_promises(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["returns-every-reply-stays-on-topic"]
    right = [_turn(0, "Yes: returns are open for 30 days after delivery."), _turn(1, "The refund follows the return.")]
    assert score(scenario, _trace(scenario.id, {}, {}, right)).passed
    silent = [_turn(0, "Let me check."), _turn(1, "The refund follows the return.")]
    result = score(scenario, _trace(scenario.id, {}, {}, silent))
    assert _failed(result) == {"all_of"} and "[0] reply: no reply passes" in _check(result, "all_of").detail
    promise = [right[0], _turn(1, "Sure, your refund has been issued.")]
    result = score(scenario, _trace(scenario.id, {}, {}, promise))
    assert _failed(result) == {"all_of"} and "[1] reply: reply 1: contains" in _check(result, "all_of").detail


# ---------------------------------------------------------------------------
# Turns and the hand-off record (timing.yaml; the timing itself: tests/test_evals_timing.py)
# ---------------------------------------------------------------------------

RECORD = {"reason": "user_request", "summary": "", "message_ids": ["hello", "late", "human"]}


def test_the_handoff_record_covers_the_whole_burst(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["handoff-burst-one-record"]
    one = [_turn(0, "Connecting you.", "handoff", message_ids=("hello", "late", "human"), handoff=RECORD)]
    assert score(scenario, _trace(scenario.id, {}, {}, one)).passed
    # The burst split in two turns: the record misses the first messages, and there are two turns.
    split = [_turn(0, "Hello!", message_ids=("hello", "late")),
             _turn(1, "Connecting you.", "handoff", message_ids=("human",),
                   handoff={**RECORD, "message_ids": ["human"]})]  # fmt: skip
    result = score(scenario, _trace(scenario.id, {}, {}, split))
    assert _failed(result) == {"turns", "handoff_record"}
    assert "message_ids ['human'], want ['hello', 'human', 'late']" in _check(result, "handoff_record").detail
    # A message that was sent but neither answered nor in the record.
    lost = _trace(scenario.id, {}, {}, [_turn(0, "Connecting you.", "handoff", message_ids=("hello", "late", "human"),
                                              handoff={**RECORD, "reason": "guardrail"})])  # fmt: skip
    lost.sent_message_ids.append("after")
    detail = _check(score(scenario, lost), "handoff_record").detail
    assert "reason 'guardrail', want user_request" in detail
    assert "neither answered nor in the record: ['after']" in detail
    none = [_turn(0, "Here you go.", message_ids=("hello", "late", "human"))]
    assert "no hand-off record" in _check(score(scenario, _trace(scenario.id, {}, {}, none)), "handoff_record").detail


def test_a_redelivered_message_answered_twice_fails(shipped: dict[str, Scenario]) -> None:
    scenario = shipped["orders-redelivered-message"]
    once = [_turn(0, "It is on its way.", message_ids=("ask",))]
    assert score(scenario, _trace(scenario.id, {}, {}, once)).passed
    twice = [*once, _turn(1, "You already asked: it is on its way.", message_ids=("ask",))]
    assert _failed(score(scenario, _trace(scenario.id, {}, {}, twice))) == {"turns", "reply"}


def test_every_new_construct_is_used_by_a_shipped_scenario(shipped: dict[str, Scenario]) -> None:
    used: set[str] = set()
    for s in shipped.values():
        e = s.expect
        for g in e.walk():
            used |= {"any_of"} if g.any_of else set()
            used |= {"all_of"} if g.all_of else set()
            used |= {"handoff_record"} if g.handoff_record else set()
            used |= {"turns"} if g.turns else set()
            used |= {f"reply.{g.reply.which}"} if g.reply else set()
            used |= {"tool_count"} if g.tools and any(c.count for c in g.tools.calls) else set()
            for st in g.state:
                used |= {"audit"} if st.created == "audit" else set()
                used |= {"ranged_count"} if st.count and st.count.min != st.count.max else set()
                used |= {"either_field"} if any("|" in k for k in st.where) else set()
        used |= {"allowed_changes"} if e.allowed_changes else set()
        used |= {"strict_audit"} if e.strict_audit else set()
        used |= {"forbid_args"} if any(f.args for f in s.forbid.tools) else set()
        used |= {"forbid_at_most"} if any(f.at_most for f in s.forbid.tools) else set()
        used |= {"policy"} if s.seed.policy else set()
        if s.user.messages:
            used |= {"timed"} | ({"redelivery"} if len({m.id for m in s.user.messages if m.id}) <
                                 sum(1 for m in s.user.messages if m.id) else set())  # fmt: skip
    assert used >= {"any_of", "all_of", "handoff_record", "turns", "reply.any", "reply.all", "tool_count", "audit",
                    "ranged_count", "either_field", "allowed_changes", "strict_audit", "forbid_args",
                    "forbid_at_most", "timed", "redelivery", "policy"}, used  # fmt: skip


# ---------------------------------------------------------------------------
# Misuse: each kind is reported with file, scenario id and field
# ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "id": "base",
    "category": "orders",
    "customer": "C0001",
    "goal": "Track an order.",
    "user": {"turns": ["Where is O-C0001-05?"]},
    "expect": {"outcome": "answered"},
}


def _misuse(sid: str, **sections: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["id"] = sid
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


MISUSES: list[tuple[dict[str, Any], str]] = [
    (
        _misuse("count-range", expect={"state": [{"created": "tickets", "count": {"min": 2, "max": 1}}]}),
        "expect.state.0.count: min 2 is above max 1",
    ),
    (
        _misuse("count-negative", expect={"tools": {"calls": [{"name": "lookup_orders", "count": -1}]}}),
        "expect.tools.calls.0.count: a count is >= 0, got -1",
    ),
    (
        _misuse(
            "count-exact-mode", expect={"tools": {"match": "exact", "calls": [{"name": "lookup_orders", "count": 1}]}}
        ),
        "expect.tools: calls[0].count: counts go with match in_order / any_order",
    ),
    (
        _misuse("forbid-unknown-arg", forbid={"tools": [{"name": "open_ticket", "args": {"amount": 3}}]}),
        "forbid.tools.0: open_ticket has no argument(s) ['amount']",
    ),
    (
        _misuse(
            "forbid-bad-operator", forbid={"tools": [{"name": "lookup_orders", "args": {"order_id": {"$nope": 1}}}]}
        ),
        "forbid.tools.0: args.order_id: an operator value is one of",
    ),
    (
        _misuse(
            "forbid-both", expect={"tools": {"calls": [{"name": "lookup_orders"}]}}, forbid={"tools": ["lookup_orders"]}
        ),
        "forbid.tools: tools both expected and forbidden: ['lookup_orders']",
    ),
    (
        _misuse("allowed-not-strict", expect={"strict_state": False, "allowed_changes": ["tickets"]}),
        "expect: allowed_changes: only with strict_state: true",
    ),
    (
        _misuse("allowed-bad-path", expect={"allowed_changes": ["tick ets"]}),
        "expect.allowed_changes: 'tick ets' is not a Firestore path",
    ),
    (
        _misuse("any-of-empty", expect={"any_of": [{"reply": {"contains_any": ["x"]}}, {}]}),
        "expect.any_of: group(s) [1] have no checks",
    ),
    (
        _misuse("any-of-typo", expect={"any_of": [{"replies": {"contains_any": ["x"]}}]}),
        "expect.any_of.0.replies: unknown key (typo?)",
    ),
    (
        _misuse("reply-which", expect={"reply": {"which": "some", "contains_any": ["x"]}}),
        "expect.reply.which: Input should be 'final', 'any' or 'all'",
    ),
    (
        _misuse("field-alternatives", expect={"state": [{"created": "tickets", "where": {"subject|": "x"}}]}),
        "bad field path 'subject|'",
    ),
    (
        _misuse(
            "contains-any", expect={"state": [{"created": "tickets", "where": {"subject": {"$contains_any": "x"}}}]}
        ),
        "$contains_any takes a non-empty list of strings",
    ),
    (
        _misuse("timed-and-turns", user={"messages": [{"at": 0, "text": "hi"}]}),
        "user: give exactly one of turns (scripted) or simulated or messages",
    ),
    (
        _misuse("timed-order", user={"turns": None, "messages": [{"at": 3, "text": "a"}, {"at": 1, "text": "b"}]}),
        "user: messages must be sorted by their times (at)",
    ),
    (
        _misuse(
            "timed-redelivery",
            user={"turns": None, "messages": [{"at": 0, "id": "a", "text": "x"}, {"at": 1, "id": "a", "text": "y"}]},
        ),
        "messages[1]: id 'a' again with another text",
    ),
    (_misuse("timed-no-text", user={"turns": None, "messages": [{"at": 0}]}), "messages[0]: text is required"),
    (
        _misuse("timed-negative", user={"turns": None, "messages": [{"at": -1, "text": "x"}]}),
        "user.messages.0.at: Input should be greater than or equal to 0",
    ),
    (_misuse("latency-without-timing", user={"reply_after_s": 3}), "reply_after_s goes with messages"),
    (
        _misuse("handoff-reason", expect={"handoff_record": {"reason": "bored"}}),
        "expect.handoff_record.reason.0: Input should be 'user_request'",
    ),
    (
        _misuse("handoff-ids", expect={"handoff_record": {"message_ids": ["m-0", "m-7"]}}),
        "expect.handoff_record.message_ids: unknown message id(s) ['m-7']",
    ),
    (
        _misuse("handoff-summary", expect={"handoff_record": {"summary": {}}}),
        "expect.handoff_record.summary: give at least one of contains_all",
    ),
    (_misuse("turns-count", expect={"turns": "two"}), "expect.turns"),
]


@pytest.mark.parametrize(("data", "message"), MISUSES, ids=[d["id"] for d, _ in MISUSES])
def test_each_misuse_names_file_scenario_and_field(data: dict[str, Any], message: str) -> None:
    scenarios, problems = parse_scenarios({"scenarios": [BASE, data]}, "f.yaml")
    assert [s.id for s in scenarios] == ["base"]
    assert problems and all(p.startswith(f"f.yaml: scenarios[1] ({data['id']}): ") for p in problems), problems
    assert any(message in p for p in problems), problems


def test_validate_reports_every_kind_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"scenarios": [BASE, *(d for d, _ in MISUSES)]}))
    assert main(["--validate", "--scenarios", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for data, message in MISUSES:
        lines = [ln for ln in err.splitlines() if "bad.json: scenarios[" in ln and f"({data['id']}):" in ln]
        assert any(message in ln for ln in lines), (data["id"], lines)


def test_old_files_round_trip_through_the_new_models(shipped: dict[str, Scenario]) -> None:
    """A scenario dumped with every default (as a report stores it) validates again to the same scenario."""
    for s in shipped.values():
        again = Scenario.model_validate(s.model_dump())
        assert again == s, s.id
