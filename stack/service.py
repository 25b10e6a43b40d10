"""The embedded default, end to end: emulators, resources, seed data, the
streaming pipeline as a child process, and a terminal chat.

``python -m stack up`` (what ``make run`` does). Everything it starts is
stopped when the chat ends (Ctrl-D, /quit or Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from stack.emulators import DEFAULT_STATE_DIR, LocalStack, StackError, ensure_bq_venv
from stack.seed import REFERENCE_TIME

REPO = Path(__file__).resolve().parent.parent


def pipeline_command(bigquery_endpoint: str, backend: str, extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.main",
        "--runner=BundleBasedDirectRunner",
        "--streaming",
        f"--bigquery_endpoint={bigquery_endpoint}",
        f"--model_backend={backend}",
        # The seed data is dated relative to REFERENCE_TIME: judge return windows against it.
        f"--policy_now={REFERENCE_TIME.isoformat()}",
        *(extra or []),
    ]


class PipelineProcess:
    """The streaming pipeline in its own process group, logging to one file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PipelineProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.command, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PipelineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def up(
    customers: int,
    backend: str,
    customer: str,
    state_dir: Path,
    web_port: int = 8080,
    pipeline_args: list[str] | None = None,
) -> int:
    from stack.chat import repl
    from stack.clients import firestore_client
    from stack.resources import ensure_resources
    from stack.seed import seed_firestore

    print("supportflow: starting the local stack (Pub/Sub, Firestore, BigQuery emulators)...", flush=True)
    try:
        bq_venv = ensure_bq_venv(state_dir / "bq-venv")  # its own venv: bqemulator's pins never meet Beam's
        stack = LocalStack(state_dir=state_dir, bq_venv=bq_venv).start()
    except StackError as e:
        print(f"supportflow: {e}", file=sys.stderr)
        return 1
    try:
        env = stack.apply_env()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        t0 = time.monotonic()
        stats = seed_firestore(firestore_client(stack.project), customers)
        print(f"supportflow: seeded {stats.customers} customers in {time.monotonic() - t0:.1f} s", flush=True)
        log = stack.log_dir / "pipeline.log"
        web_cmd = [sys.executable, "-m", "web", "--port", str(web_port)]
        # No .start() here: entering the block starts each process (start() + __enter__ would start two).
        with (
            PipelineProcess(pipeline_command(stack.bigquery_endpoint, backend, pipeline_args), env, log) as pipeline,
            PipelineProcess(web_cmd, env, stack.log_dir / "web.log"),
        ):
            print(f"supportflow: pipeline running ({backend} model); logs in {stack.log_dir}", flush=True)
            print(f"supportflow: chat page on http://127.0.0.1:{web_port}/ (operator view: /ops)", flush=True)
            for name, value in env.items():
                print(f"  {name}={value}")
            print("  the first reply waits for the model to load (a few seconds).")
            repl(stack.project, customer)
            if not pipeline.alive():
                print(
                    "supportflow: the pipeline stopped early; last log lines:\n" + pipeline.log_tail(), file=sys.stderr
                )
                return 1
    finally:
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="run the service on the local stack and chat with it from the terminal")
    u.add_argument("--customers", type=int, default=300, help="synthetic customers to seed")
    u.add_argument("--customer", default="C0001", help="the customer you chat as")
    u.add_argument(
        "--model",
        default="smollm2",
        choices=("smollm2", "instant", "gemini", "gemma"),
        help="model backend: gemini needs GOOGLE_API_KEY; gemma needs --pipeline-args=--model_path=...",
    )
    u.add_argument(
        "--pipeline-args",
        default="",
        help='more pipeline options, e.g. "--model_path=random:tiny --model_device=cpu" (see pipeline/options.py)',
    )
    u.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    u.add_argument("--web-port", type=int, default=8080, help="port of the chat page (python -m web)")
    args = parser.parse_args(argv)
    extra = shlex.split(args.pipeline_args)
    return up(args.customers, args.model, args.customer, args.state_dir, args.web_port, extra)


if __name__ == "__main__":
    sys.exit(main())
