"""The run's report as one HTML page a person reads, optionally side by side with a baseline run.

One self-contained file (inline CSS, plots as inline SVG drawn by matplotlib; nothing is fetched), so
it can be mailed, attached to a pull request or opened from a bucket:

- the run (backend, model, prompt version, k, temperature, wall time, command) and a summary line;
- the summary table (overall and per category, as in report.md);
- pass^1 (and pass^k) by category, and the turn latency distribution (histogram and CDF);
- a table per category: its scenarios, passed x/k, failing checks, the first failure's reason and its
  conversation;
- with a baseline: pass^1 of both runs by category, a delta table, other metrics side by side, and the
  regressed and improved scenarios. What counts as a regression is ``evals.comparison.compare``'s (the gate).

    python -m evals.html_report artifacts/evals/smollm2-k3                # -> artifacts/evals/smollm2-k3/report.html
    python -m evals.html_report artifacts/evals/smollm2-k3-t07 --baseline artifacts/evals/smollm2-k3 \\
        --out artifacts/evals/compare-greedy-vs-sampled.html

``python -m evals.run`` writes ``report.html`` next to report.json (with the comparison when given
``--baseline``).
"""

from __future__ import annotations

import argparse
import html
import io
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.comparison import Comparison, compare, load_report
from evals.stats import ci_text, quantile

REPORT_HTML = "report.html"

CURRENT, BASELINE, PASS_K = "#2f6fb3", "#a7b0bc", "#173f6b"


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped text; every string from the data goes through here (replies can contain anything)."""
    return "–" if value is None else html.escape(str(value), quote=True)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f} ms" if v < 1000 else f"{v / 1000:.1f} s"


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2f}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _short(text: Any, limit: int = 280) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _rate_class(passes: int, trials: int) -> str:
    return "good" if trials and passes == trials else "bad" if passes == 0 else "mixed"


def _k(data: Mapping[str, Any]) -> int:
    return int(data.get("run", {}).get("k") or 1)


def run_label(run: Mapping[str, Any]) -> str:
    """A run in a few words: enough to tell two runs of one model (temperature, prompt) apart."""
    temp = run.get("temperature") or 0
    return (
        f"{run.get('backend')} ({run.get('model')}), {run.get('prompt_version')}, "
        f"T={temp:g}, k={run.get('k') or 1}, run {run.get('run_id')}"
    )


# ---------------------------------------------------------------------------
# Plots (matplotlib -> inline SVG)
# ---------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    # The object API with no pyplot: no global backend or figure registry (it renders with the
    # non-interactive Agg/SVG canvases), so this is safe in threads and never opens a window.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _svg(fig: Any, name: str) -> str:
    import matplotlib

    rc = {
        "svg.fonttype": "none",  # real <text>: smaller, selectable, searchable
        "svg.hashsalt": name,  # deterministic ids, distinct per figure (several SVGs share one DOM)
        "text.parse_math": False,  # a '$' in a label is text, not mathtext
    }
    buf = io.StringIO()
    with matplotlib.rc_context(rc):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: it is inline in HTML


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def _percent_axis(ax: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.set_xlim(0, 1.12)  # room for the value labels at 100%
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(axis="x", color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)


def _hbars(ax: Any, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None]]]) -> None:
    """Grouped horizontal bars, first label on top, with the value at each bar's end."""
    n = len(series)
    height = 0.8 / n
    for i, (name, color, values) in enumerate(series):
        ys = [row + (i - (n - 1) / 2) * height for row in range(len(labels))]
        vals = [v or 0.0 for v in values]
        ax.barh(ys, vals, height=height * 0.92, color=color, label=name)
        for y, v, raw in zip(ys, vals, values, strict=True):
            ax.text(v + 0.01, y, "–" if raw is None else f"{100 * v:.0f}%", va="center", fontsize=8, color="#333")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    _percent_axis(ax)
    _style(ax)


