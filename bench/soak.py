"""Soak run: a steady load of sessions coming and going for a long while, watching the pipeline's memory.

    .venv/bin/python -m bench.soak --minutes 15 --sessions 200 --out artifacts/bench_soak.json
    .venv/bin/python -m bench.soak --minutes 2 --sessions 50            # a check that it works

Not part of the test suite. It starts its own local stack (emulators in a throwaway state dir), seeds
it, starts the pipeline (``python -m pipeline.main``, instant model by default) with a short
``--idle_timeout_s`` so sessions really close and their state is freed, and plays the load of
``bench.load`` (``LoadPlayer``): customers arrive as a Poisson process for ``--minutes``, at the rate
that keeps about ``--sessions`` of them in conversation (Little's law on the expected session
length), each holding a few turns with think time in between. Arrivals stop after ``--minutes``;
the last conversations finish, then it keeps sampling for an idle timeout more, so the tail shows
the state being freed.

Every ``--sample-s`` (15 s) it records: RSS of the pipeline's process group (psutil when installed,
else ``/proc/<pid>/status`` VmRSS), its CPU seconds, turns answered so far, turns/s and latency
(last message sent -> reply received) p50/p99 of the window, sessions in conversation (the load
generator's view) and sessions open in the pipeline's state (started minus closed: the closed ones
are the ``sessions_v1`` rows in BigQuery). The result: the curve, a least-squares slope of RSS in
MB/min over the second half of the load (growth or not), overall latency, and the delivery invariant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.backends import registry
from bench.harness import check_delivery, percentile, summary
from bench.load import ARTIFACTS, System, warm_up
from bench.load_plan import LoadProfile, plan_load
from bench.load_player import LoadPlayer, PlayResult
from bench.probes import proc_cpu_s, report_head

DEFAULT_OUT = ARTIFACTS / "bench_soak.json"


@dataclass
class Sample:
    t_s: float  # since the load started
    rss_mb: float | None
    cpu_s: float | None
    turns: int  # answered so far (distinct turns)
    window_turns: int
    window_turns_per_s: float
    window_p50_ms: float | None
    window_p99_ms: float | None
    sessions_talking: int  # started and not finished, as the load generator sees them
    sessions_open_in_pipeline: int | None  # started minus closed (SessionClosed rows)
    sessions_closed: int | None


def group_rss_mb(pgid: int) -> float | None:
    """Resident memory of every process in the group (the pipeline and whatever it spawned)."""
    try:
        import psutil  # optional: not a dependency of the project
    except ImportError:
        psutil = None
    # Reused from the stack: live members of a process group, from /proc.
    from stack.emulators import _group_members

    pids = _group_members(pgid) or [pgid]
    total_kb = 0
    for pid in pids:
        if psutil is not None:
            try:
                total_kb += psutil.Process(pid).memory_info().rss // 1024
            except psutil.Error:
                continue
            continue
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return round(total_kb / 1024, 1) if total_kb else None


def slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return round(60 * sum((x - mx) * (y - my) for x, y in points) / sxx, 3)


class ClosedSessions:
    """Count of the run's sessions the pipeline closed (its ``sessions_v1`` rows)."""

    def __init__(self, project: str, endpoint: str, prefix: str) -> None:
        from google.cloud import bigquery

        from contract.eval_rows import SESSIONS_TABLE
        from pipeline.options import EVAL_DATASET
        from stack.clients import bigquery_client

        self._bq = bigquery_client(project, endpoint)
        self._sql = (
            f"SELECT COUNT(DISTINCT session_id) AS n FROM `{project}.{EVAL_DATASET}.{SESSIONS_TABLE}` "
            "WHERE STARTS_WITH(session_id, @prefix)"
        )
        self._config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("prefix", "STRING", prefix)]
        )

    def count(self) -> int | None:
        try:
            return int(next(iter(self._bq.query(self._sql, job_config=self._config).result()))["n"])
        except Exception:  # noqa: BLE001 - a missed sample is a gap in the curve, not a failed soak
            return None


