"""The HTML report (evals/html_report.py): built from scripted, scored trials (no model, no database).

Two runs of four scenarios in two categories, scored by the real scorer; the page must show each
category's table with the right pass counts, inline SVG plots, the comparison's regressed and improved
scenarios exactly as the gate (``evals.report.compare``) sees them, and escape whatever a reply holds.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals import html_report
from evals.html_report import REPORT_HTML, render_html
from evals.report import RunResult, compare, write_report
from evals.scenario import Scenario
from evals.scoring import score
from evals.trace import CallTrace, TrialTrace, TurnTrace

K = 3
GOOD = "Your refund is on its way."
BAD = "I cannot help with that."
EVIL = "<script>alert('x')</script> & more"


def _scenario(sid: str, category: str) -> Scenario:
    return Scenario.model_validate(
        {
            "id": sid,
            "category": category,
            "title": f"{sid} <b>title</b>",
            "customer": "C0001",
            "goal": "Get the refund.",
            "user": {"turns": ["Where is my refund?"]},
            "expect": {"outcome": "answered", "reply": {"contains_any": ["refund"]}},
        }
    )


SCENARIOS = [
    _scenario("refund-a", "refunds"),
    _scenario("refund-b", "refunds"),
    _scenario("return-a", "returns"),
    _scenario("return-b", "returns"),
]


def _run(run_id: str, passes: dict[str, int], temperature: float = 0.0) -> RunResult:
    """Scripted, scored trials: scenario ``sid`` passes its first ``passes[sid]`` of K trials."""
    traces, scores = [], []
    for sc in SCENARIOS:
        for trial in range(1, K + 1):
            ok = trial <= passes[sc.id]
            reply = GOOD if ok else (EVIL if sc.id == "return-a" else BAD)
            turn = TurnTrace(0, "Where is my refund?", reply, "answered", wall_ms=30.0 * trial if ok else 2500.0)
            calls = [CallTrace(0, 1, "lookup_orders", {"note": "<img src=x onerror=alert(1)>"})]
            trace = TrialTrace(sc.id, trial, [turn], calls if sc.id == "return-a" else [])
            traces.append(trace)
            scores.append(score(sc, trace))
    meta = {"run_id": run_id, "backend": "scripted", "model": "script-1", "prompt_version": "v9", "k": K,
            "temperature": temperature, "wall_s": 12.5, "command": "python -m evals.run --backend x <&>"}  # fmt: skip
    return RunResult(meta, SCENARIOS, traces, scores)


# refund-b regresses (3/3 -> 1/3), return-b improves (0/3 -> 3/3); the others stay. pass^1 50% -> 58%.
BASELINE = {"refund-a": 3, "refund-b": 3, "return-a": 0, "return-b": 0}
CURRENT = {"refund-a": 3, "refund-b": 1, "return-a": 0, "return-b": 3}


@pytest.fixture(scope="module")
def current() -> dict[str, Any]:
    return _run("cur00001", CURRENT, temperature=0.7).to_json()


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    return _run("base0001", BASELINE).to_json()


@pytest.fixture(scope="module")
def page(current: dict[str, Any]) -> str:
    return render_html(current)


@pytest.fixture(scope="module")
def compared(current: dict[str, Any], baseline: dict[str, Any]) -> str:
    return render_html(current, baseline)


def _between(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i : text.index(end, i)]


def _row(text: str, sid: str) -> str:
    m = re.search(rf'<tr id="sc-{re.escape(sid)}">.*?</tr>', text, re.S)
    assert m, f"no row for {sid}"
    return m.group(0)


def test_a_table_per_category_with_the_pass_counts(page: str) -> None:
    refunds = _between(page, '<h3 id="cat-refunds">', "</section>")
    returns = _between(page, '<h3 id="cat-returns">', "</section>")
    assert "pass^1 67%, pass^3 50%; 1 of 2 passed every trial" in refunds
    assert 'class="pill good">3/3<' in _row(refunds, "refund-a")
    row_b = _row(refunds, "refund-b")
    assert 'class="pill mixed">1/3<' in row_b and "<code>reply</code> ×2" in row_b
    assert "trial 2:" in row_b and "none of [&#x27;refund&#x27;] in final reply" in row_b  # the first failure
    assert 'class="pill bad">0/3<' in _row(returns, "return-a") and "return-b" not in refunds
    assert 'class="pill good">3/3<' in _row(returns, "return-b")


def test_run_info_summary_and_inline_svg_plots(page: str) -> None:
    assert "<h1>Offline eval: scripted (script-1), prompt v9</h1>" in page
    assert "4 scenarios × 3 trials: 7 of 12 trials passed; pass^1 <b>58%</b>" in page
    assert "0.7 (sampled)" in page and "--backend x &lt;&amp;&gt;" in page
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
    assert len(svgs) == 2  # pass^1/pass^k by category, turn latency
    assert "Success by category" in svgs[0] and "pass^3" in svgs[0] and "refunds (2)" in svgs[0]
    assert "Turn latency: CDF" in svgs[1] and "turn latency (log scale)" in svgs[1]
    # Self-contained: nothing to fetch, no script of its own.
    assert not re.search(r"<(script|link|img|iframe)\b|\ssrc=[\"']|url\(\s*['\"]?http", page)


def test_comparison_lists_what_the_gate_calls_regressions_and_improvements(
    current: dict[str, Any], baseline: dict[str, Any], compared: str
) -> None:
    verdict = compare(current, baseline)
    assert [r[0] for r in verdict.regressions] == ["refund-b"]
    assert [r[0] for r in verdict.improvements] == ["return-b"]
    section = _between(compared, '<section id="comparison">', "</section>")
    regressed = _between(section, "Regressed scenarios (1)", "</table>")
    improved = _between(section, "Improved scenarios (1)", "</table>")
    assert "refund-b" in regressed and "100% → 33%" in regressed and "return-b" not in regressed
    assert "return-b" in improved and "0% → 100%" in improved and "refund-b" not in improved
    assert "pass^1 on the 4 common scenarios: 50% → 58% (+8.3 points)" in section and "<b>PASS</b>" in section
    # The delta table: refunds 100% -> 67%, returns 0% -> 50%.
    assert re.search(r"cat-refunds\">refunds</a></td><td>100%</td><td>67%</td><td><span class=\"bad\">-33 pt", section)
    assert re.search(r"cat-returns\">returns</a></td><td>0%</td><td>50%</td><td><span class=\"good\">\+50 pt", section)
    svgs = re.findall(r"<svg\b.*?</svg>", section, re.S)
    assert len(svgs) == 2 and "both runs" in svgs[0] and "baseline" in svgs[1]  # grouped bars, latency of both
    assert "<b>FAIL</b>" in render_html(baseline, current, max_drop=0.05)  # the other way round it dropped 8 points


def test_everything_from_the_data_is_escaped(page: str, compared: str) -> None:
    for text in (page, compared):
        assert "<script" not in text and "<img" not in text and "<b>title</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page  # the reply, in the conversation
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # a tool argument
    assert "refund-a &lt;b&gt;title&lt;/b&gt;" in page


def test_write_report_and_cli(baseline: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_report(_run("cur00003", CURRENT), run_dir)
    assert "refund-b" in (run_dir / REPORT_HTML).read_text()  # next to report.json and report.md
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    assert html_report.main([str(run_dir)]) == 0
    assert "Comparison with a baseline" not in (run_dir / REPORT_HTML).read_text()
    out = tmp_path / "cmp" / "compare.html"
    assert html_report.main([str(run_dir / "report.json"), "--baseline", str(tmp_path / "base.json"),
                             "--out", str(out)]) == 0  # fmt: skip
    assert "Regressed scenarios (1)" in out.read_text()
    assert html_report.main([str(tmp_path / "missing")]) == 2


def test_evals_run_writes_the_html_with_the_baseline_comparison(
    current: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m evals.run --baseline``: the model run is scripted, the wiring to report.html is real."""
    from evals import run as run_mod

    @contextlib.contextmanager
    def no_emulator() -> Iterator[str]:
        yield "unused:0"

    result = _run("base0002", BASELINE)  # compared with CURRENT as its baseline: pass^1 58% -> 50%, gate fails
    monkeypatch.setattr(run_mod, "firestore_emulator", no_emulator)
    monkeypatch.setattr(run_mod, "build_agent", lambda **_: object())
    monkeypatch.setattr(run_mod, "run_scenarios", lambda *a, **kw: result)
    scenarios = tmp_path / "scenarios.json"
    scenarios.write_text(json.dumps({"scenarios": [s.model_dump(mode="json", exclude_none=True) for s in SCENARIOS]}))
    (tmp_path / "base.json").write_text(json.dumps(current))
    out = tmp_path / "out"
    args = ["--backend", "instant", "--scenarios", str(scenarios), "--out", str(out), "--quiet"]
    assert run_mod.main([*args, "--baseline", str(tmp_path / "base.json")], echo=lambda _: None) == 3
    page = (out / REPORT_HTML).read_text()
    assert "Regressed scenarios (1)" in page and "<b>FAIL</b>" in page and (out / "report.md").exists()
    assert "return-b" in _between(page, "Regressed scenarios (1)", "</table>")


