"""The embedded default, end to end: emulators, resources, seed data, the
streaming pipeline as a child process, and a terminal chat.

``python -m stack up`` (what ``make run`` does). Everything it starts is
stopped when the chat ends (Ctrl-D, /quit or Ctrl-C). ``python -m stack seed``
(re)writes a pack's seed data into a running stack's Firestore emulator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agents.backends import registry
from stack.emulators import (
    DEFAULT_PROJECT,
    DEFAULT_STATE_DIR,
    LocalStack,
    StackError,
    ensure_bq_venv,
    free_port,
    port_free,
)
from tools.packs import DEFAULT_PACK, Pack, available_packs, load_pack

DEFAULT_WEB_PORT = 8080

REPO = Path(__file__).resolve().parent.parent


def pipeline_command(
    bigquery_endpoint: str, backend: str, extra: list[str] | None = None, pack: str = DEFAULT_PACK
) -> list[str]:
    """The pipeline's command line; its policy clock is ``pack``'s seed "now" (the seed data is dated from it)."""
    now = load_pack(pack).reference_time
    return [
        sys.executable,
        "-m",
        "pipeline.local_runner",
        "--runner=BundleBasedDirectRunner",
        "--streaming",
        f"--bigquery_endpoint={bigquery_endpoint}",
        f"--model_backend={backend}",
        *([f"--policy_now={now.isoformat()}"] if now is not None else []),
        *(extra or []),
    ]


def seeded_ids(pack: Pack, customers: int) -> list[str]:
    """The customer ids the pack's seed writes for ``customers`` customers ([] if the pack does not say)."""
    return [c.customer_id for c in pack.build_customers(customers)] if pack.build_customers else []


def seed(pack: Pack, client: object, customers: int) -> int:
    """Write the pack's seed data (its first ``customers`` customers) to Firestore; the count seeded."""
    if pack.seed is None:
        raise StackError(f"pack {pack.name!r} declares no seed data (Pack.seed)")
    return int(pack.seed(client, customers))


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


STACK_RECORD_GLOB = "up-*.json"
WEB_READY_TIMEOUT_S = 120.0  # the page imports Beam: ~5 s on an idle machine, much more on a busy one


def say(line: str) -> None:
    """One progress line on the terminal: every long step announces itself before it starts."""
    print(f"supportflow: {line}", flush=True)


@dataclass(frozen=True)
class RunningStack:
    """Another ``stack up`` on the same state dir, from the record it keeps in ``run/stacks/up-<pid>.json``."""

    pid: int
    web_url: str
    log_dir: str


def stack_records_dir(state_dir: Path) -> Path:
    # Not run/ itself: LocalStack.start() reaps run/*.json as emulator pid files and drops what is not one.
    return state_dir / "run" / "stacks"


def running_stacks(state_dir: Path) -> list[RunningStack]:
    """The live ``stack up`` processes on ``state_dir``, other than this one; stale records are removed."""
    found: list[RunningStack] = []
    for record in sorted(stack_records_dir(state_dir).glob(STACK_RECORD_GLOB)):
        try:
            info = json.loads(record.read_text())
            other = RunningStack(int(info["pid"]), str(info["web_url"]), str(info["log_dir"]))
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if other.pid == os.getpid():
            continue
        if _is_stack_up(other.pid):
            found.append(other)
        else:
            record.unlink(missing_ok=True)  # its owner died without cleaning up (SIGKILL)
    return found