def expected_session_s(profile: LoadProfile, latency_s: float) -> float:
    """Mean conversation length: turns x (reply latency + think time), with bursts' gaps."""
    turns = sum(profile.turns) / 2
    think = sum(profile.think_s) / 2
    burst_gap = profile.burstiness * (profile.max_burst / 2 + 0.5) * sum(profile.burst_gap_s) / 2
    return turns * (latency_s + think + burst_gap)


class Sampler:
    """Turns the load generator's snapshots and the process's counters into ``Sample`` rows."""

    def __init__(self, player: LoadPlayer, pgid: int, closed: ClosedSessions, t0: float) -> None:
        self.player, self.pgid, self.closed, self.t0 = player, pgid, closed, t0
        self.samples: list[Sample] = []
        self._last_t = 0.0
        self._turns_seen: set[str] = set()

    def take(self) -> Sample:
        replies, sent_at, started, finished = self.player.snapshot()
        t = time.monotonic() - self.t0
        window: list[float] = []  # turns first seen since the last sample
        for reply, received in replies:
            if reply.turn_id in self._turns_seen:
                continue  # a duplicate delivery: the customer saw the first
            self._turns_seen.add(reply.turn_id)
            sent = [sent_at[m] for m in reply.answers if m in sent_at]
            if sent:
                window.append((received - max(sent)) * 1000)
        closed = self.closed.count()
        span = max(1e-3, t - self._last_t)
        sample = Sample(
            t_s=round(t, 1),
            rss_mb=group_rss_mb(self.pgid),
            cpu_s=proc_cpu_s(self.pgid),
            turns=len(self._turns_seen),
            window_turns=len(window),
            window_turns_per_s=round(len(window) / span, 2),
            window_p50_ms=round(percentile(window, 50)) if window else None,
            window_p99_ms=round(percentile(window, 99)) if window else None,
            sessions_talking=started - finished,
            sessions_open_in_pipeline=None if closed is None else started - closed,
            sessions_closed=closed,
        )
        self._last_t = t
        self.samples.append(sample)
        return sample


HEADER = "   t_s  rss_mb   cpu_s   turns  turns/s  p50_ms  p99_ms  talking  open  closed"


