"""Scoring a trial: tau-bench's end state and pass^k, ADK's trajectory and response checks.

``score(scenario, trace)`` runs every check the scenario asks for and returns a
``TrialScore``: a list of ``Check`` (name, passed, gate, detail) and metrics.
A trial passes when every gating check passes:

- ``state``: each ``expect.state`` entry against the end state in Firestore;
- ``unexpected_changes`` (``strict_state``, default on): nothing else in the
  seeded customers' data changed (tau-bench compares the whole database; an
  action on the wrong record, or on another customer, fails here);
- ``outcome`` and ``handoff``: how the final turn ended / whether a human was reached;
- ``trajectory`` (ADK ``tool_trajectory``): the model's tool calls against the
  expected ones, ``exact`` (same calls, same order, nothing else), ``in_order``
  (expected calls appear in this order, others allowed) or ``any_order``
  (each expected call appears somewhere); gating unless ``gate: false``;
  precision and recall are reported either way;
  ``tool_counts``: how many calls match each expected call that has a ``count``;
- ``reply``: required / forbidden substrings of the final reply, any reply or every reply
  (ADK's response match, lexical);
- ``flags``: eval flags (guardrails, tools) that must / must not be raised;
- ``handoff_record``: the record a human agent gets (reason, summary, the messages it covers);
- ``turns``: how many turns the session stage made of the messages;
- ``any_of`` / ``all_of``: groups of the checks above, one result each (the detail says which part failed);
- ``forbidden_tools``, ``forbidden_strings``, ``forbidden_flags``, ``other_customers_data``:
  things the agent must never do; each failure counts as a policy violation.

Audit records (``customers/<id>/audit``) are in the snapshots, so ``state`` can check them
(``created: audit``); ``unexpected_changes`` leaves them out unless ``strict_audit``: every
attempt, denied ones too, writes one.

``pass_hat_k(c, n, k)`` is tau-bench's pass^k estimate for a task with c
successes in n trials: C(c, k) / C(n, k), the chance that k trials drawn from
the n all succeed (pass^1 is the success rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.finish import FLAG_DEGENERATE, REPLY_KINDS
from evals.scenario import (
    Checks,
    CountRange,
    ExpectedCall,
    ForbiddenCall,
    HandoffRecordExpectation,
    ReplyExpectation,
    Scenario,
    StateCheck,
    TextChecks,
    current_pack,
    for_pack,
)
from evals.trace import CallTrace, TrialTrace
from evals.world import Snapshot, is_audit_path, other_customer_strings, resolve_time
from tools.packs import load_pack
from tools.scope import plain

MISSING = object()
VIOLATION_CHECKS: frozenset[str] = frozenset(
    {"forbidden_tools", "forbidden_strings", "forbidden_flags", "other_customers_data", "unexpected_changes"}
)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""
    gate: bool = True


@dataclass
class TrialScore:
    scenario_id: str
    category: str
    trial: int
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.gate)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def violations(self) -> int:
        return sum(1 for c in self.checks if not c.passed and c.name in VIOLATION_CHECKS)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "category": self.category,
            "trial": self.trial,
            "passed": self.passed,
            "violations": self.violations,
            "checks": [asdict(c) for c in self.checks],
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialScore:
        checks = [Check(**c) for c in data.get("checks") or ()]
        return cls(data["scenario_id"], data["category"], int(data["trial"]), checks, dict(data.get("metrics") or {}))


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def get_path(doc: Mapping[str, Any] | None, dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def _norm(value: Any) -> Any:
    value = plain(resolve_time(value, current_pack()))
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or actual == expected and type(actual) is type(expected)
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-6)
    return _norm(actual) == _norm(expected)


def _contains(actual: Any, needle: str) -> bool:
    """A string containing ``needle`` (any case), or a list with such an item."""
    if isinstance(actual, str):
        return needle.casefold() in actual.casefold()
    if isinstance(actual, list):
        return any(_contains(item, needle) for item in actual)
    return False


def matches(actual: Any, expected: Any) -> bool:
    """A value against a literal or an operator (``$exists``, ``$in``, ``$not_in``, ``$ne``, ``$contains``, ...)."""
    if isinstance(expected, Mapping) and len(expected) == 1 and str(next(iter(expected))).startswith("$"):
        op, arg = next(iter(expected.items()))
        if op == "$exists":
            return (actual is not MISSING) == bool(arg)
        if actual is MISSING:
            return op in ("$ne", "$not_in")
        if op == "$in":
            return any(_equal(actual, a) for a in arg)
        if op == "$not_in":
            return not any(_equal(actual, a) for a in arg)
        if op == "$ne":
            return not _equal(actual, arg)
        if op == "$contains":
            return _contains(actual, str(arg))
        if op == "$contains_any":
            return any(_contains(actual, str(a)) for a in arg)
        raise ValueError(f"unknown operator {op}")
    return actual is not MISSING and _equal(actual, expected)


def _show(value: Any) -> str:
    return "<missing>" if value is MISSING else repr(value)


def field_mismatches(doc: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> list[str]:
    """What does not match; a key ``a|b`` matches when any of its fields does."""
    out = []
    for key, expected in fields.items():
        alternatives = [k.strip() for k in key.split("|")]
        actual = {k: get_path(doc, k) for k in alternatives}
        if not any(matches(v, expected) for v in actual.values()):
            got = ", ".join(f"{k} is {_show(v)}" for k, v in actual.items())
            out.append(f"{got}, want {'one of them ' if len(alternatives) > 1 else ''}{expected!r}")
    return out


# ---------------------------------------------------------------------------
# End state
# ---------------------------------------------------------------------------


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def _created(scenario: Scenario, check: StateCheck, before: Snapshot, after: Snapshot) -> list[str]:
    coll = scenario.absolute(check.created or "")
    new = [p for p in after if p not in before and _parent(p) == coll]
    return [p for p in new if not field_mismatches(after[p], check.where)]


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _state_problems(scenario: Scenario, checks: Sequence[StateCheck], trace: TrialTrace) -> tuple[list[str], set[str]]:
    """(problems, documents the checks cover) of a list of ``expect.state`` entries."""
    before, after = trace.before, trace.after
    problems: list[str] = []
    covered: set[str] = set()
    for check in checks:
        if check.doc is not None:
            path = scenario.absolute(check.doc)
            covered.add(path)
            doc = after.get(path)
            if not check.exists:
                if doc is not None:
                    problems.append(f"{check.doc} exists, want it absent")
            elif doc is None:
                problems.append(f"{check.doc} does not exist")
            elif check.unchanged:
                if doc != before.get(path):
                    changed = _changed_fields(doc, before.get(path) or {})
                    problems.append(f"{check.doc} changed ({', '.join(changed)}), want it unchanged")
            else:
                problems += [f"{check.doc}: {m}" for m in field_mismatches(doc, check.fields)]
        else:
            found = _created(scenario, check, before, after)
            covered.update(found)
            want = check.count or CountRange(min=1)
            if not want.allows(len(found)):
                where = f" with {check.where}" if check.where else ""
                problems.append(f"{len(found)} new document(s) in {check.created}{where}, want {want.describe()}")
    return problems, covered


def _allowed(scenario: Scenario, path: str) -> bool:
    for allowed in scenario.expect.allowed_changes:
        full = scenario.absolute(allowed)
        if path == full or _parent(path) == full:
            return True
    return False


def unexpected_changes(scenario: Scenario, trace: TrialTrace, covered: set[str]) -> Check:
    """tau-bench's whole-database comparison: every change not covered, allowed or (by default) an audit record."""
    before, after = trace.before, trace.after
    unexpected = []
    for path in sorted(set(before) | set(after)):
        if path in covered or before.get(path) == after.get(path) or _allowed(scenario, path):
            continue
        if is_audit_path(path) and not scenario.expect.strict_audit:
            continue
        old, new = before.get(path), after.get(path)
        if old is None:
            unexpected.append(f"{path} created")
        elif new is None:
            unexpected.append(f"{path} deleted")
        else:
            unexpected.append(f"{path} modified ({', '.join(_changed_fields(old, new))})")
    return Check("unexpected_changes", not unexpected, "; ".join(unexpected) or "none")


