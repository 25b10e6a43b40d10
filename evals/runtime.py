"""What a run needs besides its scenarios, shared by the CLI (evals/run.py) and the Beam runner (evals/beam_run.py).

The agent built from a spec (its backend's registry factory with the pipeline's prompt and step plan),
the Firestore emulator the trials write to, and the optional judge's metrics. A module of its own so
the Beam runner's workers build agents without importing the CLI, and the CLI imports the Beam runner
without a circle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agents.backends import registry
from evals.harness import Agent, agent_plan
from evals.judge import judge_trial
from evals.scenario import Scenario
from evals.trace import TrialTrace
from tools.packs import DEFAULT_PACK


def build_agent(
    backend: str,
    *,
    max_tokens: int | None = None,
    max_steps: int | None = None,
    threads: int = 1,
    gemini_model: str | None = None,
    gemini_base_url: str | None = None,
    temperature: float = 0.0,
    pack: str = DEFAULT_PACK,
    **handler_options: Any,
) -> Agent:
    """The backend's handler (its registry factory) with the pipeline's prompt and step plan.

    The arguments are named as on this CLI; each goes to the backend under its pipeline option's name,
    and only to a backend that reads that option. ``handler_options`` go to the handler's constructor.
    """
    version, config = agent_plan(backend, max_steps=max_steps, max_tokens=max_tokens, pack=pack)
    given = {
        "model_max_tokens": config.max_tokens,
        "model_threads": threads,
        "gemini_model": gemini_model,
        "gemini_base_url": gemini_base_url,
    }
    handler = registry.make_handler(backend, **registry.get(backend).pick(given), **handler_options)
    return Agent(backend=backend, handler=handler, version=version, config=config, temperature=temperature)


def judge_metrics(judge_agent: Agent, scenario: Scenario, trace: TrialTrace) -> dict[str, Any]:
    """The judge's scores of one trial, as TrialScore metrics (never gating)."""
    judgment = judge_trial(judge_agent.handler, judge_agent.model, scenario, trace)
    return {**judgment.metrics(), "judge_reason": judgment.reason}


@contextmanager
def firestore_emulator(log_dir: Path | None = None) -> Iterator[str]:
    """``FIRESTORE_EMULATOR_HOST`` if set; else a Firestore emulator of our own for the block's duration."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "").strip()
    if host:
        yield host
        return
    from stack.emulators import DEFAULT_PROJECT, DEFAULT_STATE_DIR, free_port, reap_stale
    from stack.emulators import firestore_emulator as make_emulator

    state = log_dir or DEFAULT_STATE_DIR / "evals"
    emu = make_emulator(free_port(), state / "logs", DEFAULT_PROJECT)
    emu.run_dir = state / "run"
    reap_stale(emu.run_dir)
    print(f"starting the Firestore emulator (log: {emu.log_path}) ...", file=sys.stderr)
    emu.launch()
    try:
        emu.wait_ready(90.0)
        host = f"127.0.0.1:{emu.port}"
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        yield host
    finally:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        emu.stop()