def category_plot(data: Mapping[str, Any]) -> str:
    """pass^1 (and pass^k) overall and per category."""
    k = _k(data)
    summary = data["summary"]
    rows = [("all", summary["overall"]), *summary["by_category"].items()]
    labels = [f"{cat} ({s['scenarios']})" for cat, s in rows]
    series = [("pass^1", CURRENT, [s["pass_hat"].get("1") for _, s in rows])]
    if k > 1:
        series.append((f"pass^{k}", PASS_K, [s["pass_hat"].get(str(k)) for _, s in rows]))
    fig = _figure(7.0, 1.0 + 0.22 * len(rows) * len(series))
    ax = fig.add_subplot()
    _hbars(ax, labels, series)
    ax.set_title("Success by category (scenarios in brackets)", fontsize=10, loc="left")
    if len(series) > 1:
        fig.legend(fontsize=8, loc="outside upper right", frameon=False, ncols=len(series))
    return _svg(fig, "categories")


def turn_latencies(data: Mapping[str, Any]) -> list[float]:
    """Every turn's wall time (ms), from the trials' metrics (or their traces in older reports)."""
    out: list[float] = []
    for sc in data.get("scenarios", []):
        for t in sc.get("trials", []):
            ms = t.get("metrics", {}).get("turn_wall_ms")
            if ms is None:
                ms = [turn.get("wall_ms", 0.0) for turn in (t.get("trace") or {}).get("turns", [])]
            out += [float(v) for v in ms if v is not None]
    return out


def latency_plot(runs: Sequence[tuple[str, str, Sequence[float]]]) -> str:
    """Histogram and CDF of turn latency (log scale: a guardrail refusal takes ms, a model call seconds)."""
    runs = [r for r in runs if r[2]]
    secs = [[max(v, 1.0) / 1000 for v in ms] for _, _, ms in runs]
    lo = min(min(s) for s in secs)
    hi = max(max(s) for s in secs)
    lo_exp, hi_exp = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    hi_exp = max(hi_exp, lo_exp + 1)
    bins = [10 ** (lo_exp + i * (hi_exp - lo_exp) / 30) for i in range(31)]
    fig = _figure(9.5, 3.2)
    hist_ax, cdf_ax = fig.subplots(1, 2)
    for (name, color, _), s in zip(runs, secs, strict=True):
        if len(runs) > 1:
            hist_ax.hist(s, bins=bins, histtype="step", linewidth=1.8, color=color, label=name)
        else:
            hist_ax.hist(s, bins=bins, color=color, edgecolor="white", linewidth=0.5, label=name)
        ranked = sorted(s)
        ys = [(i + 1) / len(ranked) for i in range(len(ranked))]
        p50, p95 = quantile(s, 0.5), quantile(s, 0.95)
        # The percentiles go in the legend: as labels at the lines they collide when two runs are close.
        label = f"{name}: p50 {_ms(p50 * 1000)}, p95 {_ms(p95 * 1000)}"
        cdf_ax.step(ranked, ys, where="post", color=color, linewidth=1.8, label=label)
        cdf_ax.axvline(p50, color=color, linestyle="--", linewidth=1)
        cdf_ax.axvline(p95, color=color, linestyle=":", linewidth=1)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for ax in (hist_ax, cdf_ax):
        ax.set_xscale("log")
        # Plain "100 ms" / "10 s" labels: the default log labels are mathtext, which parse_math=False turns off.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g} s" if x >= 1 else f"{x * 1000:g} ms"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("turn latency (log scale)", fontsize=9)
        ax.grid(color="#e3e6ea", linewidth=0.8)
        ax.set_axisbelow(True)
        _style(ax)
    hist_ax.set_ylabel("turns", fontsize=9)
    hist_ax.set_title("Turn latency: histogram", fontsize=10, loc="left")
    cdf_ax.set_ylabel("share of turns at most x", fontsize=9)
    cdf_ax.set_ylim(0, 1.02)
    cdf_ax.set_title("Turn latency: CDF (p50 dashed, p95 dotted)", fontsize=10, loc="left")
    cdf_ax.legend(fontsize=8, loc="upper left", frameon=False)
    return _svg(fig, "latency")


