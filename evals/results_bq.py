"""Offline eval results to BigQuery: one row per run (``eval_runs_v1``), one per trial (``eval_trials_v1``).

Rows come from a report.json (``RunResult.to_json()``), so a finished run can be loaded later:
``python -m evals.results_bq artifacts/evals/smollm2-k3 --project P [--endpoint URL]``. Loading a
run whose ``run_id`` is already in ``eval_runs_v1`` writes nothing (BigQuery's insert-id
de-duplication is best-effort, the emulator has none); trials go in before the run row, so a run
row means its trials are there. Official client, ``insert_rows_json``, for the same reason as the
pipeline's writer (``pipeline/bigquery.py``): Beam's sink cannot reach the emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.eval_rows import (
    EVAL_RUNS_SCHEMA,
    EVAL_RUNS_TABLE,
    EVAL_SCHEMA_VERSION,
    EVAL_TRIALS_SCHEMA,
    EVAL_TRIALS_TABLE,
)
from pipeline.options import EVAL_DATASET as DATASET  # the pipeline's eval dataset: runs sit beside its turns

BATCH_ROWS = 500


def run_row(data: Mapping[str, Any]) -> dict[str, Any]:
    run, overall = data["run"], data["summary"]["overall"]
    hats = overall.get("pass_hat") or {}
    k = int(run.get("k", 1))
    return {
        "schema_version": EVAL_SCHEMA_VERSION,
        "run_id": str(run["run_id"]),
        "backend": str(run.get("backend")),
        "model": run.get("model"),
        "prompt_version": run.get("prompt_version"),
        "k": k,
        "temperature": run.get("temperature"),
        "judge_model": run.get("judge_model"),
        "scenarios": int(overall["scenarios"]),
        "trials": int(overall["trials"]),
        "passed_trials": int(overall["passed_trials"]),
        "pass_hat_1": hats.get("1"),
        "pass_hat_k": hats.get(str(k)),
        "violations": overall.get("violations"),
        "summary": json.dumps(data["summary"], sort_keys=True),
        "wall_s": run.get("wall_s"),
        "command": run.get("command"),
        "started_at": _timestamp(run.get("started_at")),
    }


def trial_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    run = data["run"]
    started = _timestamp(run.get("started_at"))
    rows = []
    for scenario in data["scenarios"]:
        for trial in scenario["trials"]:
            m = trial.get("metrics") or {}
            turn_ms = [float(v) for v in m.get("turn_wall_ms") or []]
            rows.append(
                {
                    "schema_version": EVAL_SCHEMA_VERSION,
                    "run_id": str(run["run_id"]),
                    "scenario_id": scenario["id"],
                    "category": scenario["category"],
                    "trial": int(trial["trial"]),
                    "passed": bool(trial["passed"]),
                    "violations": int(trial.get("violations", 0)),
                    "failed_checks": sorted({c["name"] for c in trial.get("checks", []) if not c.get("passed")}),
                    "trajectory_precision": m.get("trajectory_precision"),
                    "trajectory_recall": m.get("trajectory_recall"),
                    "handoff_correct": m.get("handoff_correct"),
                    "turns": len(turn_ms) or None,
                    "turn_ms_max": max(turn_ms) if turn_ms else None,
                    "prompt_tokens": m.get("prompt_tokens"),
                    "completion_tokens": m.get("completion_tokens"),
                    "judge_helpfulness": m.get("judge_helpfulness"),
                    "judge_groundedness": m.get("judge_groundedness"),
                    "started_at": started,
                }
            )
    return rows


def _timestamp(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    return datetime.now(UTC).isoformat()


def _client(project: str, endpoint: str | None) -> Any:
    from google.cloud import bigquery

    if endpoint:
        from stack.clients import bigquery_client

        return bigquery_client(project, endpoint)
    return bigquery.Client(project=project)


def write_results(data: Mapping[str, Any], project: str, endpoint: str | None = None) -> tuple[int, int]:
    """The run's rows into ``project.supportflow_evals`` (tables created if missing); returns (runs, trials)."""
    from stack.resources import ensure_bigquery

    client = _client(project, endpoint)
    try:
        _, tables = ensure_bigquery(
            client, DATASET, {EVAL_RUNS_TABLE: EVAL_RUNS_SCHEMA, EVAL_TRIALS_TABLE: EVAL_TRIALS_SCHEMA}
        )
        run = run_row(data)
        if _loaded(client, tables[EVAL_RUNS_TABLE], run["run_id"]):
            return 0, 0
        trials = trial_rows(data)
        ids = [f"{t['run_id']}/{t['scenario_id']}/{t['trial']}" for t in trials]
        for start in range(0, len(trials), BATCH_ROWS):
            chunk = slice(start, start + BATCH_ROWS)
            _insert(client, tables[EVAL_TRIALS_TABLE], trials[chunk], ids[chunk])
        _insert(client, tables[EVAL_RUNS_TABLE], [run], [run["run_id"]])
    finally:
        client.close()
    return 1, len(trials)


def _loaded(client: Any, runs_table: str, run_id: str) -> bool:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("run_id", "STRING", run_id)])
    job = client.query(f"SELECT COUNT(*) AS n FROM `{runs_table}` WHERE run_id = @run_id", job_config=config)
    return next(iter(job.result()))["n"] > 0


def _insert(client: Any, table: str, rows: Sequence[dict[str, Any]], ids: Sequence[str]) -> None:
    errors = client.insert_rows_json(table, list(rows), row_ids=list(ids))
    if errors:
        raise RuntimeError(f"BigQuery refused rows of {table}: {str(errors)[:500]}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.results_bq", description="Load an eval run into BigQuery.")
    p.add_argument("run", type=Path, help="a run folder (with report.json) or a report.json")
    p.add_argument("--project", required=True)
    p.add_argument("--endpoint", default=os.environ.get("BIGQUERY_EMULATOR_HOST"), help="emulator endpoint")
    args = p.parse_args(argv)
    path = args.run / "report.json" if args.run.is_dir() else args.run
    runs, trials = write_results(json.loads(path.read_text(encoding="utf-8")), args.project, args.endpoint)
    if runs:
        print(f"wrote {runs} run row and {trials} trial rows to {args.project}.{DATASET}")
    else:
        print(f"run already in {args.project}.{DATASET}: nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
