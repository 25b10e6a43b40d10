"""Load bench: many concurrent customers against the pipeline and against a no-Beam baseline, same run.

    .venv/bin/python -m bench.load                  # instant at 10/100/1000 sessions, smollm2 at 10
    .venv/bin/python -m bench.load --quick          # a smoke run (instant, 10 and 50 sessions)
    .venv/bin/python -m bench.load --runs instant:10,100 smollm2:5 --quiet-window-s 0.5
    .venv/bin/python -m bench.load --runs instant:10,100 --packs shop,telco   # each size for each pack

By default it starts its own local stack (emulators in a throwaway state dir), seeds it, and for each
backend starts the pipeline (``python -m pipeline.main``, as ``stack/service.py`` does), warms it up,
plays every load size against it, stops it, then does the same with the baseline
(``python -m bench.baseline``: the same I/O without a Beam runner, on topics of its own). Both get
the same load, message for message (one seeded plan per size), and the same session settings. Each
size is played ``--rounds`` times (default 2), the order alternating (pipeline-baseline, then
baseline-pipeline): the phase right after another system's runs on emulators that system just loaded,
so the ratios pool each system's rounds and list each round's p50 ratio beside. Each phase starts with
the subscriptions that readers outside the service hold (the chat frontend's replies, the hand-offs, the
dead letters) emptied, as readers that keep up would leave them: nobody reads them here, and the
emulator's publishes slow down as their backlog grows (``stack.resources.empty_subscriptions``).

The parts: ``bench.load_plan`` (the load model and its seeded plan), ``bench.load_player`` (playing a
plan in a closed loop and following the replies), ``bench.load_figures`` (latency split, throughput,
ratios, the table), ``bench.probes`` (CPU, RSS, the machine); this module runs the phases.

Figures, per (system, backend, size): turns and messages per second over the run; latency per
answered turn; the process's CPU seconds per turn and its peak RSS. Ratios pipeline / baseline for
throughput, latency and CPU. Written to ``artifacts/bench_load.json`` with the machine (nproc, free,
load average) and the command.

Packs (``--packs shop,telco``): every size is played for each pack, the pipeline started with
``--pack NAME`` (the baseline with its ``--pack``), the stack seeded through each pack's own seed hook.
Each pack's players draw that pack's customers (numbered up from its example customer id, as its seed
numbers them) and send the example requests of its route tables, so a tool-calling backend reaches its
tools. The CPU of the processes a system starts (the telco pack's MCP server over stdio) is counted per
turn beside the process's own, and ``pack_differences`` gives each pack's figures less the first's at
the same size: with a tool-calling backend, what the MCP hop costs per turn. Without ``--packs``, the
shop's ids and random prose, as always.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load_figures import eval_rows, figures, one_line, pool, ratios, table
from bench.load_plan import LoadProfile, PlannedMessage, PlannedSession, plan_load
from bench.load_player import LoadPlayer
from bench.probes import children_cpu_s, loadavg, proc_cpu_s, proc_peak_rss_mb, report_head

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
DEFAULT_OUT = ARTIFACTS / "bench_load.json"

BASELINE_INBOUND_TOPIC = "bench-baseline-inbound"
BASELINE_SUBSCRIPTION = "bench-baseline-inbound-sub"
BASELINE_REPLY_TOPIC = "bench-baseline-replies"

Waits = dict[tuple[str, str, int, str], list[float]]  # (system, backend, sessions, pack) -> every round's waits


# ---------------------------------------------------------------------------
# Processes under test
# ---------------------------------------------------------------------------


@dataclass
class System:
    """One system under test: the pipeline or the baseline, with its topics."""

    name: str  # "pipeline" | "baseline"
    inbound_topic: str
    reply_topic: str
    command: list[str]


@dataclass(frozen=True)
class PackLoad:
    """One pack's share of the load: who its players are and what they say (empty: the plan's defaults)."""

    name: str
    customer_ids: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def warm_customer(self) -> str:
        return self.customer_ids[0] if self.customer_ids else "C0001"


def numbered_ids(example: str, count: int) -> list[str]:
    """``count`` ids numbered up from ``example``'s trailing number, its width kept: C0001 -> C0001, C0002, ..."""
    head = example.rstrip("0123456789")
    digits = example[len(head) :]
    if not digits:
        raise ValueError(f"customer id example {example!r} ends in no number to count up from")
    return [f"{head}{int(digits) + i:0{len(digits)}d}" for i in range(count)]