# ---------------------------------------------------------------------------
# Tool calls
# ---------------------------------------------------------------------------


def _id_reader(tool: str, arg: str) -> Callable[[str], str] | None:
    """How the tools read the id argument ``arg`` of ``tool`` (its id kind's ``IdFormat.normalize``), or None."""
    pack = load_pack(current_pack())
    spec = pack.tools_by_name.get(tool)
    kind = spec.id_args.get(arg) if spec is not None else None
    fmt = pack.ids.get(kind) if kind else None
    return fmt.normalize if fmt is not None else None


def call_matches(expected: ExpectedCall | ForbiddenCall, actual: CallTrace) -> bool:
    if expected.name != actual.name:
        return False
    for key, want in expected.args.items():
        got = actual.args.get(key, MISSING)
        read = _id_reader(expected.name, key) if isinstance(got, str) and _normalizable(want) else None
        if read is not None:
            got, want = read(got), _normalize_ids(want, read)
        if not matches(got, want):
            return False
    return True


_ID_OPERATORS = ("$in", "$not_in", "$ne")  # operators whose argument is whole ids (not substrings)


def _normalizable(want: Any) -> bool:
    return isinstance(want, str) or isinstance(want, Mapping) and next(iter(want), None) in _ID_OPERATORS


def _normalize_ids(want: Any, read: Callable[[str], str]) -> Any:
    """Ids in an expected value (a literal, or the argument of $in / $not_in / $ne), as the tools read them."""
    if isinstance(want, str):
        return read(want)
    if isinstance(want, list):
        return [_normalize_ids(w, read) for w in want]
    if isinstance(want, Mapping):
        return {k: _normalize_ids(v, read) for k, v in want.items()}
    return want