def row(s: Sample) -> str:
    def f(v: float | int | None, width: int, digits: int = 0) -> str:
        return ("-" if v is None else f"{v:.{digits}f}").rjust(width)

    return (
        f"{f(s.t_s, 6)}  {f(s.rss_mb, 6, 1)}  {f(s.cpu_s, 6, 1)}  {f(s.turns, 6)}  {f(s.window_turns_per_s, 7, 2)}  "
        f"{f(s.window_p50_ms, 6)}  {f(s.window_p99_ms, 6)}  {f(s.sessions_talking, 7)}  "
        f"{f(s.sessions_open_in_pipeline, 4)}  {f(s.sessions_closed, 6)}"
    )


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.options import INBOUND_TOPIC, REPLY_TOPIC
    from stack.clients import firestore_client
    from stack.emulators import DEFAULT_STATE_DIR, LocalStack, ensure_bq_venv
    from stack.resources import ensure_resources
    from stack.service import PipelineProcess, pipeline_command
    from tools.packs import load_pack

    base = LoadProfile(
        turns=(args.min_turns, args.max_turns),
        think_s=(args.min_think_s, args.max_think_s),
        burstiness=args.burstiness,
        customers=args.customers,
        seed=args.seed,
        turn_timeout_s=args.turn_timeout_s,
    )
    session_s = expected_session_s(base, args.quiet_window_s + args.expected_overhead_s)
    rate = args.sessions / session_s
    load_s = args.minutes * 60
    profile = LoadProfile(**{**asdict(base), "sessions": max(1, round(rate * load_s)), "arrival_rate": rate})
    pipeline_args = [
        f"--quiet_window_s={args.quiet_window_s}",
        f"--max_hold_s={args.max_hold_s}",
        f"--idle_timeout_s={args.idle_timeout_s}",
        f"--model_max_tokens={args.model_max_tokens}",
        "--model_threads=1",
    ]
    settings = {
        "backend": args.backend,
        "minutes": args.minutes,
        "target_concurrent_sessions": args.sessions,
        "expected_session_s": round(session_s, 1),
        "arrival_rate_per_s": round(rate, 3),
        "sessions_planned": profile.sessions,
        "pipeline_args": pipeline_args,
        "sample_s": args.sample_s,
        "profile": asdict(profile),
    }
    report: dict[str, Any] = report_head("bench.soak", args.argv, settings)
    DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="soak-stack-", dir=str(DEFAULT_STATE_DIR)))
    stack = LocalStack(state_dir=state_dir, bq_venv=ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")).start()
    proc = None
    try:
        env = stack.apply_env()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        load_pack().seed(firestore_client(stack.project), args.customers)
        command = pipeline_command(stack.bigquery_endpoint, args.backend, pipeline_args)
        system = System("pipeline", INBOUND_TOPIC, REPLY_TOPIC, command)
        proc = PipelineProcess(system.command, env, stack.log_dir / "pipeline-soak.log").start()
        assert proc.proc is not None
        pgid = proc.proc.pid
        warm_s = warm_up(stack.project, system, proc, args.warmup_timeout_s)
        print(f"pipeline ({args.backend}) answered its warm-up message in {warm_s:.1f} s", file=sys.stderr)
        prefix = f"soak{uuid.uuid4().hex[:6]}"
        player = LoadPlayer(
            stack.project,
            plan_load(profile, prefix),
            inbound_topic=INBOUND_TOPIC,
            reply_topic=REPLY_TOPIC,
            profile=profile,
            label="soak",
            progress=False,
        )
        outcome: dict[str, PlayResult] = {}
        player_thread = threading.Thread(target=lambda: outcome.setdefault("result", player.run()), daemon=True)
        t0 = time.monotonic()
        player_thread.start()
        sampler = Sampler(player, pgid, ClosedSessions(stack.project, stack.bigquery_endpoint, prefix), t0)
        print(
            f"soak: {profile.sessions} sessions over {args.minutes:g} min (~{args.sessions} in conversation at once, "
            f"{rate:.2f} arrivals/s), sampling every {args.sample_s:g} s\n{HEADER}",
            file=sys.stderr,
        )
        print(row(sampler.take()), file=sys.stderr)
        load_end_s: float | None = None
        drain_until: float | None = None
        while True:
            time.sleep(args.sample_s)
            print(row(sampler.take()), file=sys.stderr)
            if not proc.alive():
                print("the pipeline died:\n" + proc.log_tail(), file=sys.stderr)
                break
            if load_end_s is None and not player_thread.is_alive():
                load_end_s = time.monotonic() - t0
                # Keep watching one idle timeout more: the sessions close and their state goes.
                drain_until = time.monotonic() + args.idle_timeout_s + 2 * args.sample_s
            if drain_until is not None and time.monotonic() > drain_until:
                break
        player_thread.join(timeout=60)
        report["pipeline_alive_at_end"] = proc.alive()
    finally:
        if proc is not None:
            proc.stop()
        stack.stop()
        if not args.keep_stack_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
    report["finished_at"] = datetime.now(UTC).isoformat()
    report["warmup_s"] = round(warm_s, 1)
    report["samples"] = [asdict(s) for s in sampler.samples]
    report["summary"] = summarize(sampler.samples, outcome.get("result"), args.minutes * 60, load_end_s)
    return report


def summarize(
    samples: list[Sample], result: PlayResult | None, arrivals_s: float, load_end_s: float | None
) -> dict[str, Any]:
    """RSS growth over the second half of the arrivals, the run's latency, and the delivery invariant."""
    half = [(s.t_s, s.rss_mb) for s in samples if arrivals_s / 2 <= s.t_s <= arrivals_s and s.rss_mb is not None]
    rss = [s.rss_mb for s in samples if s.rss_mb is not None]
    out: dict[str, Any] = {
        "rss_mb_first": rss[0] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
        "rss_slope_mb_per_min_second_half": slope_per_min(half),
        "rss_slope_samples": len(half),
        "load_end_s": None if load_end_s is None else round(load_end_s, 1),
        "open_sessions_peak": max((s.sessions_open_in_pipeline or 0 for s in samples), default=0),
        "open_sessions_last": samples[-1].sessions_open_in_pipeline if samples else None,
    }
    if result is None:
        out["load"] = "did not finish"
        return out
    by_turn: dict[str, tuple[Any, float]] = {}
    for reply, received in result.replies:
        by_turn.setdefault(reply.turn_id, (reply, received))
    latency = [
        (received - max(result.sent_at[m] for m in reply.answers if m in result.sent_at)) * 1000
        for reply, received in by_turn.values()
        if any(m in result.sent_at for m in reply.answers)
    ]
    verdict = check_delivery(result.accepted, [r for r, _ in result.replies], [])
    span = max(1e-3, result.last_reply_at - result.first_sent_at)
    out.update(
        sessions=result.sessions,
        messages=result.messages,
        turns_answered=len(by_turn),
        user_turns_lost=result.user_turns_lost,
        turns_per_s=round(len(by_turn) / span, 2),
        last_message_to_reply_ms=summary(latency, 0),
        duplicate_reply_deliveries=verdict.duplicate_deliveries,
        invariant_violations=len(verdict.violations),
        invariant_examples=verdict.violations[:5],
    )
    return out


def lines(report: dict[str, Any]) -> Iterator[str]:
    s = report["summary"]
    yield HEADER
    for sample in report["samples"]:
        yield row(Sample(**sample))
    yield (
        f"RSS {s['rss_mb_first']} -> max {s['rss_mb_max']} -> last {s['rss_mb_last']} MB; slope over the second half "
        f"of the load: {s['rss_slope_mb_per_min_second_half']} MB/min ({s['rss_slope_samples']} samples)"
    )
    if "turns_answered" in s:
        lat = s["last_message_to_reply_ms"]
        yield (
            f"{s['sessions']} sessions, {s['turns_answered']} turns ({s['turns_per_s']}/s), "
            f"lost {s['user_turns_lost']}, "
            f"latency p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms, "
            f"invariant violations {s['invariant_violations']}, open sessions peak {s['open_sessions_peak']} "
            f"last {s['open_sessions_last']}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=15.0, help="how long new sessions keep arriving")
    p.add_argument("--sessions", type=int, default=200, help="sessions in conversation at once (about)")
    p.add_argument("--backend", default="instant", choices=registry.names(hardware=registry.Hardware.CPU))
    p.add_argument("--idle-timeout-s", "--idle_timeout_s", dest="idle_timeout_s", type=float, default=60.0)
    p.add_argument("--quiet-window-s", type=float, default=0.5)
    p.add_argument("--max-hold-s", type=float, default=3.0)
    p.add_argument("--model-max-tokens", type=int, default=24)
    p.add_argument("--min-turns", type=int, default=2)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--min-think-s", type=float, default=10.0)
    p.add_argument("--max-think-s", type=float, default=50.0)
    p.add_argument("--burstiness", type=float, default=0.3)
    p.add_argument(
        "--expected-overhead-s", type=float, default=2.0, help="reply latency beyond the quiet window, for the rate"
    )
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--turn-timeout-s", type=float, default=120.0, help="a turn unanswered this long counts as lost")
    p.add_argument("--sample-s", type=float, default=15.0)
    p.add_argument("--warmup-timeout-s", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep-stack-dir", action="store_true", help="keep the emulators' and the pipeline's logs")
    args = p.parse_args(argv)
    args.argv = argv
    report = run_soak(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print("\n".join(lines(report)))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