def route_examples(pack: str) -> tuple[str, ...]:
    """Every example request of the pack's route tables (requests its routes answer), in file order."""
    from agents.route_table import load_routes
    from tools.packs import load_pack

    found = load_pack(pack)
    texts: list[str] = []
    for path in sorted((found.root / "routes").glob("*.yaml")):
        table = load_routes(path.stem, pack)
        if table is not None:
            texts += [e for r in table.routes.values() for e in r.examples]
    return tuple(dict.fromkeys(texts))


def seed_pack(client: Any, pack: str, customers: int, own_load: bool) -> tuple[PackLoad, int]:
    """Seed ``pack``'s first customers through its seed hook; returns its load and the customers seeded.

    ``own_load``: the players draw the pack's customer ids and its route examples; otherwise the plan's defaults
    (the shop's ids and prose, as before packs were compared).
    """
    from tools.packs import load_pack

    found = load_pack(pack)
    count = min(customers, found.default_customers) if found.default_customers else customers
    if found.seed is None:
        raise ValueError(f"pack {pack} declares no seed: nothing for the load's customers to be")
    seeded = found.seed(client, count)
    seeded_n = seeded if isinstance(seeded, int) else getattr(seeded, "customers", count)
    if not own_load:
        return PackLoad(pack), seeded_n
    ids = numbered_ids(found.customer_id.example, seeded_n)
    if not all(found.customer_id.regex.fullmatch(i) for i in ids):
        raise ValueError(f"pack {pack}: ids numbered up from {found.customer_id.example!r} are not its customer ids")
    return PackLoad(pack, tuple(ids), route_examples(pack)), seeded_n