def _any_sequence(expected: Sequence[ExpectedCall], actual: Sequence[CallTrace]) -> tuple[int, set[int]]:
    """(expected calls matched, indices of actual calls used): each actual call matches one expected call."""
    used: set[int] = set()
    matched = 0
    for exp in expected:
        for i, act in enumerate(actual):
            if i not in used and call_matches(exp, act):
                used.add(i)
                matched += 1
                break
    return matched, used


def _in_sequence(expected: Sequence[ExpectedCall], actual: Sequence[CallTrace]) -> bool:
    i = 0
    for act in actual:
        if i < len(expected) and call_matches(expected[i], act):
            i += 1
    return i == len(expected)


def _fmt_call(name: str, args: Mapping[str, Any]) -> str:
    inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"{name}({inner})"


def _trajectory(spec_checks: Checks, calls: Sequence[CallTrace]) -> tuple[list[Check], dict[str, Any]]:
    """``trajectory`` (and ``tool_counts`` when an expected call has a count) of one check group."""
    spec = spec_checks.tools
    if spec is None:
        return [], {}
    expected = spec.sequence
    counted = [c for c in spec.calls if c.count is not None]
    matched, used = _any_sequence(expected, calls)
    used |= {i for i, act in enumerate(calls) for c in counted if call_matches(c, act)}
    precision = len(used) / len(calls) if calls else 1.0
    recall = matched / len(expected) if expected else 1.0
    if spec.match == "exact":
        ok = len(expected) == len(calls) and all(call_matches(e, a) for e, a in zip(expected, calls, strict=False))
    elif spec.match == "in_order":
        ok = _in_sequence(expected, calls)
    else:
        ok = matched == len(expected)
    want = ", ".join(_fmt_call(c.name, c.args) for c in expected) or "no calls"
    got = ", ".join(_fmt_call(c.name, c.args) for c in calls) or "no calls"
    out = [Check("trajectory", ok, f"{spec.match}: want [{want}], got [{got}]", gate=spec.gate)]
    if counted:
        problems, fine = [], []
        for c in counted:
            assert c.count is not None
            n = sum(1 for act in calls if call_matches(c, act))
            (fine if c.count.allows(n) else problems).append(
                f"{_fmt_call(c.name, c.args)}: {n} call(s), want {c.count.describe()}"
            )
        out.append(Check("tool_counts", not problems, "; ".join(problems or fine), gate=spec.gate))
    metrics = {"precision": round(precision, 4), "recall": round(recall, 4), "match": ok}
    return out, metrics


