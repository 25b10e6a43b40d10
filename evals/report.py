"""The run's report: a summary (overall and per category), JSON for machines, Markdown for people,
and the comparison of a run with a baseline (the regression gate).

Per category and overall: scenarios, trials, pass^1 .. pass^k (tau-bench: the
mean over scenarios of C(c, j) / C(n, j)), trajectory precision / recall (mean
over trials of scenarios that expect tools), hand-off accuracy (trials of
scenarios with ``expect.handoff``), policy violations (failed forbid checks and
unexpected data changes), turn latency p50 / p95 and tokens per trial.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.comparison import REPORT_JSON, Comparison, compare
from evals.html_report import REPORT_HTML, render_html
from evals.scenario import Scenario, iter_categories
from evals.scoring import TrialScore, mean_pass_hat_k
from evals.stats import ci_text, quantile, wilson_interval
from evals.trace import TrialTrace

REPORT_MD = "report.md"
__all__ = ["REPORT_JSON", "REPORT_MD", "Comparison", "RunResult", "compare", "markdown", "quantile",
           "summarize_scores", "write_report"]  # fmt: skip  # compare & co. are imported from here too


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(quantile(values, q), 1) if values else None


def summarize_scores(scores: Sequence[TrialScore], k: int) -> dict[str, Any]:
    """One summary row over ``scores`` (trials of any number of scenarios)."""
    per_scenario: dict[str, list[bool]] = defaultdict(list)
    for s in scores:
        per_scenario[s.scenario_id].append(s.passed)
    results = [(sum(v), len(v)) for v in per_scenario.values()]
    hats = {str(j): _round(mean_pass_hat_k(results, j)) for j in range(1, k + 1)}
    handoff = [s.metrics.get("handoff_correct") for s in scores if s.metrics.get("handoff_correct") is not None]
    turn_ms = [ms for s in scores for ms in s.metrics.get("turn_wall_ms", [])]
    return {
        "scenarios": len(per_scenario),
        "trials": len(scores),
        "passed_trials": sum(1 for s in scores if s.passed),
        "pass_hat": hats,
        # 95% Wilson interval of each pass^j over the scenarios (the independent units; evals/stats.py).
        "pass_hat_ci": {j: _interval(v, len(per_scenario)) for j, v in hats.items()},
        "trajectory_precision": _mean(s.metrics.get("trajectory_precision") for s in scores),
        "trajectory_recall": _mean(s.metrics.get("trajectory_recall") for s in scores),
        "handoff_accuracy": round(sum(handoff) / len(handoff), 4) if handoff else None,
        "violations": sum(s.violations for s in scores),
        "turn_ms_p50": _percentile(turn_ms, 0.5),
        "turn_ms_p95": _percentile(turn_ms, 0.95),
        # The optional judge (evals/judge.py), 1-5; None when no judge ran or it gave no score.
        "judge_helpfulness": _mean(s.metrics.get("judge_helpfulness") for s in scores),
        "judge_groundedness": _mean(s.metrics.get("judge_groundedness") for s in scores),
        "tokens_per_trial": _mean(
            float(s.metrics.get("prompt_tokens", 0) + s.metrics.get("completion_tokens", 0)) for s in scores
        ),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _interval(rate: float | None, n: int) -> list[float] | None:
    ci = None if rate is None else wilson_interval(rate, n)
    return None if ci is None else [round(ci[0], 4), round(ci[1], 4)]


@dataclass
class RunResult:
    """Everything a run produced: what ran, the traces and their scores."""

    meta: dict[str, Any]
    scenarios: list[Scenario]
    traces: list[TrialTrace]
    scores: list[TrialScore]

    def summary(self) -> dict[str, Any]:
        k = int(self.meta.get("k", 1))
        by_cat = {
            cat: summarize_scores([s for s in self.scores if s.category == cat], k)
            for cat in iter_categories(self.scenarios)
        }
        return {"overall": summarize_scores(self.scores, k), "by_category": by_cat}

    def to_json(self) -> dict[str, Any]:
        traces = {(t.scenario_id, t.trial): t for t in self.traces}
        scenarios = []
        for sc in self.scenarios:
            trials = []
            for s in sorted((s for s in self.scores if s.scenario_id == sc.id), key=lambda s: s.trial):
                entry = s.to_json()
                trace = traces.get((sc.id, s.trial))
                if trace is not None:
                    entry["trace"] = trace.to_json()
                trials.append(entry)
            passes = sum(1 for t in trials if t["passed"])
            scenarios.append(
                {"id": sc.id, "category": sc.category, "title": sc.title, "passes": passes, "trials": trials}
            )
        return {"run": self.meta, "summary": self.summary(), "scenarios": scenarios}


def write_report(
    result: RunResult, out_dir: str | Path, *, baseline: Mapping[str, Any] | None = None, max_drop: float = 0.05
) -> tuple[Path, Path]:
    """report.json, report.md and report.html (with the comparison when ``baseline`` is given) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    json_path = out / REPORT_JSON
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    md_path = out / REPORT_MD
    md_path.write_text(markdown(data), encoding="utf-8")
    (out / REPORT_HTML).write_text(render_html(data, baseline, max_drop=max_drop), encoding="utf-8")
    return json_path, md_path


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * float(v):.0f}%"
    if isinstance(v, float):
        return f"{v:.0f}" if v >= 10 else f"{v:.2f}"
    return str(v)


