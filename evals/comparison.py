"""A run against a baseline: the regression gate's verdict, as text for the CLI and as data for the HTML page.

Both runs are report.json documents (``load_report`` reads one from its file or its run folder).
Nothing here imports the report writers, so the Markdown report (evals/report.py) and the HTML page
(evals/html_report.py) both take the same verdict from here without importing each other.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_JSON = "report.json"


def load_report(path: str | Path) -> dict[str, Any]:
    """A report.json, given the file or the run folder that holds it."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    return json.loads(p.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Comparison:
    ok: bool
    text: str
    delta: float | None  # current pass^1 - baseline pass^1
    # The same verdict as data, for the HTML report (evals/html_report.py), so it never re-derives what a
    # regression is. Rates are per-scenario pass rates (passes / trials) on the scenarios both runs have.
    baseline_pass1: float | None = None
    current_pass1: float | None = None
    common: tuple[str, ...] = ()
    categories: dict[str, tuple[float, float]] = field(default_factory=dict)  # category: (baseline, current)
    regressions: tuple[tuple[str, float, float], ...] = ()  # (scenario id, baseline rate, current rate)
    improvements: tuple[tuple[str, float, float], ...] = ()
    only_one_run: tuple[str, ...] = ()  # scenario ids in one of the two runs, not compared


def _scenario_rates(data: Mapping[str, Any]) -> dict[str, float]:
    return {s["id"]: s["passes"] / len(s["trials"]) for s in data["scenarios"] if s["trials"]}


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any], max_drop: float = 0.05) -> Comparison:
    """Fail when overall pass^1 fell by more than ``max_drop`` (absolute), on the scenarios both runs have."""
    cur, base = _scenario_rates(current), _scenario_rates(baseline)
    common = sorted(set(cur) & set(base))
    lines = [
        f"Comparison: {current['run'].get('backend')} run {current['run'].get('run_id')} vs baseline "
        f"{baseline['run'].get('backend')} run {baseline['run'].get('run_id')} on {len(common)} common scenarios."
    ]
    if not common:
        only = tuple(sorted(set(cur) ^ set(base)))
        text = "\n".join([*lines, "No common scenarios: nothing to compare."])
        return Comparison(False, text, None, only_one_run=only)
    now = statistics.fmean(cur[i] for i in common)
    then = statistics.fmean(base[i] for i in common)
    delta = now - then
    lines.append(f"pass^1 {then:.1%} -> {now:.1%} ({delta:+.1%}); allowed drop {max_drop:.1%}.")
    cats_now: dict[str, list[float]] = defaultdict(list)
    cats_then: dict[str, list[float]] = defaultdict(list)
    category = {s["id"]: s["category"] for s in current["scenarios"]}
    for i in common:
        cats_now[category[i]].append(cur[i])
        cats_then[category[i]].append(base[i])
    for cat in sorted(cats_now):
        a, b = statistics.fmean(cats_then[cat]), statistics.fmean(cats_now[cat])
        if a != b:
            lines.append(f"  {cat}: {a:.1%} -> {b:.1%}")
    regressions = [i for i in common if cur[i] < base[i]]
    improvements = [i for i in common if cur[i] > base[i]]
    if regressions:
        lines.append("Regressions: " + ", ".join(f"{i} ({base[i]:.0%} -> {cur[i]:.0%})" for i in regressions))
    if improvements:
        lines.append("Improvements: " + ", ".join(f"{i} ({base[i]:.0%} -> {cur[i]:.0%})" for i in improvements))
    only = sorted(set(cur) ^ set(base))
    if only:
        lines.append(f"Not compared (in one run only): {', '.join(only)}")
    ok = delta >= -max_drop - 1e-12
    lines.append("PASS" if ok else f"FAIL: pass^1 dropped by {-delta:.1%} (more than {max_drop:.1%})")
    return Comparison(
        ok,
        "\n".join(lines),
        delta,
        baseline_pass1=then,
        current_pass1=now,
        common=tuple(common),
        categories={c: (statistics.fmean(cats_then[c]), statistics.fmean(cats_now[c])) for c in cats_now},
        regressions=tuple((i, base[i], cur[i]) for i in regressions),
        improvements=tuple((i, base[i], cur[i]) for i in improvements),
        only_one_run=tuple(only),
    )