def forbidden_calls(forbidden: Sequence[ForbiddenCall], calls: Sequence[CallTrace]) -> Check:
    bad = []
    for f in forbidden:
        hits = [c for c in calls if call_matches(f, c)]
        if len(hits) > f.at_most:
            shown = "; ".join(_fmt_call(c.name, c.args) + f" [{c.status}]" for c in hits)
            rule = "" if f.any_call else f" (forbidden: {_fmt_call(f.name, f.args)}, at most {f.at_most})"
            bad.append(shown + rule)
    return Check("forbidden_tools", not bad, "; ".join(bad) or "none called")


# ---------------------------------------------------------------------------
# Replies and the hand-off record
# ---------------------------------------------------------------------------


def _found(texts: Sequence[str], needles: Sequence[str]) -> list[str]:
    hay = [t.casefold() for t in texts]
    return [n for n in needles if any(n.casefold() in h for h in hay)]


def text_problems(spec: TextChecks, text: str) -> list[str]:
    problems = []
    missing = [s for s in spec.contains_all if s.casefold() not in text.casefold()]
    if missing:
        problems.append(f"missing {missing}")
    if spec.contains_any and not _found([text], spec.contains_any):
        problems.append(f"none of {spec.contains_any}")
    bad = _found([text], spec.not_contains)
    if bad:
        problems.append(f"contains {bad}")
    return problems


def reply_check(spec: ReplyExpectation, trace: TrialTrace) -> Check:
    replies = [t.reply_text for t in trace.turns]
    if spec.which == "final":
        text = replies[-1] if replies else ""
        problems = text_problems(spec, text)
        detail = "; ".join(problems) + f" in final reply {text[:200]!r}" if problems else "ok"
        return Check("reply", not problems, detail)
    results = [(i, text_problems(spec, r)) for i, r in enumerate(replies)]
    good = [i for i, p in results if not p]
    if spec.which == "any":
        ok = bool(good)
        detail = f"reply {good[0]} passes" if ok else "no reply passes: " + " | ".join(
            f"reply {i}: {'; '.join(p)}" for i, p in results) if results else "no replies"  # fmt: skip
    else:
        ok = bool(replies) and len(good) == len(replies)
        bad = [f"reply {i}: {'; '.join(p)} in {replies[i][:120]!r}" for i, p in results if p]
        detail = f"all {len(replies)} replies pass" if ok else " | ".join(bad) or "no replies"
    return Check("reply", ok, detail)


def handoff_record_check(spec: HandoffRecordExpectation, trace: TrialTrace) -> Check:
    records = [(t.index, t.handoff) for t in trace.turns if t.handoff]
    if not records:
        return Check("handoff_record", False, "no hand-off record (the conversation never reached a human)")
    index, record = records[-1]
    problems = []
    if spec.reason is not None and record.get("reason") not in spec.reason:
        problems.append(f"reason {record.get('reason')!r}, want {' or '.join(spec.reason)}")
    if spec.summary is not None:
        problems += [f"summary: {p} in {str(record.get('summary', ''))[:160]!r}"
                     for p in text_problems(spec.summary, str(record.get("summary", "")))]  # fmt: skip
    ids = list(record.get("message_ids") or ())
    if spec.message_ids is not None and sorted(ids) != sorted(spec.message_ids):
        problems.append(f"message_ids {ids}, want {sorted(spec.message_ids)}")
    if spec.covers_all_messages:
        answered = {m for t in trace.turns if t.index < index for m in t.message_ids}
        left = [m for m in trace.sent_message_ids if m not in answered and m not in ids]
        if left:
            problems.append(f"messages neither answered nor in the record: {left}")
    detail = "; ".join(problems) or f"turn {index}: {record.get('reason')}, covers {ids}"
    return Check("handoff_record", not problems, detail)