def comparison_plot(data: Mapping[str, Any], baseline: Mapping[str, Any], cmp: Comparison) -> str:
    """pass^1 of both runs, overall and per category, on the scenarios both runs have."""
    cats = _categories(data, cmp)
    labels = ["all", *cats]
    series = [
        ("baseline: " + run_label(baseline["run"]), BASELINE,
         [cmp.baseline_pass1, *(cmp.categories[c][0] for c in cats)]),
        ("current: " + run_label(data["run"]), CURRENT,
         [cmp.current_pass1, *(cmp.categories[c][1] for c in cats)]),
    ]  # fmt: skip
    fig = _figure(6.0, 1.4 + 0.5 * len(labels))
    ax = fig.add_subplot()
    _hbars(ax, labels, series)
    ax.set_title("pass^1 by category, both runs (common scenarios)", fontsize=10, loc="left")
    fig.legend(fontsize=8, loc="outside lower left", frameon=False, ncols=1)
    return _svg(fig, "comparison")


def _categories(data: Mapping[str, Any], cmp: Comparison) -> list[str]:
    listed = [c for c in data["summary"]["by_category"] if c in cmp.categories]
    return listed + sorted(c for c in cmp.categories if c not in listed)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Iterator[str] | Sequence[str], cls: str = "") -> str:
    ths = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>'


def _has_judge(data: Mapping[str, Any]) -> bool:
    rows = [data["summary"]["overall"], *data["summary"]["by_category"].values()]
    return any(s.get("judge_helpfulness") is not None or s.get("judge_groundedness") is not None for s in rows)


def _interval(s: Mapping[str, Any], j: int) -> str:
    """pass^j's 95% interval (evals.report: Wilson, scenarios as the units), or nothing."""
    ci = (s.get("pass_hat_ci") or {}).get(str(j))
    return f' <span class="muted">[{_e(ci_text(ci))}]</span>' if ci else ""


def _hat(s: Mapping[str, Any], j: int) -> str:
    return _pct(s["pass_hat"].get(str(j))) + _interval(s, j)


def summary_table(data: Mapping[str, Any]) -> str:
    k, judge = _k(data), _has_judge(data)
    head = ["category", "scenarios", "trials", *(f"pass^{j}" for j in range(1, k + 1)), "passed trials",
            "traj. precision",
            "traj. recall", "hand-off acc.", "violations", "turn p50", "turn p95", "tokens / trial"]  # fmt: skip
    if judge:
        head += ["judge: helpful", "judge: grounded"]

    def row(name: str, s: Mapping[str, Any], link: bool) -> str:
        cells = [f'<a href="#cat-{_e(name)}">{_e(name)}</a>' if link else f"<b>{_e(name)}</b>",
                 _e(s["scenarios"]), _e(s["trials"]),
                 *(_hat(s, j) for j in range(1, k + 1)), f'{_e(s.get("passed_trials"))}/{_e(s["trials"])}',
                 _num(s.get("trajectory_precision")), _num(s.get("trajectory_recall")),
                 _pct(s.get("handoff_accuracy")), _e(s.get("violations")),
                 _ms(s.get("turn_ms_p50")), _ms(s.get("turn_ms_p95")), _num(s.get("tokens_per_trial"))]  # fmt: skip
        if judge:
            cells += [_num(s.get("judge_helpfulness")), _num(s.get("judge_groundedness"))]
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    summary = data["summary"]
    rows = [row("all", summary["overall"], False)]
    rows += [row(cat, s, True) for cat, s in summary["by_category"].items()]
    return _table(head, rows, "num")