def _is_stack_up(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"stack" in cmdline  # a recycled pid running something else is no stack


@contextlib.contextmanager
def stack_record(state_dir: Path, web_url: str, log_dir: Path) -> Iterator[Path]:
    """Announce this stack to a second ``stack up`` on the same state dir for as long as it runs."""
    record = stack_records_dir(state_dir) / f"up-{os.getpid()}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"pid": os.getpid(), "web_url": web_url, "log_dir": str(log_dir)}))
    try:
        yield record
    finally:
        record.unlink(missing_ok=True)


def choose_web_port(requested: int | None) -> int:
    """The chat page's port: the one asked for (it must be free), else 8080, else any free port."""
    if requested is not None:
        if requested and not port_free(requested):
            raise StackError(f"--web-port {requested}: 127.0.0.1:{requested} is already in use; pick another or 0")
        return requested or free_port()
    if port_free(DEFAULT_WEB_PORT):
        return DEFAULT_WEB_PORT
    port = free_port()
    say(f"port {DEFAULT_WEB_PORT} is in use (another stack's chat page?): this stack's page takes port {port}")
    return port


def wait_for_web(web: PipelineProcess, port: int, timeout_s: float = WEB_READY_TIMEOUT_S) -> bool:
    """True once the chat page listens; False (with its log's last lines on stderr) if its process ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not web.alive():
            print(
                f"supportflow: the chat page did not start (no page on port {port}); the terminal chat still works."
                f" Last lines of {web.log_path}:\n{web.log_tail(15)}",
                file=sys.stderr,
                flush=True,
            )
            return False
        if not port_free(port):
            return True
        time.sleep(0.2)
    print(f"supportflow: the chat page is not up after {timeout_s:.0f} s; see {web.log_path}", file=sys.stderr)
    return False


def up(
    customers: int,
    backend: str,
    customer: str,
    state_dir: Path,
    web_port: int | None = None,
    pipeline_args: list[str] | None = None,
    pack: str = DEFAULT_PACK,
) -> int:
    state_dir = state_dir.resolve()
    others = running_stacks(state_dir)
    for other in others:
        say(f"another stack runs on {state_dir}: pid {other.pid}, chat page {other.web_url}, logs in {other.log_dir}")
    # The first stack keeps the documented place; one beside it gets logs of its own.
    log_dir = state_dir / "logs" / str(os.getpid()) if others else state_dir / "logs"
    if others:
        say("this one starts beside it, on ports of its own")
    try:
        port = choose_web_port(web_port)
    except StackError as e:
        print(f"supportflow: {e}", file=sys.stderr)
        return 1
    web_url = f"http://127.0.0.1:{port}/"
    # Announced before the slow start, so a stack started meanwhile already sees this one.
    with stack_record(state_dir, web_url, log_dir):
        return _run(customers, backend, customer, state_dir, log_dir, port, pipeline_args, pack)


def _run(
    customers: int,
    backend: str,
    customer: str,
    state_dir: Path,
    log_dir: Path,
    port: int,
    pipeline_args: list[str] | None,
    pack: str = DEFAULT_PACK,
) -> int:
    from stack.chat import repl
    from stack.clients import firestore_client
    from stack.keys import use_demo_keys
    from stack.resources import ensure_resources

    web_url = f"http://127.0.0.1:{port}/"
    try:
        # Its own venv: bqemulator's pins never meet Beam's.
        bq_venv = ensure_bq_venv(state_dir / "bq-venv", announce=say)
        say("starting the local stack (Pub/Sub, Firestore, BigQuery emulators)...")
        stack = LocalStack(state_dir=state_dir, bq_venv=bq_venv, log_dir=log_dir).start()
    except StackError as e:
        print(f"supportflow: {e}", file=sys.stderr)
        return 1
    try:
        say(f"emulators ready in {stack.startup_s:.1f} s; creating topics, subscriptions and tables...")
        env = stack.apply_env()
        use_demo_keys(state_dir)  # DEMO identity and session binding keys, inherited by every process, never printed
        ensure_resources(stack.project, stack.bigquery_endpoint)
        say(f"seeding {customers} customers of pack {pack!r}...")
        t0 = time.monotonic()
        business = load_pack(pack)
        seeded = seed(business, firestore_client(stack.project), customers)
        say(f"seeded {seeded} customers in {time.monotonic() - t0:.1f} s")
        if pack != DEFAULT_PACK:
            pipeline_args = [*(pipeline_args or []), f"--pack={pack}"]
        log = stack.log_dir / "pipeline.log"
        web_cmd = [sys.executable, "-m", "web", "--port", str(port), "--pack", pack]
        say(f"starting the pipeline ({backend} model) and the chat page...")
        # No .start() here: entering the block starts each process (start() + __enter__ would start two).
        with (
            PipelineProcess(
                pipeline_command(stack.bigquery_endpoint, backend, pipeline_args, pack), env, log
            ) as pipeline,
            PipelineProcess(web_cmd, env, stack.log_dir / "web.log") as web,
        ):
            if wait_for_web(web, port):
                say(f"chat page on {web_url} (operator view: {web_url}ops)")
            say(f"pipeline running ({backend} model); logs in {stack.log_dir}")
            for name, value in env.items():
                print(f"  {name}={value}")
            print("  the first reply waits for the model to load (a few seconds).")
            chat_over = threading.Event()
            threading.Thread(target=_report_pipeline_exit, args=(pipeline, chat_over), daemon=True).start()
            repl(stack.project, customer)
            chat_over.set()
            if not pipeline.alive():
                print(
                    "supportflow: the pipeline stopped early; last log lines:\n" + pipeline.log_tail(), file=sys.stderr
                )
                return 1
            say("stopping the pipeline, the chat page and the emulators...")
    finally:
        stack.stop()
    return 0


def _report_pipeline_exit(pipeline: PipelineProcess, chat_over: threading.Event, poll_s: float = 1.0) -> None:
    """Say at once when the pipeline dies mid-chat, rather than only after /quit: no reply would ever come."""
    while pipeline.alive() and not chat_over.wait(poll_s):
        pass
    proc = pipeline.proc
    if not chat_over.is_set() and proc is not None:  # chat over: the pipeline is being stopped on purpose
        print(
            f"\nsupportflow: the pipeline stopped (exit {proc.returncode}); no more replies will come."
            f" Last lines of {pipeline.log_path}:\n{pipeline.log_tail(12)}\n/quit to stop the stack.",
            file=sys.stderr,
            flush=True,
        )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, ""):
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {value}")
    return value


UP_DESCRIPTION = """\
Start the whole service on this machine: the Pub/Sub, Firestore and BigQuery emulators, the seed data,
the streaming pipeline and the chat page, then chat with the agent from this terminal. Everything stops
when the chat ends (Ctrl-D, /quit or Ctrl-C). A second `stack up` beside a running one takes ports and a
log directory of its own, and prints its own addresses."""


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__, formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default = load_pack(DEFAULT_PACK)
    ids = seeded_ids(default, default.default_customers)
    span = f"{ids[0]}..{ids[-1]}" if ids else "its own"
    u = sub.add_parser(
        "up",
        help="run the service on the local stack and chat with it from the terminal",
        description=UP_DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    u.add_argument(
        "--pack",
        default=DEFAULT_PACK,
        choices=available_packs(),
        help="the business the agent serves: a pack (docs/packs.md), its tools, ids, routes and seed data",
    )
    u.add_argument(
        "--customers",
        type=positive_int,
        default=None,
        help=f"synthetic customers to seed (default: the pack's; the {DEFAULT_PACK} seeds {default.default_customers})",
    )
    u.add_argument(
        "--customer",
        default=None,
        help=f"the customer you chat as (default: the pack's demo customer; the {DEFAULT_PACK}'s seeded ids are "
        f"{span})",
    )
    u.add_argument(
        "--model",
        default=registry.DEFAULT,
        choices=registry.NAMES,
        help="model backend (agents/backends/registry.py): gemini needs GOOGLE_API_KEY; "
        "gemma needs --pipeline-args=--model_path=...; gemma_vllm needs vLLM",
    )
    u.add_argument(
        "--pipeline-args",
        default="",
        help='more pipeline options, e.g. "--model_path=random:tiny --model_device=cpu" (see pipeline/options.py)',
    )
    u.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the emulators' venv, logs and pid files live (a second stack may share it)",
    )
    u.add_argument(
        "--web-port",
        type=port_number,
        default=None,
        help=f"port of the chat page; 0 picks a free one (default: {DEFAULT_WEB_PORT}, or a free port if it is taken)",
    )
    s = sub.add_parser(
        "seed",
        help="write a pack's seed data into a running stack's Firestore emulator (idempotent)",
        description="Write a pack's seed data into the Firestore emulator at $FIRESTORE_EMULATOR_HOST (a running "
        "stack's); a rerun rewrites the same documents.",
        formatter_class=_HelpFormatter,
    )
    s.add_argument("--pack", default=DEFAULT_PACK, choices=available_packs(), help="the business whose data to seed")
    s.add_argument("--customers", type=positive_int, default=None, help="how many customers (default: the pack's)")
    s.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", DEFAULT_PROJECT))
    return parser, u


def seed_command(pack: Pack, customers: int, project: str) -> int:
    """``python -m stack seed``: the pack's seed data into the emulator (never a real Firestore)."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if not host:
        print("FIRESTORE_EMULATOR_HOST is not set: start the local stack first.", file=sys.stderr)
        return 2
    from stack.clients import firestore_client

    t0 = time.monotonic()
    seeded = seed(pack, firestore_client(project), customers)
    print(f"seeded {seeded} customers of pack {pack.name!r} into {project} at {host} in {time.monotonic() - t0:.2f}s")
    return 0


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    # `kill <pid>` should stop a stack as /quit does: SystemExit runs every finally and atexit on the way
    # out (pipeline, page, emulators), where Python's default SIGTERM would orphan them all.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser, up_parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the top-level parser would print its own usage: a misspelt `up` flag deserves `up`'s
        up_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    business = load_pack(args.pack)
    if args.customers is None:
        args.customers = business.default_customers
    if args.command == "seed":
        return seed_command(business, args.customers, args.project)
    if business.seed is None:
        up_parser.error(f"pack {args.pack} declares no seed data (Pack.seed): the stack has no customers to serve")
    if args.customer is None:
        args.customer = business.demo_customer
    if not business.customer_id.regex.fullmatch(args.customer):
        up_parser.error(f"--customer {args.customer} is no customer id of pack {args.pack} (like "
                        f"{business.customer_id.example})")  # fmt: skip
    seeded = seeded_ids(business, args.customers)
    if seeded and args.customer not in seeded:
        up_parser.error(
            f"--customer {args.customer} is not seeded: --customers {args.customers} seeds {seeded[0]}..{seeded[-1]}"
        )
    try:
        extra = shlex.split(args.pipeline_args)
    except ValueError as e:
        up_parser.error(f"--pipeline-args: {e}")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    return up(args.customers, args.model, args.customer, args.state_dir, args.web_port, extra, args.pack)


if __name__ == "__main__":
    sys.exit(main())