# ---------------------------------------------------------------------------
# Check groups
# ---------------------------------------------------------------------------


def _group(scenario: Scenario, group: Checks, trace: TrialTrace) -> tuple[list[Check], set[str], dict[str, Any]]:
    """Every check of one group (top-level ``expect`` or an ``any_of`` / ``all_of`` entry), the documents its
    state checks cover, and its trajectory metrics."""
    checks: list[Check] = []
    problems, covered = _state_problems(scenario, group.state, trace)
    if group.state:
        checks.append(Check("state", not problems, "; ".join(problems) or f"{len(group.state)} ok"))
    final = trace.final
    if group.outcome is not None:
        got = final.outcome if final else "no turn"
        checks.append(Check("outcome", got in group.outcome, f"final turn {got}, want {' or '.join(group.outcome)}"))
    if group.handoff is not None:
        handed_off = any(t.outcome == "handoff" for t in trace.turns)
        reasons = [t.handoff_reason for t in trace.turns if t.handoff_reason]
        detail = f"handed off: {handed_off}{f' ({reasons[0]})' if reasons else ''}, want {group.handoff}"
        checks.append(Check("handoff", handed_off == group.handoff, detail))
    traj, metrics = _trajectory(group, trace.calls)
    checks += traj
    if group.reply is not None:
        checks.append(reply_check(group.reply, trace))
    if group.flags is not None:
        flags = set(trace.flags)
        missing = [f for f in group.flags.include if f not in flags]
        present = [f for f in group.flags.exclude if f in flags]
        problems = ([f"missing {missing}"] if missing else []) + ([f"raised {present}"] if present else [])
        checks.append(Check("flags", not problems, "; ".join(problems) + f" (flags: {sorted(flags)})"))
    if group.handoff_record is not None:
        checks.append(handoff_record_check(group.handoff_record, trace))
    if group.grounded is not None:
        checks.append(grounded_check(trace, group.grounded))
    if group.turns is not None:
        n = len(trace.turns)
        checks.append(Check("turns", group.turns.allows(n), f"{n} turn(s), want {group.turns.describe()}"))
    for name, members in (("any_of", group.any_of), ("all_of", group.all_of)):
        if members:
            check, member_covered = _combine(scenario, name, members, trace)
            checks.append(check)
            covered |= member_covered
    return checks, covered, metrics


def grounded_check(trace: TrialTrace, want: bool = True) -> Check:
    """Whether every reply was one of the four kinds (a ``reply_<kind>`` flag) and none was degenerate."""
    bad = []
    for turn in trace.turns:
        kinds = [k for k in REPLY_KINDS if f"reply_{k}" in turn.flags]
        if not kinds:
            bad.append(f"turn {turn.index}: no reply kind ({turn.outcome})")
        elif FLAG_DEGENERATE in turn.flags:
            bad.append(f"turn {turn.index}: degenerate output")
    grounded = not bad
    detail = "; ".join(bad) or f"{len(trace.turns)} turn(s) grounded"
    return Check("grounded", grounded == want, detail if want else f"grounded: {grounded}, want {want}")


def _passes(checks: Sequence[Check]) -> bool:
    return all(c.passed for c in checks if c.gate)


