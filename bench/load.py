"""Load bench: many concurrent customers against the pipeline and against a no-Beam baseline, same run.

    .venv/bin/python -m bench.load                  # instant at 10/100/1000 sessions, smollm2 at 10
    .venv/bin/python -m bench.load --quick          # a smoke run (instant, 10 and 50 sessions)
    .venv/bin/python -m bench.load --runs instant:10,100 smollm2:5 --quiet-window-s 0.5

By default it starts its own local stack (emulators in a throwaway state dir), seeds it, and for each
backend starts the pipeline (``python -m pipeline.main``, as ``stack/service.py`` does), warms it up,
plays every load size against it, stops it, then does the same with the baseline
(``python -m bench.baseline``: the same I/O without a Beam runner, on topics of its own). Both get
the same load, message for message (one seeded plan per size), and the same session settings.

Load model (``LoadProfile``): ``sessions`` customers arrive as a Poisson process (``arrival_rate``
sessions/s; default: all within ``ramp_s``), each holds a conversation of ``turns`` turns (uniform in
the range). A turn is one message, or with probability ``burstiness`` a burst of 2..``max_burst``
messages ``burst_gap_s`` apart (people type in several lines); message lengths are uniform in
``chars``. A customer waits for the reply to the whole turn, thinks (``think_s``), and goes on: a
closed loop, so at a given size the offered load adapts to the latency, as real chats do.

Figures, per (system, backend, size): turns and messages per second over the run; latency per
answered turn (one reply) with p50/p90/p99/max: ``last_message_to_reply`` (what the customer waits
after their last line, the quiet window included), ``first_message_to_reply``, and the split
``queue`` (first message sent -> turn released, quiet window included), ``enrich``, ``model``,
``tools`` (from the eval rows in BigQuery; the reply's own timings where a row is missing),
``agent_other`` (reply built minus the four above: prompt, RunInference plumbing, hand-offs between
stages) and ``publish`` (reply built -> received by the customer's subscriber); the process's CPU
seconds per turn and its peak RSS. Ratios pipeline / baseline for throughput, latency and CPU.
Written to ``artifacts/bench_load.json`` with the machine (nproc, free, load average) and the command.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Delivery, Progress, TopicRecorder, check_delivery, summary

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
DEFAULT_OUT = ARTIFACTS / "bench_load.json"

BASELINE_INBOUND_TOPIC = "bench-baseline-inbound"
BASELINE_SUBSCRIPTION = "bench-baseline-inbound-sub"
BASELINE_REPLY_TOPIC = "bench-baseline-replies"

_VOCABULARY = (
    "order delivery refund account password invoice package tracking number charged twice card address shipping "
    "late damaged return label subscription cancel upgrade plan discount code warranty replacement please help "
    "thanks still waiting yesterday today week store app login email support ticket status where is my the a "
    "was not and but for with on to of it this that have has been can you we our your when will arrive"
)
_WORDS = _VOCABULARY.split()


# ---------------------------------------------------------------------------
# The load plan
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProfile:
    sessions: int = 100
    arrival_rate: float | None = None  # new sessions per second (Poisson); None: sessions / ramp_s
    ramp_s: float = 5.0
    burstiness: float = 0.3  # share of turns sent as a burst of several messages
    max_burst: int = 3
    burst_gap_s: tuple[float, float] = (0.1, 0.4)
    turns: tuple[int, int] = (1, 3)  # session length in turns
    chars: tuple[int, int] = (20, 200)  # message length
    think_s: tuple[float, float] = (0.5, 2.0)  # pause after a reply before the next turn
    customers: int = 300  # seeded customers the sessions are drawn from
    seed: int = 7
    turn_timeout_s: float = 300.0  # a turn not answered by then is counted lost and the session goes on

    @property
    def rate(self) -> float:
        return self.arrival_rate if self.arrival_rate else self.sessions / max(self.ramp_s, 1e-3)


@dataclass(frozen=True)
class PlannedMessage:
    message_id: str
    text: str
    gap_s: float  # wait before sending it (0 for a turn's first message)


@dataclass(frozen=True)
class PlannedSession:
    session_id: str
    customer_id: str
    start_s: float  # offset from the run's start
    turns: tuple[tuple[PlannedMessage, ...], ...]
    think_s: tuple[float, ...]  # after each turn's reply


def _text(rng: random.Random, lo: int, hi: int) -> str:
    target = rng.randint(lo, hi)
    words: list[str] = []
    n = 0
    while n < target:
        w = rng.choice(_WORDS)
        words.append(w)
        n += len(w) + 1
    return (" ".join(words)[:target].rstrip() or "hello") + "?"


def plan_load(profile: LoadProfile, prefix: str) -> list[PlannedSession]:
    """A deterministic plan (``profile.seed``): the same texts and timings whatever ``prefix`` is."""
    rng = random.Random(profile.seed)
    out = []
    t = 0.0
    for i in range(profile.sessions):
        if i:
            t += rng.expovariate(profile.rate)
        session_id = f"{prefix}-{i:05d}"
        n_turns = rng.randint(*profile.turns)
        turns = []
        for k in range(n_turns):
            size = rng.randint(2, max(2, profile.max_burst)) if rng.random() < profile.burstiness else 1
            turns.append(
                tuple(
                    PlannedMessage(
                        f"{session_id}-t{k}-m{j}",
                        _text(rng, *profile.chars),
                        0.0 if j == 0 else rng.uniform(*profile.burst_gap_s),
                    )
                    for j in range(size)
                )
            )
        think = tuple(rng.uniform(*profile.think_s) for _ in range(n_turns))
        customer = f"C{rng.randint(1, profile.customers):04d}"
        out.append(PlannedSession(session_id, customer, t, tuple(turns), think))
    return out


# ---------------------------------------------------------------------------
# Playing a plan
# ---------------------------------------------------------------------------


@dataclass
class _Live:
    plan: PlannedSession
    turn: int = 0
    next_message: int = 0
    waiting: set[str] = field(default_factory=set)
    turn_sent_at: float = 0.0
    done: bool = False


@dataclass
class PlayResult:
    label: str
    sessions: int
    user_turns: int
    user_turns_answered: int
    user_turns_lost: int
    messages: int
    started_at: float
    first_sent_at: float
    last_reply_at: float
    sent_at: dict[str, float]
    accepted: dict[str, str]  # message id -> session id
    replies: list[tuple[Any, float]]  # (AgentReply, received_at)
    publish_errors: int


class LoadPlayer:
    """Plays a plan into ``inbound_topic`` and follows the replies on ``reply_topic``.

    One scheduler thread publishes (non-blocking publish futures); the reply subscriber's callback
    marks messages answered and schedules the session's next turn. No thread per customer, so a
    thousand sessions cost a heap, not a thousand threads.
    """

    def __init__(
        self,
        project: str,
        plan: list[PlannedSession],
        *,
        inbound_topic: str,
        reply_topic: str,
        profile: LoadProfile,
        label: str,
        progress: bool = True,
    ) -> None:
        from google.cloud import pubsub_v1

        self.project, self.plan, self.profile, self.label = project, plan, profile, label
        self._publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.002)
        )
        self._topic = self._publisher.topic_path(project, inbound_topic)
        self._reply_topic = reply_topic
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int]] = []  # (due monotonic, seq, session index)
        self._seq = 0
        self._live = [_Live(p) for p in plan]
        self._owner: dict[str, int] = {}  # message id -> session index
        self.sent_at: dict[str, float] = {}
        self._replies: list[tuple[Any, float]] = []
        self._answered: set[str] = set()
        self._lost = 0
        self._turns_done = 0
        self._publish_errors = 0
        self._futures: list[Any] = []
        self._total_turns = sum(len(p.turns) for p in plan)
        self._show = progress

    # -- scheduling ----------------------------------------------------------------------------------

    def _push(self, due: float, index: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, index))
        self._cond.notify()

    def _on_reply(self, delivery: Delivery) -> None:
        from contract.messages import ContractError, parse_reply

        try:
            reply = parse_reply(delivery.data)
        except ContractError:
            return
        with self._cond:
            self._replies.append((reply, delivery.received_at))
            for mid in reply.answers:
                self._answered.add(mid)
                index = self._owner.get(mid)
                if index is None:
                    continue
                live = self._live[index]
                live.waiting.discard(mid)
                if not live.done and not live.waiting and live.next_message >= len(live.plan.turns[live.turn]):
                    self._turn_finished(index, time.monotonic())

    def _turn_finished(self, index: int, now: float, lost: bool = False) -> None:
        live = self._live[index]
        self._turns_done += 1
        self._lost += int(lost)
        think = live.plan.think_s[live.turn]
        live.turn += 1
        live.next_message = 0
        live.waiting = set()
        if live.turn >= len(live.plan.turns):
            live.done = True
        else:
            self._push(now + think, index)

    def _send_next(self, index: int, now: float) -> None:
        from contract.messages import InboundMessage

        live = self._live[index]
        msg = live.plan.turns[live.turn][live.next_message]
        wall = time.time()
        inbound = InboundMessage(
            session_id=live.plan.session_id,
            customer_id=live.plan.customer_id,
            message_id=msg.message_id,
            text=msg.text,
            sent_at=datetime.fromtimestamp(wall, UTC),
        )
        self._owner[msg.message_id] = index
        self.sent_at[msg.message_id] = wall
        if live.next_message == 0:
            live.turn_sent_at = now
        live.waiting.add(msg.message_id)
        live.next_message += 1
        self._futures.append(self._publisher.publish(self._topic, inbound.to_bytes(), session_id=inbound.session_id))
        turn = live.plan.turns[live.turn]
        if live.next_message < len(turn):
            self._push(now + turn[live.next_message].gap_s, index)

    def snapshot(self) -> tuple[list[tuple[Any, float]], dict[str, float], int, int]:
        """Replies so far, send times, sessions started and finished: for watching ``run`` from another thread."""
        with self._cond:
            started = sum(1 for live in self._live if live.turn or live.next_message)
            finished = sum(1 for live in self._live if live.done)
            return list(self._replies), dict(self.sent_at), started, finished

    def run(self) -> PlayResult:
        recorder = TopicRecorder(
            self.project, self._reply_topic, ordering=True, prefix="bench", on_delivery=self._on_reply
        )
        bar = Progress(self._total_turns, self.label, enabled=self._show)
        started_mono, started = time.monotonic(), time.time()
        first_sent = 0.0
        last_scan = started_mono
        try:
            with self._cond:
                for i, p in enumerate(self.plan):
                    self._push(started_mono + p.start_s, i)
            while True:
                with self._cond:
                    now = time.monotonic()
                    while self._heap and self._heap[0][0] <= now:
                        _, _, index = heapq.heappop(self._heap)
                        if not first_sent:
                            first_sent = time.time()
                        self._send_next(index, now)
                    if now - last_scan > 1.0:  # turns that never got their reply
                        last_scan = now
                        for i, live in enumerate(self._live):
                            if (
                                not live.done
                                and live.waiting
                                and live.next_message >= len(live.plan.turns[live.turn])
                                and now - live.turn_sent_at > self.profile.turn_timeout_s
                            ):
                                self._turn_finished(i, now, lost=True)
                    if self._turns_done >= self._total_turns:
                        break
                    wait = min(0.2, self._heap[0][0] - now) if self._heap else 0.2
                    self._cond.wait(max(0.0, wait))
                    done, lost, replies = self._turns_done, self._lost, len(self._replies)
                bar.update(done, f"replies {replies} lost {lost}")
            bar.update(self._turns_done)
        finally:
            bar.close()
            for f in self._futures:
                try:
                    f.result(timeout=30)
                except Exception:  # noqa: BLE001 - counted and reported, the run goes on
                    self._publish_errors += 1
            time.sleep(0.5)  # late duplicates, if any, still land in the record
            recorder.close()
            self._publisher.stop()
        with self._cond:
            replies = list(self._replies)
        last_reply = max((t for _, t in replies), default=time.time())
        accepted = {m.message_id: p.session_id for p in self.plan for turn in p.turns for m in turn}
        sent = dict(self.sent_at)
        return PlayResult(
            label=self.label,
            sessions=len(self.plan),
            user_turns=self._total_turns,
            user_turns_answered=self._total_turns - self._lost,
            user_turns_lost=self._lost,
            messages=len(sent),
            started_at=started,
            first_sent_at=first_sent or started,
            last_reply_at=last_reply,
            sent_at=sent,
            accepted={m: s for m, s in accepted.items() if m in sent},
            replies=replies,
            publish_errors=self._publish_errors,
        )


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def eval_rows(project: str, endpoint: str, prefix: str, want: int, timeout_s: float = 60.0) -> dict[str, dict]:
    """Eval rows of the sessions starting with ``prefix``, waiting until ``want`` are there (or the timeout)."""
    from google.cloud import bigquery

    from contract.eval_rows import TURNS_TABLE
    from pipeline.options import EVAL_DATASET
    from stack.clients import bigquery_client

    bq = bigquery_client(project, endpoint)
    sql = (
        "SELECT turn_id, queue_ms, enrich_ms, model_ms, tools_ms, total_ms, kind, flags "
        f"FROM `{project}.{EVAL_DATASET}.{TURNS_TABLE}` WHERE STARTS_WITH(session_id, @prefix)"
    )
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("prefix", "STRING", prefix)])
    deadline = time.monotonic() + timeout_s
    rows: dict[str, dict] = {}
    while True:
        rows = {r["turn_id"]: dict(r) for r in bq.query(sql, job_config=config).result()}
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


def figures(result: PlayResult, rows: dict[str, dict], cpu_s: float | None, rss_mb: float | None) -> dict[str, Any]:
    """Throughput and latency figures of one played plan."""
    by_turn: dict[str, tuple[Any, float]] = {}
    for reply, received in result.replies:
        by_turn.setdefault(reply.turn_id, (reply, received))  # first delivery: what the customer saw
    verdict = check_delivery(result.accepted, [r for r, _ in result.replies], [])
    series: dict[str, list[float]] = {
        k: []
        for k in (
            "last_message_to_reply_ms",
            "first_message_to_reply_ms",
            "queue_ms",
            "enrich_ms",
            "model_ms",
            "tools_ms",
            "agent_other_ms",
            "publish_ms",
        )
    }
    from_rows = 0
    for turn_id, (reply, received) in by_turn.items():
        sent = [result.sent_at[m] for m in reply.answers if m in result.sent_at]
        if not sent:
            continue
        first, last = min(sent), max(sent)
        row = rows.get(turn_id)
        t = row if row is not None else reply.timings.model_dump()
        from_rows += row is not None
        series["last_message_to_reply_ms"].append((received - last) * 1000)
        series["first_message_to_reply_ms"].append((received - first) * 1000)
        for k in ("queue_ms", "enrich_ms", "model_ms", "tools_ms"):
            series[k].append(float(t[k] or 0.0))
        total = float(t["total_ms"] or 0.0)
        series["agent_other_ms"].append(
            max(0.0, total - sum(float(t[k] or 0.0) for k in ("queue_ms", "enrich_ms", "model_ms", "tools_ms")))
        )
        series["publish_ms"].append(max(0.0, (received - first) * 1000 - total))
    span = max(1e-3, result.last_reply_at - result.first_sent_at)
    turns = len(by_turn)
    return {
        "sessions": result.sessions,
        "user_turns": result.user_turns,
        "user_turns_lost": result.user_turns_lost,
        "messages": result.messages,
        "turns_answered": turns,
        "eval_rows_found": from_rows,
        "duplicate_reply_deliveries": verdict.duplicate_deliveries,
        "invariant_violations": verdict.violations[:10],
        "publish_errors": result.publish_errors,
        "seconds": round(span, 2),
        "turns_per_s": round(turns / span, 2),
        "messages_per_s": round(result.messages / span, 2),
        "latency_ms": {k: summary(v) for k, v in series.items()},
        "cpu_s": None if cpu_s is None else round(cpu_s, 2),
        "cpu_ms_per_turn": None if cpu_s is None or not turns else round(cpu_s * 1000 / turns, 2),
        "peak_rss_mb": rss_mb,
    }


# ---------------------------------------------------------------------------
# Processes under test
# ---------------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime


def _proc_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@dataclass
class System:
    """One system under test: the pipeline or the baseline, with its topics."""

    name: str  # "pipeline" | "baseline"
    inbound_topic: str
    reply_topic: str
    command: list[str]


def systems(bq_endpoint: str, backend: str, args: argparse.Namespace) -> list[System]:
    from pipeline.options import INBOUND_TOPIC, REPLY_TOPIC
    from stack.service import pipeline_command

    session_args = [
        f"--quiet_window_s={args.quiet_window_s}",
        f"--max_hold_s={args.max_hold_s}",
        f"--model_max_tokens={args.model_max_tokens}",
        "--model_threads=1",
    ]
    pipeline = System("pipeline", INBOUND_TOPIC, REPLY_TOPIC, pipeline_command(bq_endpoint, backend, session_args))
    baseline = System(
        "baseline",
        BASELINE_INBOUND_TOPIC,
        BASELINE_REPLY_TOPIC,
        [
            sys.executable,
            "-m",
            "bench.baseline",
            f"--subscription={BASELINE_SUBSCRIPTION}",
            f"--reply-topic={BASELINE_REPLY_TOPIC}",
            f"--bigquery-endpoint={bq_endpoint}",
            f"--backend={backend}",
            f"--quiet-window-s={args.quiet_window_s}",
            f"--max-hold-s={args.max_hold_s}",
            f"--model-max-tokens={args.model_max_tokens}",
            "--model-threads=1",
        ],
    )
    return [s for s in (pipeline, baseline) if s.name in args.systems]


def ensure_baseline_resources(project: str) -> None:
    from stack.clients import publisher_client, subscriber_client
    from stack.resources import SubscriptionSpec, ensure_subscription, ensure_topic

    publisher = publisher_client()
    for topic in (BASELINE_INBOUND_TOPIC, BASELINE_REPLY_TOPIC):
        ensure_topic(publisher, project, topic)
    with subscriber_client() as subscriber:
        ensure_subscription(subscriber, project, SubscriptionSpec(BASELINE_SUBSCRIPTION, BASELINE_INBOUND_TOPIC))


def warm_up(project: str, system: System, proc: Any, timeout_s: float) -> float:
    """One message through the system (the model loads on the first call); returns seconds to its reply."""
    profile = LoadProfile(sessions=1, turns=(1, 1), burstiness=0.0, turn_timeout_s=timeout_s)
    plan = [
        PlannedSession(
            f"warm-{system.name}-{uuid.uuid4().hex[:6]}",
            "C0001",
            0.0,
            ((PlannedMessage(f"warm-{uuid.uuid4().hex[:6]}", "hello, where is my order?", 0.0),),),
            (0.0,),
        )
    ]
    t0 = time.monotonic()
    player = LoadPlayer(
        project,
        plan,
        inbound_topic=system.inbound_topic,
        reply_topic=system.reply_topic,
        profile=profile,
        label=f"warm-up {system.name}",
        progress=False,
    )
    result = player.run()
    if result.user_turns_lost or not proc.alive():
        raise RuntimeError(f"{system.name} did not answer the warm-up message:\n{proc.log_tail()}")
    return time.monotonic() - t0


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    import apache_beam

    return {
        "nproc": sh("nproc"),
        "cpu_model": cpu_model,
        "free_m": sh("free -m"),
        "loadavg": sh("cat /proc/loadavg"),
        "python": platform.python_version(),
        "apache_beam": apache_beam.__version__,
        "platform": platform.platform(),
    }


def parse_runs(items: list[str]) -> list[tuple[str, list[int]]]:
    runs = []
    for item in items:
        backend, _, sizes = item.partition(":")
        if backend not in ("instant", "smollm2") or not sizes:
            raise SystemExit(f"--runs: want BACKEND:N[,N...] with BACKEND instant or smollm2, got {item!r}")
        runs.append((backend, [int(n) for n in sizes.split(",")]))
    return runs


def ratios(pipeline: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    lat_p, lat_b = pipeline["latency_ms"], baseline["latency_ms"]
    key = "last_message_to_reply_ms"
    return {
        "throughput_baseline_over_pipeline": div(baseline["turns_per_s"], pipeline["turns_per_s"]),
        "latency_p50_pipeline_over_baseline": div(lat_p[key].get("p50"), lat_b[key].get("p50")),
        "latency_p99_pipeline_over_baseline": div(lat_p[key].get("p99"), lat_b[key].get("p99")),
        # The quiet window is the same deliberate wait in both: compare what is left.
        "latency_p50_beyond_quiet_window_ratio": div(
            (lat_p[key].get("p50") or 0) - pipeline["quiet_window_ms"],
            (lat_b[key].get("p50") or 0) - baseline["quiet_window_ms"],
        ),
        "cpu_per_turn_pipeline_over_baseline": div(pipeline["cpu_ms_per_turn"], baseline["cpu_ms_per_turn"]),
        "cpu_per_turn_net_of_idle_pipeline_over_baseline": div(
            pipeline.get("cpu_ms_per_turn_net_of_idle"), baseline.get("cpu_ms_per_turn_net_of_idle")
        ),
    }


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def measure_phase(
    stack: Any, env: dict[str, str], system: System, backend: str, n: int, run_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Start ``system``, warm it up, measure its idle CPU, play ``n`` sessions into it, stop it."""
    from stack.service import PipelineProcess

    proc = PipelineProcess(system.command, env, stack.log_dir / f"{system.name}-{backend}-{n}.log").start()
    try:
        assert proc.proc is not None
        pid = proc.proc.pid
        warm_s = warm_up(stack.project, system, proc, args.warmup_timeout_s)
        print(f"{system.name} ({backend}) answered its warm-up message in {warm_s:.1f} s", file=sys.stderr)
        # What the process burns doing nothing (polling its subscriptions, the runner's monitor loop).
        idle0, t_idle = _proc_cpu_s(pid), time.monotonic()
        time.sleep(args.idle_probe_s)
        idle1 = _proc_cpu_s(pid)
        idle_cores = None if idle0 is None or idle1 is None else (idle1 - idle0) / (time.monotonic() - t_idle)
        profile = LoadProfile(
            sessions=n,
            arrival_rate=args.arrival_rate,
            ramp_s=args.ramp_s,
            burstiness=args.burstiness,
            turns=(args.min_turns, args.max_turns),
            chars=(args.min_chars, args.max_chars),
            customers=args.customers,
            seed=args.seed,
        )
        prefix = f"b{run_id}-{system.name[0]}-{backend}-{n}"
        load_before = _loadavg()
        cpu0, t_play = _proc_cpu_s(pid), time.monotonic()
        result = LoadPlayer(
            stack.project,
            plan_load(profile, prefix),
            inbound_topic=system.inbound_topic,
            reply_topic=system.reply_topic,
            profile=profile,
            label=f"{system.name} {backend} n={n}",
            progress=not args.no_progress,
        ).run()
        cpu1, play_s = _proc_cpu_s(pid), time.monotonic() - t_play
        load_after = _loadavg()
        rss = _proc_hwm_mb(pid)
        alive = proc.alive()
    finally:
        proc.stop()
    rows = eval_rows(stack.project, stack.bigquery_endpoint, prefix, len(result.replies))
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    fig = figures(result, rows, cpu, rss)
    if cpu is not None and idle_cores is not None and fig["turns_answered"]:
        # Take out what the process would have burnt idling for as long: the work the turns cost.
        net = max(0.0, cpu - idle_cores * play_s)
        fig["cpu_ms_per_turn_net_of_idle"] = round(net * 1000 / fig["turns_answered"], 2)
    fig.update(
        system=system.name,
        backend=backend,
        quiet_window_ms=args.quiet_window_s * 1000,
        warmup_s=round(warm_s, 1),
        idle_cpu_cores=None if idle_cores is None else round(idle_cores, 3),
        loadavg_before=load_before,
        loadavg_after=load_after,
        process_alive_at_end=alive,
        command=" ".join(shlex.quote(c) for c in system.command),
        profile=asdict(profile),
    )
    time.sleep(args.settle_s)
    return fig


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from stack.clients import firestore_client
    from stack.emulators import DEFAULT_STATE_DIR, LocalStack, ensure_bq_venv
    from stack.resources import ensure_resources
    from stack.seed import seed_firestore

    runs = parse_runs(args.runs)
    report: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "bench.load", *args.argv]),
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "settings": {
            "quiet_window_s": args.quiet_window_s,
            "max_hold_s": args.max_hold_s,
            "model_max_tokens": args.model_max_tokens,
            "model_threads": 1,
            "runner": "BundleBasedDirectRunner (streaming), emulators on the same machine",
        },
        "results": [],
    }
    DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-stack-", dir=str(DEFAULT_STATE_DIR)))
    stack = LocalStack(state_dir=state_dir, bq_venv=ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")).start()
    try:
        env = stack.apply_env()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        ensure_baseline_resources(stack.project)
        seeded = seed_firestore(firestore_client(stack.project), args.customers)
        report["stack"] = {"startup_s": round(stack.startup_s or 0, 1), "customers": seeded.customers}
        run_id = uuid.uuid4().hex[:6]
        for backend, sizes in runs:
            for n in sizes:
                # One fresh process per phase, pipeline and baseline back to back at each size: a busy
                # shared machine drifts, and neighbouring phases see the most similar conditions.
                for system in systems(stack.bigquery_endpoint, backend, args):
                    fig = measure_phase(stack, env, system, backend, n, run_id, args)
                    report["results"].append(fig)
                    print(one_line(fig), file=sys.stderr)
        report["ratios"] = []
        for backend, sizes in runs:
            for n in sizes:
                pair = {r["system"]: r for r in report["results"] if r["backend"] == backend and r["sessions"] == n}
                if "pipeline" in pair and "baseline" in pair:
                    report["ratios"].append(
                        {"backend": backend, "sessions": n, **ratios(pair["pipeline"], pair["baseline"])}
                    )
        report["finished_at"] = datetime.now(UTC).isoformat()
    finally:
        stack.stop()
        if not args.keep_stack_dir:
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)
    return report


