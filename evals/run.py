"""The offline eval CLI: run scenarios k times through the agent, score them, write the report.

    python -m evals.run --backend gemini --k 3 --scenarios packs/shop/scenarios --out artifacts/evals
    python -m evals.run --backend smollm2 --split heldout  # the pack's held-out scenarios (its heldout/ folder)
    python -m evals.run --backend smollm2 --k 1 --only SCENARIO_ID,SCENARIO_ID
    python -m evals.run --validate                      # check the scenario files only (no emulator, no model)
    python -m evals.run --pack telco --backend smollm2  # another business: its tools, ids and scenarios
    python -m evals.run --backend smollm2 --baseline artifacts/evals-base/report.json --max-drop 0.05

Needs the Firestore emulator: ``FIRESTORE_EMULATOR_HOST`` if set (e.g. by ``python -m stack up``), else
the harness starts one of its own (``stack.emulators``) for the run and stops it afterwards. Each trial
seeds its own emulator project, so the stack's data is never touched.

Exit codes: 0 done (whatever the scores), 2 invalid scenarios or arguments, 3 the regression gate failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from agents.backends import registry
from evals.harness import Agent, run_trial
from evals.packworld import SPLITS, scenarios_folder
from evals.report import RunResult, compare, write_report

# Shared with the Beam runner (evals/beam_run.py), which must not import this CLI; re-exported here.
from evals.runtime import build_agent, firestore_emulator, judge_metrics  # noqa: F401
from evals.scenario import Scenario, ScenarioError, load_scenarios
from evals.scoring import TrialScore, score
from evals.trace import TrialTrace
from evals.users import make_user
from evals.world import World
from tools.packs import DEFAULT_PACK, PackError

DEFAULT_OUT = Path("artifacts/evals")


class Progress:
    """A one-line progress bar on a terminal, a line per trial otherwise."""

    def __init__(self, total: int, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.total, self.done, self.passed = total, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self._lock = threading.Lock()  # trials may finish on several threads (--parallel)

    def update(self, label: str, passed: bool) -> None:
        with self._lock:
            self._update(label, passed)

    def _update(self, label: str, passed: bool) -> None:
        self.done += 1
        self.passed += passed
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        mark = "pass" if passed else "FAIL"
        if self.tty:
            width = 30
            fill = int(width * self.done / max(1, self.total))
            bar = "#" * fill + "." * (width - fill)
            line = f"\r[{bar}] {self.done}/{self.total} passed {self.passed} | {elapsed:.0f}s, ~{eta:.0f}s left | "
            self.stream.write((line + f"{label} {mark}")[:160].ljust(160))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{self.done}/{self.total}] {label}: {mark} ({elapsed:.0f}s, ~{eta:.0f}s left)\n")
        self.stream.flush()


def run_scenarios(
    scenarios: Sequence[Scenario],
    agent: Agent,
    *,
    k: int = 1,
    run_id: str | None = None,
    user_agent: Agent | None = None,
    parallel: int = 1,
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
    judge_agent: Agent | None = None,
) -> RunResult:
    """Every scenario ``k`` times against ``agent`` (loaded here if needed); traces and scores in a RunResult."""
    if k < 1:
        raise ValueError("k must be >= 1")
    run_id = run_id or uuid.uuid4().hex[:8]
    agent.load()
    for extra in (user_agent, judge_agent):
        if extra is not None:
            extra.load()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    jobs = [(sc, trial, f"sfeval-{run_id}-{n:04d}") for n, (sc, trial) in
            enumerate((sc, t) for sc in scenarios for t in range(1, k + 1))]  # fmt: skip
    worlds: list[World] = []

    def one(job: tuple[Scenario, int, str]) -> tuple[TrialTrace, TrialScore]:
        sc, trial, project = job
        user = make_user(sc, user_agent.handler if user_agent else None, user_agent.model if user_agent else None)
        trace = run_trial(sc, trial, agent, project, user=user, keep_world=worlds)
        result = score(sc, trace)
        if judge_agent is not None:
            result.metrics.update(judge_metrics(judge_agent, sc, trace))
        if progress is not None:
            progress.update(f"{sc.id}#{trial}", result.passed)
        return trace, result

    if parallel > 1:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="eval-trial") as pool:
            pairs = list(pool.map(one, jobs))
    else:
        pairs = [one(job) for job in jobs]
    info = {
        "run_id": run_id,
        "backend": agent.backend,
        "model": agent.model_name,
        "prompt_version": agent.version,
        "max_steps": agent.config.max_steps,
        "max_tokens": agent.config.max_tokens,
        "tools": bool(agent.config.tools),
        "pack": agent.config.pack,
        "user_model": user_agent.backend if user_agent else None,
        "judge_model": judge_agent.model_name if judge_agent else None,
        "temperature": agent.temperature,
        "k": k,
        "started_at": started.isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - t0, 1),
        **(meta or {}),
    }
    return RunResult(info, list(scenarios), [p[0] for p in pairs], [p[1] for p in pairs])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evals.run",
        description="Offline evals: run support scenarios through the agent k times, score them "
        "(end state in Firestore, pass^k, tool trajectory, reply checks, forbidden actions), write a report.",
    )
    p.add_argument(
        "--backend", choices=registry.NAMES, default=registry.DEFAULT, help="Model backend (agents.backends.registry)."
    )
    p.add_argument("--k", type=int, default=1, help="Trials per scenario (pass^1..pass^k are reported).")
    p.add_argument(
        "--pack",
        default=DEFAULT_PACK,
        help="The business (tools.packs) whose tools, ids and data the scenarios use (default %(default)s).",
    )
    p.add_argument(
        "--scenarios",
        nargs="+",
        default=None,
        help="Scenario files or folders (default: the pack's own, its folder of --split).",
    )
    p.add_argument(
        "--split",
        default=SPLITS[0],
        choices=SPLITS,
        help="Which of the pack's scenario folders runs without --scenarios: scenarios (the dev split, the routes "
        "were tuned on it) or heldout (never tuned on).",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="Folder for report.json, report.md and report.html.")
    p.add_argument("--only", default="", help="Comma-separated scenario ids to run.")
    p.add_argument("--category", default="", help="Comma-separated categories to run.")
    p.add_argument("--max-tokens", type=int, default=None, help="Cap on generated tokens per model call.")
    p.add_argument("--max-steps", type=int, default=None, help="Model calls per turn (tool-calling backends).")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the local model (smollm2).")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="Sampling temperature of the agent (0: greedy, so every trial is the same and pass^k = pass^1); "
        "above 0 each trial and turn samples with its own seed, as tau-bench's pass^k assumes.",
    )
    p.add_argument("--gemini-model", default=None, help="Gemini model name (default: the backend's).")
    p.add_argument("--gemini-base-url", default=None, help="Another Gemini endpoint (a local fake in tests).")
    p.add_argument(
        "--user-model",
        choices=("rules", *registry.NAMES),
        default="rules",
        help="Who plays the customer in 'simulated' scenarios: the scenario's rules, or a model backend "
        "(the rules stay its fallback). Scripted scenarios always use their turns.",
    )
    p.add_argument(
        "--judge",
        choices=("gemini", "smollm2"),
        default=None,
        help="Also score each trial's replies with this model as a judge (helpfulness, groundedness; 1-5, "
        "never gating). Unset: no judge.",
    )
    p.add_argument(
        "--bigquery-project",
        default=None,
        help="Also write the run and its trials to BigQuery (dataset supportflow_evals, tables eval_runs_v1 and "
        "eval_trials_v1) in this project.",
    )
    p.add_argument(
        "--bigquery-endpoint",
        default=os.environ.get("BIGQUERY_EMULATOR_HOST"),
        help="BigQuery endpoint, e.g. the local emulator's http://127.0.0.1:9050 (default: $BIGQUERY_EMULATOR_HOST; "
        "unset: Google's API).",
    )
    p.add_argument("--parallel", type=int, default=1, help="Trials run concurrently (each has its own database).")
    p.add_argument(
        "--runner",
        choices=("local", "beam"),
        default="local",
        help="local: a loop in this process (with --parallel threads); beam: a Beam batch pipeline, one element "
        "per trial (evals/beam_run.py).",
    )
    p.add_argument("--beam-args", default="", help="Pipeline options for --runner beam (default --runner=FnApiRunner).")
    p.add_argument("--baseline", default=None, help="A report.json to compare with (the regression gate).")
    p.add_argument("--max-drop", type=float, default=0.05, help="Gate: allowed absolute drop of pass^1.")
    p.add_argument("--validate", action="store_true", help="Only validate the scenario files, then exit.")
    p.add_argument("--quiet", action="store_true", help="No progress output.")
    return p


def main(argv: Sequence[str] | None = None, *, echo: Callable[[str], None] = print) -> int:
    args = _parser().parse_args(argv)
    only = [s for s in args.only.split(",") if s.strip()]
    try:
        args.scenarios = args.scenarios or [str(scenarios_folder(args.pack, args.split))]
        scenarios = load_scenarios(args.scenarios, ids=only, pack=args.pack)
    except (ScenarioError, PackError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.category:
        wanted = {c.strip() for c in args.category.split(",") if c.strip()}
        scenarios = [s for s in scenarios if s.category in wanted]
    if args.validate:
        echo(f"{len(scenarios)} scenarios valid in {', '.join(args.scenarios)}")
        return 0
    if not scenarios:
        print("no scenarios selected", file=sys.stderr)
        return 2
    if args.k < 1 or args.parallel < 1:
        print("--k and --parallel must be >= 1", file=sys.stderr)
        return 2
    gemini = {"gemini_model": args.gemini_model, "gemini_base_url": args.gemini_base_url}
    spec = {"backend": args.backend, "max_tokens": args.max_tokens, "max_steps": args.max_steps,
            "threads": args.threads, "temperature": args.temperature, "pack": args.pack, **gemini}  # fmt: skip
    user_spec = None if args.user_model == "rules" else {"backend": args.user_model, "threads": 1, **gemini}
    judge_spec = None if args.judge is None else {"backend": args.judge, "threads": 1, **gemini}
    command = "python -m evals.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    with firestore_emulator():
        if args.runner == "beam":
            from evals.beam_run import DEFAULT_BEAM_ARGS, run_with_beam

            beam_args = shlex.split(args.beam_args) or list(DEFAULT_BEAM_ARGS)
            result = run_with_beam(
                scenarios,
                spec,
                k=args.k,
                run_id=uuid.uuid4().hex[:8],
                out_dir=args.out,
                user_spec=user_spec,
                judge_spec=judge_spec,
                beam_args=beam_args,
                meta={"command": command},
            )
        else:
            agent = build_agent(**spec)
            user_agent = None
            if user_spec is not None:
                user_agent = agent if args.user_model == args.backend else build_agent(**user_spec)
            judge_agent = None
            if judge_spec is not None:
                judge_agent = agent if args.judge == args.backend else build_agent(**judge_spec)
            result = run_scenarios(
                scenarios,
                agent,
                k=args.k,
                user_agent=user_agent,
                judge_agent=judge_agent,
                parallel=args.parallel,
                progress=Progress(len(scenarios) * args.k, enabled=not args.quiet),
                meta={"command": command},
            )
    baseline = json.loads(Path(args.baseline).read_text(encoding="utf-8")) if args.baseline else None
    json_path, md_path = write_report(result, args.out, baseline=baseline, max_drop=args.max_drop)  # + report.html
    overall = result.summary()["overall"]
    hats = ", ".join(f"pass^{j} {v:.1%}" for j, v in overall["pass_hat"].items() if v is not None)
    echo(
        f"{overall['scenarios']} scenarios x {args.k}: {overall['passed_trials']}/{overall['trials']} trials passed; "
        f"{hats}; violations {overall['violations']}; wall {result.meta['wall_s']} s"
    )
    echo(f"report: {md_path.with_suffix('.html')}, {md_path} and {json_path}")
    if args.bigquery_project:
        from evals.results_bq import write_results

        runs, trials = write_results(result.to_json(), args.bigquery_project, args.bigquery_endpoint)
        echo(f"BigQuery: {runs} run row and {trials} trial rows in {args.bigquery_project}")
    if baseline is not None:
        verdict = compare(result.to_json(), baseline, args.max_drop)
        echo(verdict.text)
        if not verdict.ok:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