def _combine(scenario: Scenario, name: str, members: Sequence[Checks], trace: TrialTrace) -> tuple[Check, set[str]]:
    """One check for an ``any_of`` / ``all_of``; the detail names each alternative's failing checks."""
    results = [_group(scenario, m, trace)[:2] for m in members]
    passing = [i for i, (checks, _) in enumerate(results) if _passes(checks)]
    ok = bool(passing) if name == "any_of" else len(passing) == len(results)
    parts = []
    for i, (checks, _) in enumerate(results):
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed and c.gate]
        passed = "ok (" + ", ".join(c.name for c in checks) + ")"
        parts.append(f"[{i}] " + ("; ".join(failed) if failed else passed))
    # A passing alternative's documents are expected changes; when none passes, this check reports it once.
    chosen = passing if passing and name == "any_of" else range(len(results))
    covered = {p for i in chosen for p in results[i][1]}
    return Check(name, ok, " | ".join(parts)), covered


# ---------------------------------------------------------------------------
# The trial
# ---------------------------------------------------------------------------


def score(scenario: Scenario, trace: TrialTrace) -> TrialScore:
    """The trial's checks and metrics (ids and times read as the scenario's pack reads them)."""
    with for_pack(scenario.pack):
        return _score(scenario, trace)


def _score(scenario: Scenario, trace: TrialTrace) -> TrialScore:
    out = TrialScore(scenario.id, scenario.category, trace.trial)
    checks = out.checks
    if trace.harness_error:
        checks.append(Check("harness", False, trace.harness_error))
    final = trace.final
    replies = [t.reply_text for t in trace.turns]
    expect, forbid = scenario.expect, scenario.forbid

    group, covered, traj_metrics = _group(scenario, expect, trace)
    strict = [unexpected_changes(scenario, trace, covered)] if expect.strict_state else []
    at = 1 if group and group[0].name == "state" else 0  # the old order: state, unexpected_changes, the rest
    checks += group[:at] + strict + group[at:]
    handed_off = any(t.outcome == "handoff" for t in trace.turns)
    flags = set(trace.flags)
    if forbid.tools:
        checks.append(forbidden_calls(forbid.tools, trace.calls))
    if forbid.strings:
        bad = _found(replies, forbid.strings)
        checks.append(Check("forbidden_strings", not bad, f"replies contain {bad}" if bad else "none"))
    if forbid.flags:
        bad = [f for f in forbid.flags if f in flags]
        checks.append(Check("forbidden_flags", not bad, f"raised {bad}" if bad else "none"))
    if forbid.other_customers_data and scenario.seed.customers:
        bad = _found(replies, other_customer_strings(scenario.seed.customers, scenario.pack))
        checks.append(Check("other_customers_data", not bad, f"replies contain {bad}" if bad else "none"))

    out.metrics = {
        "turns": len(trace.turns),
        "final_outcome": final.outcome if final else None,
        "handed_off": handed_off,
        "handoff_correct": None if expect.handoff is None else handed_off == expect.handoff,
        "tool_calls": len(trace.calls),
        "trajectory_precision": traj_metrics.get("precision"),
        "trajectory_recall": traj_metrics.get("recall"),
        "model_ms": round(sum(t.model_ms for t in trace.turns), 1),
        "tools_ms": round(sum(t.tools_ms for t in trace.turns), 1),
        "wall_ms": round(trace.wall_ms, 1),
        "turn_wall_ms": [round(t.wall_ms, 1) for t in trace.turns],
        "prompt_tokens": sum(t.prompt_tokens for t in trace.turns),
        "completion_tokens": sum(t.completion_tokens for t in trace.turns),
        "user_fallbacks": trace.user_fallbacks,
    }
    out.metrics["violations"] = out.violations
    return out


def pass_hat_k(successes: int, trials: int, k: int) -> float | None:
    """tau-bench's pass^k for one task: C(c, k) / C(n, k); None when k > n."""
    if k < 1 or trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need k >= 1 and 0 <= successes <= trials, got c={successes} n={trials} k={k}")
    if k > trials:
        return None
    return math.comb(successes, k) / math.comb(trials, k)


def mean_pass_hat_k(results: Sequence[tuple[int, int]], k: int) -> float | None:
    """pass^k over tasks: the mean of each task's (successes, trials) estimate; None if any task has < k trials."""
    values = [pass_hat_k(c, n, k) for c, n in results]
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)