def one_line(fig: dict[str, Any]) -> str:
    lat = fig["latency_ms"]["last_message_to_reply_ms"]
    return (
        f"{fig['system']:>8} {fig['backend']:>7} n={fig['sessions']:<5} turns={fig['turns_answered']:<5} "
        f"{fig['turns_per_s']:>7.2f} turns/s  last msg->reply p50 {lat.get('p50', 0):>7.0f} "
        f"p99 {lat.get('p99', 0):>7.0f} max {lat.get('max', 0):>7.0f} ms  cpu/turn {fig['cpu_ms_per_turn']} ms  "
        f"lost {fig['user_turns_lost']} violations {len(fig['invariant_violations'])}"
    )


def table(report: dict[str, Any]) -> Iterator[str]:
    yield "| backend | sessions | system | turns | turns/s | last msg→reply p50 / p90 / p99 / max (ms) | " \
          "queue p50 | enrich p50 | model p50 | publish p50 | CPU ms/turn |"  # fmt: skip
    yield "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"
    for r in report["results"]:
        lat = r["latency_ms"]

        def p(k: str, q: str = "p50", lat: dict[str, Any] = lat) -> str:
            return f"{lat[k].get(q, 0):.0f}"

        e2e = "last_message_to_reply_ms"
        yield (
            f"| {r['backend']} | {r['sessions']} | {r['system']} | {r['turns_answered']} | {r['turns_per_s']:.1f} | "
            f"{p(e2e)} / {p(e2e, 'p90')} / {p(e2e, 'p99')} / {p(e2e, 'max')} | {p('queue_ms')} | "
            f"{p('enrich_ms')} | {p('model_ms')} | {p('publish_ms')} | {r['cpu_ms_per_turn']} |"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs",
        nargs="+",
        default=["instant:10,100,1000", "smollm2:10"],
        help="BACKEND:N,N,... load sizes (concurrent sessions) per backend (default: %(default)s)",
    )
    p.add_argument("--systems", default="pipeline,baseline", help="which systems to run (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke run: instant at 10 and 50 sessions")
    p.add_argument("--arrival-rate", type=float, default=None, help="sessions per second (default: N / ramp)")
    p.add_argument("--ramp-s", type=float, default=5.0)
    p.add_argument("--burstiness", type=float, default=0.3, help="share of turns sent as a burst of 2-3 messages")
    p.add_argument("--min-turns", type=int, default=1)
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--min-chars", type=int, default=20)
    p.add_argument("--max-chars", type=int, default=200)
    p.add_argument("--customers", type=int, default=300, help="customers seeded and drawn from")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quiet-window-s", type=float, default=0.5, help="session quiet window, both systems")
    p.add_argument("--max-hold-s", type=float, default=3.0)
    p.add_argument("--model-max-tokens", type=int, default=24)
    p.add_argument("--warmup-timeout-s", type=float, default=300.0)
    p.add_argument("--settle-s", type=float, default=2.0, help="pause between phases")
    p.add_argument("--idle-probe-s", type=float, default=3.0, help="seconds of idle CPU measured after warm-up")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--keep-stack-dir", action="store_true", help="keep the emulators' logs")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = ["instant:10,50"]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.argv = argv
    report = run_bench(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print("\n".join(table(report)))
    for r in report.get("ratios", []):
        print(json.dumps(r))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