def _row(name: str, s: Mapping[str, Any], k: int) -> str:
    hats = " | ".join(_fmt(s["pass_hat"].get(str(j)), pct=True) for j in range(1, k + 1))
    ci = s.get("pass_hat_ci") or {}
    cis = " | ".join(ci_text(ci.get(str(j))) for j in sorted({1, k}))
    return (
        f"| {name} | {s['scenarios']} | {s['trials']} | {hats} | {s['passed_trials']}/{s['trials']} | "
        f"{cis} | {_fmt(s['trajectory_precision'])} | "
        f"{_fmt(s['trajectory_recall'])} | {_fmt(s['handoff_accuracy'], pct=True)} | {s['violations']} | "
        f"{_fmt(s['turn_ms_p50'])} | {_fmt(s['turn_ms_p95'])} | {_fmt(s['tokens_per_trial'])} | "
        f"{_fmt(s.get('judge_helpfulness'))} | {_fmt(s.get('judge_groundedness'))} |"
    )


def _header(first: str, k: int) -> list[str]:
    hats = " | ".join(f"pass^{j}" for j in range(1, k + 1))
    cols = f"| {first} | scenarios | trials | {hats} | passed trials | pass^1 95% CI "
    cols += f"| pass^{k} 95% CI " if k > 1 else ""
    cols += "| traj. precision | traj. recall | hand-off acc. | violations "
    cols += "| turn ms p50 | turn ms p95 | tokens / trial | judge: helpful | judge: grounded |"
    return [cols, "|" + "---|" * (cols.count("|") - 1)]


def markdown(data: Mapping[str, Any]) -> str:
    run, summary = data["run"], data["summary"]
    k = int(run.get("k", 1))
    lines = [
        f"# Offline eval: backend `{run.get('backend')}` ({run.get('model')}), prompt `{run.get('prompt_version')}`",
        "",
        f"Run `{run.get('run_id')}` started {run.get('started_at')}: {summary['overall']['scenarios']} scenarios x "
        f"k={k} trials, wall time {_fmt(run.get('wall_s'))} s. Steps per turn: {run.get('max_steps')}, "
        f"tools: {'yes' if run.get('tools') else 'no'}, simulated user: {run.get('user_model') or 'rules'}, "
        f"temperature: {run.get('temperature') or 0}, judge: {run.get('judge_model') or 'none'}.",
        "",
        f"Command: `{run.get('command', '')}`",
        "",
        "pass^j: the chance that j trials of a scenario all succeed (tau-bench), averaged over scenarios. "
        "A trial succeeds when every gating check passes (end state, outcome, trajectory, reply, forbidden things). "
        "95% CI: Wilson's interval with the scenarios as the units (few scenarios: a wide interval).",
        "",
        "## Overall",
        "",
        *_header("", k),
        _row("all", summary["overall"], k),
        "",
        "## By category",
        "",
        *_header("category", k),
        *(_row(cat, s, k) for cat, s in summary["by_category"].items()),
        "",
        "## Scenarios",
        "",
        "| scenario | category | passed | failing checks (first trial that failed) |",
        "|---|---|---|---|",
    ]
    failures: list[str] = []
    for sc in data["scenarios"]:
        trials = sc["trials"]
        failed = [t for t in trials if not t["passed"]]
        names = sorted({c["name"] for c in failed[0]["checks"] if not c["passed"]}) if failed else []
        lines.append(f"| `{sc['id']}` | {sc['category']} | {sc['passes']}/{len(trials)} | {', '.join(names)} |")
        for t in failed:
            failures += _failure(sc, t)
    lines += ["", "## Failures", ""]
    lines += failures or ["None."]
    return "\n".join(lines) + "\n"


def _quote(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure(sc: Mapping[str, Any], trial: Mapping[str, Any]) -> list[str]:
    out = [f"### `{sc['id']}` ({sc['category']}), trial {trial['trial']}", ""]
    for c in trial["checks"]:
        if not c["passed"]:
            gate = "" if c["gate"] else " (not gating)"
            out.append(f"- **{c['name']}**{gate}: {_quote(c['detail'], 600)}")
    trace = trial.get("trace") or {}
    turns = trace.get("turns") or []
    if turns:
        out += ["", "Conversation:", ""]
        for t in turns:
            out.append(f"> **user:** {_quote(t['user_text'])}  ")
            calls = [c for c in trace.get("calls", []) if c["turn"] == t["index"]]
            for c in calls:
                args = ", ".join(f"{k}={v!r}" for k, v in c["args"].items())
                out.append(f"> *tool:* `{c['name']}({_quote(args, 120)})` -> {c['status']}  ")
            flags = f" [{', '.join(t['flags'])}]" if t["flags"] else ""
            out.append(f"> **agent ({t['outcome']}){flags}:** {_quote(t['reply_text'])}  ")
        out.append("")
    out.append("")
    return out