def systems(bq_endpoint: str, backend: str, args: argparse.Namespace, pack: str) -> list[System]:
    from pipeline.options import INBOUND_TOPIC, REPLY_TOPIC
    from stack.service import pipeline_command

    session_args = [
        f"--quiet_window_s={args.quiet_window_s}",
        f"--max_hold_s={args.max_hold_s}",
        f"--model_max_tokens={args.model_max_tokens}",
        "--model_threads=1",
        f"--pack={pack}",
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
            f"--pack={pack}",
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


def warm_up(project: str, system: System, proc: Any, timeout_s: float, customer: str = "C0001") -> float:
    """One message through the system (the model loads on the first call); returns seconds to its reply."""
    profile = LoadProfile(sessions=1, turns=(1, 1), burstiness=0.0, turn_timeout_s=timeout_s)
    plan = [
        PlannedSession(
            f"warm-{system.name}-{uuid.uuid4().hex[:6]}",
            customer,
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


def parse_runs(items: list[str]) -> list[tuple[str, list[int]]]:
    runs = []
    for item in items:
        backend, _, sizes = item.partition(":")
        if backend not in ("instant", "smollm2") or not sizes:
            raise SystemExit(f"--runs: want BACKEND:N[,N...] with BACKEND instant or smollm2, got {item!r}")
        runs.append((backend, [int(n) for n in sizes.split(",")]))
    return runs


def measure_phase(
    stack: Any,
    env: dict[str, str],
    system: System,
    backend: str,
    n: int,
    run_id: str,
    args: argparse.Namespace,
    pack: PackLoad,
) -> dict[str, Any]:
    """Start ``system``, warm it up, measure its idle CPU, play ``n`` sessions into it, stop it."""
    from stack.resources import OUTSIDE_READERS, empty_subscriptions
    from stack.service import PipelineProcess

    empty_subscriptions(stack.project, OUTSIDE_READERS)
    log_name = f"{system.name}-{pack.name}-{backend}-{n}.log"
    proc = PipelineProcess(system.command, env, stack.log_dir / log_name).start()
    try:
        assert proc.proc is not None
        pid = proc.proc.pid
        warm_s = warm_up(stack.project, system, proc, args.warmup_timeout_s, pack.warm_customer)
        print(f"{system.name} ({backend}) answered its warm-up message in {warm_s:.1f} s", file=sys.stderr)
        # What the process burns doing nothing (polling its subscriptions, the runner's monitor loop).
        idle0, t_idle = proc_cpu_s(pid), time.monotonic()
        time.sleep(args.idle_probe_s)
        idle1 = proc_cpu_s(pid)
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
            customer_ids=pack.customer_ids,
            texts=pack.texts,
        )
        prefix = f"b{run_id}-{system.name[0]}-{pack.name}-{backend}-{n}"
        load_before = loadavg()
        kids0 = children_cpu_s(pid)
        cpu0, t_play = proc_cpu_s(pid), time.monotonic()
        result = LoadPlayer(
            stack.project,
            plan_load(profile, prefix),
            inbound_topic=system.inbound_topic,
            reply_topic=system.reply_topic,
            profile=profile,
            label=f"{system.name} {backend} n={n}",
            progress=not args.no_progress,
        ).run()
        cpu1, play_s = proc_cpu_s(pid), time.monotonic() - t_play
        kids = children_cpu_s(pid) - kids0
        load_after = loadavg()
        rss = proc_peak_rss_mb(pid)
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
    if fig["turns_answered"]:
        # What the processes it started burnt (a pack's MCP server over stdio): part of what a turn costs.
        fig["children_cpu_ms_per_turn"] = round(kids * 1000 / fig["turns_answered"], 2)
        if fig["cpu_ms_per_turn"] is not None:
            fig["cpu_ms_per_turn_with_children"] = round(fig["cpu_ms_per_turn"] + fig["children_cpu_ms_per_turn"], 2)
    fig.update(
        system=system.name,
        pack=pack.name,
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

    runs = parse_runs(args.runs)
    settings = {
        "quiet_window_s": args.quiet_window_s,
        "max_hold_s": args.max_hold_s,
        "model_max_tokens": args.model_max_tokens,
        "model_threads": 1,
        "runner": "BundleBasedDirectRunner (streaming), emulators on the same machine",
    }
    report: dict[str, Any] = {**report_head("bench.load", args.argv, settings), "results": []}
    DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-stack-", dir=str(DEFAULT_STATE_DIR)))
    stack = LocalStack(state_dir=state_dir, bq_venv=ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")).start()
    try:
        env = stack.apply_env()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        ensure_baseline_resources(stack.project)
        client = firestore_client(stack.project)
        loads, seeded = [], {}
        for name in args.packs:
            load, seeded[name] = seed_pack(client, name, args.customers, own_load=args.packs_given)
            loads.append(load)
        report["stack"] = {"startup_s": round(stack.startup_s or 0, 1), "customers": seeded}
        run_id = uuid.uuid4().hex[:6]
        latencies: Waits = {}
        for backend, sizes in runs:
            for n in sizes:
                # One fresh process per phase, pipeline and baseline back to back at each size (and pack): a
                # busy shared machine drifts, and neighbouring phases see the most similar conditions. The
                # phase played second runs on emulators the first one warmed, so the order alternates by
                # round (pipeline-baseline, baseline-pipeline, ...) and each system's rounds are pooled.
                for load in loads:
                    order = systems(stack.bigquery_endpoint, backend, args, load.name)
                    for round_ in range(args.rounds):
                        for position, system in enumerate(order if round_ % 2 == 0 else order[::-1]):
                            fig = measure_phase(stack, env, system, backend, n, f"{run_id}{round_}", args, load)
                            fig.update(round=round_, played=position + 1)
                            key = (system.name, backend, n, load.name)
                            latencies.setdefault(key, []).extend(fig.pop("last_message_to_reply_samples_ms"))
                            report["results"].append(fig)
                            print(one_line(fig), file=sys.stderr)
        report["ratios"] = [
            entry
            for backend, sizes in runs
            for n in sizes
            for name in args.packs
            if (entry := size_ratios(report["results"], latencies, backend, n, name)) is not None
        ]
        first_round = [r for r in report["results"] if r["round"] == 0]
        report["pack_differences"] = pack_differences(first_round, args.packs)
        report["finished_at"] = datetime.now(UTC).isoformat()
    finally:
        stack.stop()
        if not args.keep_stack_dir:
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)
    return report


def size_ratios(
    results: list[dict[str, Any]], latencies: Waits, backend: str, n: int, pack: str
) -> dict[str, Any] | None:
    """Pipeline over baseline at one size: on each system's rounds pooled, and the p50 ratio of each round."""
    rounds: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        if r["backend"] == backend and r["sessions"] == n and r["pack"] == pack:
            rounds.setdefault(r["system"], {})[r["round"]] = r
    if not {"pipeline", "baseline"} <= rounds.keys():
        return None
    pooled = {s: pool(list(rounds[s].values()), latencies[(s, backend, n, pack)]) for s in ("pipeline", "baseline")}
    both = sorted(rounds["pipeline"].keys() & rounds["baseline"].keys())
    per_round = [ratios(rounds["pipeline"][k], rounds["baseline"][k]) for k in both]
    return {
        "backend": backend,
        "pack": pack,
        "sessions": n,
        "rounds": len(both),
        **ratios(pooled["pipeline"], pooled["baseline"]),
        "latency_p50_ratio_per_round": [r["latency_p50_pipeline_over_baseline"] for r in per_round],
    }


def pack_differences(results: list[dict[str, Any]], packs: list[str]) -> list[dict[str, Any]]:
    """Each pack's figures less the first pack's, per system, backend and size (telco less shop: the MCP hop)."""
    out = []
    first = packs[0]
    by = {(r["system"], r["backend"], r["sessions"], r["pack"]): r for r in results}
    for (system, backend, n, pack), r in by.items():
        base = by.get((system, backend, n, first))
        if pack == first or base is None:
            continue

        def less(key: str, a: dict[str, Any] = r, b: dict[str, Any] = base) -> float | None:
            x, y = a.get(key), b.get(key)
            return None if x is None or y is None else round(x - y, 2)

        lat, lat0 = r["latency_ms"]["last_message_to_reply_ms"], base["latency_ms"]["last_message_to_reply_ms"]
        out.append(
            {
                "system": system,
                "backend": backend,
                "sessions": n,
                "pack": pack,
                "less": first,
                "cpu_ms_per_turn": less("cpu_ms_per_turn"),
                "cpu_ms_per_turn_with_children": less("cpu_ms_per_turn_with_children"),
                "latency_p50_ms": None if not lat.get("n") or not lat0.get("n") else round(lat["p50"] - lat0["p50"]),
                "latency_p99_ms": None if not lat.get("n") or not lat0.get("n") else round(lat["p99"] - lat0["p99"]),
                "turns_per_s_ratio": round(r["turns_per_s"] / base["turns_per_s"], 2) if base["turns_per_s"] else None,
            }
        )
    return out


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
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds per size, the systems' order alternating (2: pipeline-baseline, baseline-pipeline); "
        "ratios pool each system's rounds (default: %(default)s)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: instant at 10 and 50 sessions")
    p.add_argument("--arrival-rate", type=float, default=None, help="sessions per second (default: N / ramp)")
    p.add_argument("--ramp-s", type=float, default=5.0)
    p.add_argument("--burstiness", type=float, default=0.3, help="share of turns sent as a burst of 2-3 messages")
    p.add_argument("--min-turns", type=int, default=1)
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--min-chars", type=int, default=20)
    p.add_argument("--max-chars", type=int, default=200)
    p.add_argument(
        "--customers", type=int, default=300, help="customers seeded and drawn from (at most a pack's own default)"
    )
    p.add_argument(
        "--packs",
        default=None,
        help="comma-separated packs, each size played for each (default: shop, with the shop's ids and prose)",
    )
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
        args.runs, args.rounds = ["instant:10,50"], 1
    if args.rounds < 1:
        raise SystemExit("--rounds: at least 1")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.packs_given = args.packs is not None
    args.packs = [s.strip() for s in (args.packs or "shop").split(",") if s.strip()]
    args.argv = argv
    report = run_bench(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print("\n".join(table(report)))
    for r in report.get("ratios", []) + report.get("pack_differences", []):
        print(json.dumps(r))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