def _failing_checks(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the checks that failed in the failed trials, with how many trials (when k > 1)."""
    counts: dict[str, int] = {}
    gating: dict[str, bool] = {}
    for t in trials:
        if t["passed"]:
            continue
        for c in t["checks"]:
            if not c["passed"]:
                counts[c["name"]] = counts.get(c["name"], 0) + 1
                gating[c["name"]] = gating.get(c["name"], False) or bool(c.get("gate", True))
    out = []
    for name in sorted(counts):
        label = f"<code>{_e(name)}</code>"
        if len(trials) > 1:
            label += f" ×{counts[name]}"
        if not gating[name]:
            label += ' <span class="muted">(not gating)</span>'
        out.append(label)
    return out


def _first_failure(trials: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """(trial, check): the first failed trial and its first failing gating check (why it failed)."""
    for t in sorted(trials, key=lambda t: t.get("trial", 0)):
        if t["passed"]:
            continue
        failing = [c for c in t["checks"] if not c["passed"]]
        gating = [c for c in failing if c.get("gate", True)] or failing
        if gating:
            return t, gating[0]
    return None


def _conversation(trial: Mapping[str, Any]) -> str:
    trace = trial.get("trace") or {}
    lines = []
    if trace.get("harness_error"):
        lines.append(f'<div class="err">harness error: {_e(trace["harness_error"])}</div>')
    for turn in trace.get("turns") or []:
        timed = ""
        if turn.get("released_s") is not None:  # timed messages: what the session stage made of them
            ids = ", ".join(turn.get("message_ids") or ())
            timed = f' <span class="muted">[released at {turn["released_s"]:g} s: {_e(ids)}]</span>'
        lines.append(f'<div class="u"><b>user:</b>{timed} {_e(turn.get("user_text", ""))}</div>')
        for c in trace.get("calls") or []:
            if c.get("turn") == turn.get("index"):
                args = ", ".join(f"{k}={v!r}" for k, v in (c.get("args") or {}).items())
                lines.append(f'<div class="t"><i>tool:</i> <code>{_e(c.get("name"))}({_e(_short(args, 160))})'
                             f"</code> → {_e(c.get('status'))}</div>")  # fmt: skip
        flags = f' <span class="muted">[{_e(", ".join(turn["flags"]))}]</span>' if turn.get("flags") else ""
        lat = f' <span class="muted">{_ms(turn.get("wall_ms"))}</span>' if turn.get("wall_ms") is not None else ""
        lines.append(f'<div class="a"><b>agent ({_e(turn.get("outcome"))}):</b>{flags}{lat} '
                     f'{_e(turn.get("reply_text", ""))}</div>')  # fmt: skip
    if not lines:
        return ""
    return f"<details><summary>conversation (trial {_e(trial.get('trial'))})</summary>{''.join(lines)}</details>"


def _reason_cell(trials: Sequence[Mapping[str, Any]], with_conversation: bool = True) -> str:
    first = _first_failure(trials)
    if first is None:
        return ""
    trial, check = first
    reason = f"<code>{_e(check['name'])}</code>: {_e(_short(check.get('detail', '')))}"
    if len(trials) > 1:
        reason = f'<span class="muted">trial {_e(trial.get("trial"))}:</span> ' + reason
    return reason + (_conversation(trial) if with_conversation else "")


def _per_trial(trials: Sequence[Mapping[str, Any]]) -> str:
    """Each trial's verdict and the checks that failed in it, with their reasons (the detail as a tooltip too)."""
    lines = []
    for t in sorted(trials, key=lambda t: t.get("trial", 0)):
        failed = [c for c in t.get("checks") or () if not c["passed"]]
        if not failed:
            lines.append(f'<div class="good">#{_e(t.get("trial"))} ✓</div>')
            continue
        names = "; ".join(
            f'<code title="{_e(_short(c.get("detail", ""), 600))}">{_e(c["name"])}</code>'
            + ("" if c.get("gate", True) else ' <span class="muted">(not gating)</span>')
            + f': <span class="muted">{_e(_short(c.get("detail", ""), 140))}</span>'
            for c in failed
        )
        mark = "✗" if not t["passed"] else "✓"
        lines.append(f'<div class="{"bad" if not t["passed"] else "mixed"}">#{_e(t.get("trial"))} {mark} {names}</div>')
    return "".join(lines)


def category_sections(data: Mapping[str, Any]) -> str:
    k = _k(data)
    by_cat: dict[str, list[Mapping[str, Any]]] = {}
    for sc in data["scenarios"]:
        by_cat.setdefault(sc["category"], []).append(sc)
    listed = [c for c in data["summary"]["by_category"] if c in by_cat]
    listed += [c for c in by_cat if c not in listed]
    parts = []
    for cat in listed:
        scenarios = by_cat[cat]
        s = data["summary"]["by_category"].get(cat, {})
        hats = ", ".join(f"pass^{j} {_pct(s.get('pass_hat', {}).get(str(j)))}" for j in sorted({1, k}))
        always = sum(1 for sc in scenarios if sc["trials"] and sc["passes"] == len(sc["trials"]))
        parts.append(
            f'<section class="cat"><h3 id="cat-{_e(cat)}">{_e(cat)}</h3>'
            f'<p class="muted">{len(scenarios)} scenarios, {hats}; {always} of {len(scenarios)} passed every trial.</p>'
        )
        rows = []
        for sc in scenarios:
            trials = sc["trials"]
            cls = _rate_class(sc["passes"], len(trials))
            title = f'<div class="muted">{_e(sc.get("title"))}</div>' if sc.get("title") else ""
            rows.append(
                f'<tr id="sc-{_e(sc["id"])}"><td><code>{_e(sc["id"])}</code>{title}</td>'
                f'<td><span class="pill {cls}">{_e(sc["passes"])}/{len(trials)}</span></td>'
                f"<td>{', '.join(_failing_checks(trials))}</td><td>{_reason_cell(trials)}</td>"
                f"<td>{_per_trial(trials)}</td></tr>"
            )
        parts.append(_table(["scenario", "passed", "failing checks", "first failure", "checks per trial"], rows,
                            "scen"))  # fmt: skip
        parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    d = 100 * (b - a)
    cls = "good" if d > 0.05 else "bad" if d < -0.05 else "muted"
    return f'<span class="{cls}">{d:+.0f} pt</span>' if cls != "muted" else '<span class="muted">0</span>'


def comparison_section(data: Mapping[str, Any], baseline: Mapping[str, Any], max_drop: float, latency: str = "") -> str:
    """Both runs side by side; ``latency`` is the plot of both runs' turn latencies (placed here)."""
    cmp = compare(data, baseline, max_drop)
    cur_run, base_run = data["run"], baseline["run"]
    head = (
        '<section id="comparison"><h2>Comparison with a baseline</h2>'
        f'<p><span class="sw" style="background:{BASELINE}"></span><b>baseline</b>: {_e(run_label(base_run))}, '
        f"started {_e(base_run.get('started_at'))}<br><code>{_e(base_run.get('command', ''))}</code></p>"
        f'<p><span class="sw" style="background:{CURRENT}"></span><b>current</b>: {_e(run_label(cur_run))}, '
        f"started {_e(cur_run.get('started_at'))}<br><code>{_e(cur_run.get('command', ''))}</code></p>"
    )
    if cmp.delta is None:
        return head + "<p><b>No common scenarios: nothing to compare.</b></p></section>"
    verdict = "PASS" if cmp.ok else "FAIL"
    only = (f"<br>Not compared (in one run only): {_e(', '.join(cmp.only_one_run))}"
            if cmp.only_one_run else "")  # fmt: skip
    head += (
        f'<p class="verdict {"good" if cmp.ok else "bad"}">pass^1 on the {len(cmp.common)} common scenarios: '
        f"{_pct(cmp.baseline_pass1)} → {_pct(cmp.current_pass1)} ({100 * cmp.delta:+.1f} points). "
        f"Regression gate (allowed drop {100 * max_drop:.1f} points): <b>{verdict}</b>. "
        f"{_n(len(cmp.regressions), 'scenario')} regressed, {len(cmp.improvements)} improved.{only}</p>"
    )
    plot = f'<div class="plot">{comparison_plot(data, baseline, cmp)}</div>'

    category = {s["id"]: s["category"] for s in data["scenarios"]}
    regressed = {i for i, _, _ in cmp.regressions}
    improved = {i for i, _, _ in cmp.improvements}
    rows = [f"<tr><td><b>all</b></td><td>{_pct(cmp.baseline_pass1)}</td><td>{_pct(cmp.current_pass1)}</td>"
            f"<td>{_delta(cmp.baseline_pass1, cmp.current_pass1)}</td><td>{len(regressed)}</td>"
            f"<td>{len(improved)}</td></tr>"]  # fmt: skip
    for cat in _categories(data, cmp):
        a, b = cmp.categories[cat]
        n_reg = sum(1 for i in regressed if category.get(i) == cat)
        n_imp = sum(1 for i in improved if category.get(i) == cat)
        rows.append(f'<tr><td><a href="#cat-{_e(cat)}">{_e(cat)}</a></td><td>{_pct(a)}</td><td>{_pct(b)}</td>'
                    f"<td>{_delta(a, b)}</td><td>{n_reg or ''}</td><td>{n_imp or ''}</td></tr>")  # fmt: skip
    deltas = _table(["category", "baseline", "current", "Δ", "regressed", "improved"], rows, "num")

    metrics = _metrics_table(baseline, data)
    lists = _changed_scenarios("Regressed scenarios", cmp.regressions, data, "bad",
                               "passed less often than in the baseline; why the current run failed") + \
        _changed_scenarios("Improved scenarios", cmp.improvements, baseline, "good",
                           "passed more often than in the baseline; why the baseline failed")  # fmt: skip
    return (
        f"{head}<div class='grid'><div>{plot}</div><div><h3>pass^1 by category (common scenarios)</h3>{deltas}"
        f"<h3>Other metrics</h3>{metrics}</div></div>{latency}{lists}</section>"
    )


def _metrics_table(baseline: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    a, b = baseline["summary"]["overall"], data["summary"]["overall"]
    rows_spec: list[tuple[str, Any, Any]] = [
        ("scenarios × trials", f"{a['scenarios']} × {_k(baseline)}", f"{b['scenarios']} × {_k(data)}"),
        ("violations", a.get("violations"), b.get("violations")),
        ("hand-off accuracy", _pct(a.get("handoff_accuracy")), _pct(b.get("handoff_accuracy"))),
        ("turn latency p50", _ms(a.get("turn_ms_p50")), _ms(b.get("turn_ms_p50"))),
        ("turn latency p95", _ms(a.get("turn_ms_p95")), _ms(b.get("turn_ms_p95"))),
        ("tokens / trial", _num(a.get("tokens_per_trial")), _num(b.get("tokens_per_trial"))),
        ("wall time", _wall(baseline["run"].get("wall_s")), _wall(data["run"].get("wall_s"))),
    ]
    if _has_judge(baseline) or _has_judge(data):
        rows_spec += [
            ("judge: helpful", _num(a.get("judge_helpfulness")), _num(b.get("judge_helpfulness"))),
            ("judge: grounded", _num(a.get("judge_groundedness")), _num(b.get("judge_groundedness"))),
        ]
    rows = [f"<tr><td>{_e(n)}</td><td>{_e(x)}</td><td>{_e(y)}</td></tr>" for n, x, y in rows_spec]
    return _table(["metric", "baseline", "current"], rows, "num")


def _changed_scenarios(
    title: str, changed: Sequence[tuple[str, float, float]], failed_in: Mapping[str, Any], cls: str, note: str
) -> str:
    if not changed:
        return f"<h3>{_e(title)}</h3><p class='muted'>None.</p>"
    scenarios = {s["id"]: s for s in failed_in["scenarios"]}
    rows = []
    for sid, then, now in changed:
        sc = scenarios.get(sid, {})
        rows.append(
            f'<tr class="{cls}-row"><td><a href="#sc-{_e(sid)}"><code>{_e(sid)}</code></a></td>'
            f'<td>{_e(sc.get("category"))}</td><td class="nw">{_pct(then)} → {_pct(now)}</td>'
            f"<td>{_reason_cell(sc.get('trials', []))}</td></tr>"
        )
    head = ["scenario", "category", "pass rate", "first failure"]
    return (f'<h3 class="{cls}">{_e(title)} ({len(changed)})</h3><p class="muted">{_e(note)}.</p>'
            + _table(head, rows, "scen"))  # fmt: skip


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:34px 0 10px;border-bottom:1px solid #dfe3e8;
padding-bottom:4px}h3{font-size:15px;margin:22px 0 6px}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f3f5;padding:1px 4px;
border-radius:3px;word-break:break-word}
.muted{color:#67717d}.good{color:#1e7b45}.bad{color:#b3261e}.mixed{color:#b26a00}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0}dl.run dt{color:#67717d}
dl.run dd{margin:0}.headline{font-size:16px;margin:12px 0;padding:10px 14px;background:#eef4fb;border-radius:6px}
nav a{margin-right:14px}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #e6e9ed;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600;white-space:nowrap}table.num td:not(:first-child){text-align:right;
white-space:nowrap}
table.scen td:first-child{width:26%}table.scen td:nth-child(2){white-space:nowrap}
tbody tr:hover{background:#fafbfc}
.pill{display:inline-block;min-width:34px;text-align:center;border-radius:10px;padding:0 7px;color:#fff;
font-weight:600}.pill.good{background:#1e7b45}.pill.mixed{background:#b26a00}.pill.bad{background:#b3261e}
details{margin-top:4px}summary{cursor:pointer;color:#2f6fb3}
details div{white-space:pre-wrap;margin:4px 0 4px 10px;padding-left:8px;border-left:3px solid #dfe3e8}
details .a{border-color:#2f6fb3}details .t{border-color:#b26a00}details .err{border-color:#b3261e}
.plot svg{max-width:100%;height:auto}.nw{white-space:nowrap}.plots{display:flex;flex-wrap:wrap;gap:10px 24px}
.grid{display:grid;grid-template-columns:minmax(0,1.1fr) minmax(0,1fr);gap:20px}
.verdict{font-size:15px;padding:8px 12px;border-radius:6px;background:#f3f5f7}
.verdict.good{border-left:5px solid #1e7b45}.verdict.bad{border-left:5px solid #b3261e}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
"""


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" + (f" ({seconds / 60:.1f} min)" if seconds >= 120 else "")


def _title(run: Mapping[str, Any]) -> str:
    return f"{run.get('backend')} ({run.get('model')}), prompt {run.get('prompt_version')}"


def _run_info(run: Mapping[str, Any]) -> str:
    temp = run.get("temperature") or 0
    items = [
        ("run", f"{run.get('run_id')}, started {run.get('started_at')}"),
        ("backend / model", f"{run.get('backend')} / {run.get('model')}"),
        ("prompt version", run.get("prompt_version")),
        ("trials per scenario (k)", run.get("k") or 1),
        ("temperature", f"{temp:g}" + (" (greedy)" if not temp else " (sampled)")),
        ("steps per turn / tools", f"{run.get('max_steps')} / {'yes' if run.get('tools') else 'no'}"),
        ("simulated user", run.get("user_model") or "rules"),
        ("judge", run.get("judge_model") or "none"),
        ("wall time", _wall(run.get("wall_s"))),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    dl += f"<dt>command</dt><dd><code>{_e(run.get('command', ''))}</code></dd>"
    return f'<dl class="run">{dl}</dl>'


def _headline(data: Mapping[str, Any]) -> str:
    o, k = data["summary"]["overall"], _k(data)
    hats = ", ".join(f"pass^{j} <b>{_pct(o['pass_hat'].get(str(j)))}</b>{_interval(o, j)}" for j in range(1, k + 1))
    return (
        f'<p class="headline">{_e(o["scenarios"])} scenarios × {k} trials: {_e(o["passed_trials"])} of '
        f"{_e(o['trials'])} trials passed; {hats}; {_e(o.get('violations', 0))} policy violations; turn latency p50 "
        f"{_ms(o.get('turn_ms_p50'))}, p95 {_ms(o.get('turn_ms_p95'))}; {_num(o.get('tokens_per_trial'))} tokens "
        "per trial.</p>"
    )


def render_html(data: Mapping[str, Any], baseline: Mapping[str, Any] | None = None, *, max_drop: float = 0.05) -> str:
    """The report of ``data`` (a report.json) as one self-contained HTML page; compared with ``baseline``."""
    run = data["run"]
    title = f"Offline eval: {_title(run)}"
    if baseline is not None:
        title = f"Offline eval: {_title(run)}, T={run.get('temperature') or 0:g} vs baseline {_title(baseline['run'])}"
        title += f", T={baseline['run'].get('temperature') or 0:g}"
    lat = [("current" if baseline is not None else "all turns", CURRENT, turn_latencies(data))]
    if baseline is not None:
        lat.insert(0, ("baseline", BASELINE, turn_latencies(baseline)))
    latency = (f'<h3>Turn latency</h3><div class="plot">{latency_plot(lat)}</div>' if any(ms for _, _, ms in lat)
               else "<p class='muted'>No turn latencies recorded.</p>")  # fmt: skip
    nav = ['<a href="#comparison">comparison</a>'] if baseline is not None else []
    nav += ['<a href="#summary">summary</a>', '<a href="#plots">plots</a>']
    nav += [f'<a href="#cat-{_e(c)}">{_e(c)}</a>' for c in data["summary"]["by_category"]]
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<nav>{''.join(nav)}</nav>",
        _run_info(run),
        _headline(data),
        '<p class="muted">pass^j: the chance that j trials of a scenario all succeed (tau-bench), averaged over '
        "scenarios; pass^1 is the success rate. A trial succeeds when every gating check passes (end state, "
        "outcome, trajectory, reply, forbidden things).</p>",
    ]
    if baseline is not None:  # what a person comparing two runs came for comes first
        body.append(comparison_section(data, baseline, max_drop, latency))
    which = " (current run)" if baseline is not None else ""
    body += [
        f'<h2 id="summary">Summary{which}</h2>',
        summary_table(data),
        f'<h2 id="plots">Plots{which}</h2>',
        f'<div class="plots"><div class="plot">{category_plot(data)}</div></div>',
        "" if baseline is not None else latency,
        f'<h2 id="categories">Scenarios by category{which}</h2>',
        category_sections(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evals.html_report",
        description="Render a run's report.json as one self-contained HTML page, optionally compared with "
        "a baseline run (pass^1 by category, deltas, regressed and improved scenarios), without re-running.",
    )
    ap.add_argument("run", help="The run: its folder (holding report.json) or the report.json itself.")
    ap.add_argument("--baseline", default=None, help="Another run (folder or report.json) to compare with.")
    ap.add_argument("--out", default=None, help="The HTML file (default: report.html next to the run's report.json).")
    ap.add_argument("--max-drop", type=float, default=0.05, help="The gate's allowed drop of pass^1, as in evals.run.")
    args = ap.parse_args(argv)
    try:
        data = load_report(args.run)
        baseline = load_report(args.baseline) if args.baseline else None
    except (OSError, ValueError) as exc:
        print(f"cannot read a report: {exc}", file=sys.stderr)
        return 2
    run_path = Path(args.run)
    out = Path(args.out) if args.out else (run_path if run_path.is_dir() else run_path.parent) / REPORT_HTML
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, baseline, max_drop=args.max_drop), encoding="utf-8")
    if baseline is not None:
        print(compare(data, baseline, args.max_drop).text)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
