"""The harness as a Beam batch pipeline: one element per (scenario, trial), so trials spread over workers.

    python -m evals.run --runner beam --backend gemini --k 3
    python -m evals.run --runner beam --beam-args "--runner=FnApiRunner --direct_num_workers=2 ..."

``Create(trials) -> Reshuffle -> ParDo(RunTrialFn) -> WriteToText(<out>/trials/part-*.jsonl)``;
``RunTrialFn`` loads the agent once per DoFn instance (``setup``: ``build_agent(**spec).load()``),
runs ``evals.harness.run_trial`` (its own emulator project per trial, so workers never share
state) and scores it; each output line is ``{"trace": ..., "score": ...}``. The driver reads the
lines back and writes the same report as the local runner.

Locally it runs on ``FnApiRunner`` (Beam's batch runner; the default DirectRunner would first try
to download Prism). On Dataflow every worker needs the Firestore emulator (the harness only ever
writes to an emulator; ``setup`` starts one from ``stack.emulators`` when
``FIRESTORE_EMULATOR_HOST`` is unset, so the worker image needs google-cloud-cli's emulator),
credentials for the model, and ``--out`` on GCS. That path is not tested here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from evals.report import RunResult
from evals.scenario import Scenario
from evals.scoring import TrialScore, score
from evals.trace import TrialTrace

DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner",)


class RunTrialFn(beam.DoFn):
    """(scenario, trial, project) -> one JSON line with the trace and the score."""

    def __init__(
        self,
        agent_spec: dict[str, Any],
        user_spec: dict[str, Any] | None = None,
        judge_spec: dict[str, Any] | None = None,
    ) -> None:
        self._agent_spec = dict(agent_spec)
        self._user_spec = dict(user_spec) if user_spec else None
        self._judge_spec = dict(judge_spec) if judge_spec else None

    def setup(self) -> None:
        from evals.runtime import build_agent

        self._emulator = None
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            from evals.runtime import firestore_emulator

            self._emulator = firestore_emulator()
            self._emulator.__enter__()
        self._agent = build_agent(**self._agent_spec).load()
        self._user = build_agent(**self._user_spec).load() if self._user_spec else None
        self._judge = build_agent(**self._judge_spec).load() if self._judge_spec else None
        self._worlds: list[Any] = []

    def process(self, element: tuple[Scenario, int, str]) -> Iterator[str]:
        from evals.harness import run_trial
        from evals.users import make_user

        scenario, trial, project = element
        user_handler = self._user.handler if self._user else None
        user = make_user(scenario, user_handler, self._user.model if self._user else None)
        trace = run_trial(scenario, trial, self._agent, project, user=user, keep_world=self._worlds)
        result = score(scenario, trace)
        if self._judge is not None:
            from evals.runtime import judge_metrics

            result.metrics.update(judge_metrics(self._judge, scenario, trace))
        yield json.dumps({"trace": trace.to_json(), "score": result.to_json()}, default=str)

    def teardown(self) -> None:
        if getattr(self, "_emulator", None) is not None:
            self._emulator.__exit__(None, None, None)


def run_with_beam(
    scenarios: Sequence[Scenario],
    agent_spec: dict[str, Any],
    *,
    k: int,
    run_id: str,
    out_dir: str | Path,
    user_spec: dict[str, Any] | None = None,
    judge_spec: dict[str, Any] | None = None,
    beam_args: Sequence[str] = DEFAULT_BEAM_ARGS,
    meta: dict[str, Any] | None = None,
) -> RunResult:
    """Every scenario ``k`` times as a Beam batch job; the trials' lines land in ``<out_dir>/trials/``."""
    import time
    from datetime import UTC, datetime

    from evals.runtime import build_agent

    jobs = [(sc, t) for sc in scenarios for t in range(1, k + 1)]
    elements = [(sc, t, f"sfeval-{run_id}-{n:04d}") for n, (sc, t) in enumerate(jobs)]
    prefix = FileSystems.join(str(out_dir), "trials", f"{run_id}-part")
    started, t0 = datetime.now(UTC), time.monotonic()
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        _ = (
            p
            | "Trials" >> beam.Create(elements, reshuffle=False)
            | "Spread" >> beam.Reshuffle()
            | "RunTrial" >> beam.ParDo(RunTrialFn(agent_spec, user_spec, judge_spec))
            | "Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
        )
    traces: list[TrialTrace] = []
    scores: list[TrialScore] = []
    for match in FileSystems.match([prefix + "*"])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            for raw in handle.read().decode("utf-8").splitlines():
                if raw.strip():
                    record = json.loads(raw)
                    traces.append(TrialTrace.from_json(record["trace"]))
                    scores.append(TrialScore.from_json(record["score"]))
    rank = {sc.id: i for i, sc in enumerate(scenarios)}
    traces.sort(key=lambda t: (rank[t.scenario_id], t.trial))
    scores.sort(key=lambda s: (rank[s.scenario_id], s.trial))
    agent = build_agent(**agent_spec)  # metadata only: not loaded
    info = {
        "run_id": run_id,
        "runner": "beam",
        "backend": agent.backend,
        "model": agent.model_name,
        "prompt_version": agent.version,
        "max_steps": agent.config.max_steps,
        "max_tokens": agent.config.max_tokens,
        "tools": bool(agent.config.tools),
        "user_model": (user_spec or {}).get("backend"),
        "judge_model": (judge_spec or {}).get("backend"),
        "temperature": agent.temperature,
        "k": k,
        "started_at": started.isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - t0, 1),
        **(meta or {}),
    }
    return RunResult(info, list(scenarios), traces, scores)