def test_each_trial_shows_which_check_failed_and_pass_k_has_an_interval(page: str, current: dict[str, Any]) -> None:
    row_b = _row(page, "refund-b")  # trial 1 passed, trials 2 and 3 failed the reply check
    per_trial = re.findall(r'<div class="(good|bad|mixed)">#(\d) ([✓✗])(.*?)</div>', row_b)
    assert [(cls, n, mark) for cls, n, mark, _ in per_trial] == [("good", "1", "✓"), ("bad", "2", "✗"),
                                                                 ("bad", "3", "✗")]  # fmt: skip
    assert all("<code title=" in rest and ">reply</code>" in rest for _, n, _, rest in per_trial if n != "1")
    overall = current["summary"]["overall"]
    lo, hi = overall["pass_hat_ci"]["1"]
    assert lo < overall["pass_hat"]["1"] < hi  # Wilson's interval over the 4 scenarios, around pass^1
    assert f'pass^1 <b>58%</b> <span class="muted">[{100 * lo:.0f}–{100 * hi:.0f}%]</span>' in page
    assert "<td>7/12</td>" in page  # passed trials beside pass^k


def test_wilson_interval_matches_the_textbook_values() -> None:
    from evals.stats import wilson_interval

    lo, hi = wilson_interval(0.5, 10) or (0, 0)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson_interval(0.0, 20) or (0, 0)
    assert lo == 0.0 and round(hi, 4) == 0.1611
    assert wilson_interval(1.0, 5) == pytest.approx((0.5655, 1.0), abs=1e-4) and wilson_interval(0.5, 0) is None
