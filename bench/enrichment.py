"""Benchmark: customer-context enrichment per worker, batched vs one at a time, with and without the cache.

Run: ``.venv/bin/python -m bench.enrichment`` (prints a table and the ratios, writes
``artifacts/bench_enrichment.json``). Options: ``--turns 1200``, ``--customers 300``, ``--repeats 3``,
``--quick`` (small, for a smoke run), ``--out PATH``.

What runs: its own Firestore and Bigtable emulators (the real ones, on 127.0.0.1), seeded with the
same ``--customers`` seed customers; then, for each store and each of four handler settings
(batch 1 or ``--batch``, cache off or on), the real ``EnrichCustomerContext`` transform in a Beam
pipeline (in-process FnApiRunner, one worker, ``Create`` of ``--turns`` turns). The turns model chat
sessions: every customer has ``turns / customers`` turns, shuffled (fixed seed) so that a customer's
turns are spread over the run, as a session's turns are. Each setting runs ``--repeats`` times; the
best run's wall time gives the throughput, and the per-turn ``enrich_ms`` (entering the step to the
join, including the wait for the batch) of all runs gives p50/p99. Caveat: in that pipeline a turn read
one at a time enters the step only after the turn before it left, so its ``enrich_ms`` hides the
queueing a burst of turns sees; hence the second part.

Burst latency: the handler called directly, as ``RequestResponseIO`` calls it, on bursts of ``--batch``
turns of distinct customers arriving at once (what one bundle holds under load), cache off: one at a
time turn k waits for the k-1 calls before it; batched every turn waits for the one call. Plus a lone
turn (a burst of one), which batching cannot speed up.

Caveats printed with the figures: the emulators share the machine's CPUs with the pipeline, and a
loopback RPC costs ~1-2 ms where a real Firestore read from a Dataflow worker costs ~5-20 ms, so
the batching gain here is a lower bound on what fewer round trips buy against the real services.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from contract.turn import EnrichedTurn, Turn, UserMessage
from pipeline.enrichment.bigtable import BigtableContextHandler
from pipeline.enrichment.context import NO_CACHE, CachePolicy, clear_caches
from pipeline.enrichment.firestore import FirestoreContextHandler
from pipeline.enrichment.transform import ContextHandler, EnrichCustomerContext
from stack.bigtable import admin_client, seed_bigtable
from stack.clients import firestore_client
from stack.emulators import DEFAULT_PROJECT, bigtable_emulator, firestore_emulator, free_port
from tools.packs import load_pack

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_SINKS: dict[str, list[EnrichedTurn]] = {}


class _Collect(beam.DoFn):
    def __init__(self, token: str) -> None:
        self._token = token

    def process(self, e: EnrichedTurn) -> None:
        _SINKS[self._token].append(e)


@dataclass
class Result:
    store: str
    batch: int
    cache: bool
    turns: int
    best_wall_s: float
    turns_per_s: float
    p50_ms: float
    p99_ms: float
    store_calls: int
    store_rpcs: int
    cache_hits: int
    flagged: int


def workload(turns: int, customers: int, seed: int = 7) -> list[Turn]:
    rng = random.Random(seed)
    seeded = [c.customer_id for c in load_pack().build_customers(customers)]
    ids = [seeded[i % customers] for i in range(turns)]
    rng.shuffle(ids)
    out = []
    for n, cid in enumerate(ids):
        msg = UserMessage(message_id=f"m{n}", text="where is my order?", sent_at=NOW)
        out.append(Turn(f"s-{cid}", cid, n, (msg,), (), 0, NOW))
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def run_once(turns: list[Turn], handler: ContextHandler) -> tuple[float, list[float], dict[str, int]]:
    clear_caches()  # every run starts cold: the cache must earn its hits within the run
    # The sink by its importable name: run as __main__, a pickled DoFn would carry a copy of _SINKS.
    here = importlib.import_module("bench.enrichment")
    token = uuid.uuid4().hex
    here._SINKS[token] = []
    p = beam.Pipeline(runner=FnApiRunner())
    _ = (
        p
        | beam.Create(turns)
        | "EnrichCustomerContext" >> EnrichCustomerContext(handler)
        | beam.ParDo(here._Collect(token))
    )
    t0 = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    wall = time.perf_counter() - t0
    out = here._SINKS.pop(token)
    if len(out) != len(turns):
        raise RuntimeError(f"lost turns: {len(turns)} in, {len(out)} out")
    counters: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace("enrich"))["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.result
    counters["flagged"] = sum(1 for e in out if e.context_flags)
    return wall, [e.enrich_ms for e in out], counters


def measure(store: str, make: Any, turns: list[Turn], batch: int, cache: bool, repeats: int) -> Result:
    walls: list[float] = []
    latencies: list[float] = []
    counters: dict[str, int] = {}
    for _ in range(repeats):
        wall, lat, counters = run_once(turns, make(batch, CachePolicy(ttl_s=300) if cache else NO_CACHE))
        walls.append(wall)
        latencies.extend(lat)
    best = min(walls)
    return Result(
        store=store,
        batch=batch,
        cache=cache,
        turns=len(turns),
        best_wall_s=round(best, 3),
        turns_per_s=round(len(turns) / best, 1),
        p50_ms=round(percentile(latencies, 0.50), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        store_calls=counters.get("store_calls", 0),
        store_rpcs=counters.get("store_rpcs", 0),
        cache_hits=counters.get("cache_hits", 0),
        flagged=counters["flagged"],
    )


def burst_latency(make: Any, turns: list[Turn], burst: int, batched: bool) -> dict[str, float]:
    """Per-turn latency from a burst's arrival, calling the handler as ``RequestResponseIO`` does (no cache).

    A burst of ``burst`` turns arrives at once (one bundle under load). One at a time, turn k waits for
    the k-1 calls before it; batched, every turn of the burst waits for the one call.
    """
    handler = make(burst if batched else 1, NO_CACHE)
    rows = [beam.Row(customer_id=t.customer_id) for t in turns]
    lat: list[float] = []
    with handler:
        for i in range(0, len(rows) - burst + 1, burst):
            chunk = rows[i : i + burst]
            t0 = time.perf_counter()
            if batched:
                handler(chunk)
                lat.extend([(time.perf_counter() - t0) * 1000] * len(chunk))
            else:
                for row in chunk:
                    handler(row)
                    lat.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(percentile(lat, 0.5), 2), "p99_ms": round(percentile(lat, 0.99), 2), "turns": len(lat)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "beam": beam.__version__,
        "runner": "FnApiRunner (in-process, one worker)",
        "stores": "Firestore emulator + Bigtable emulator on 127.0.0.1, sharing these CPUs",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.enrichment", description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=1200)
    ap.add_argument("--customers", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="120 turns, 40 customers, 1 repeat")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_enrichment.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.turns, args.customers, args.repeats = 120, 40, 1
    warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator")

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    logs = Path(tempfile.mkdtemp(prefix="bench-enrichment-"))
    fs_emu = firestore_emulator(free_port(), logs, DEFAULT_PROJECT)
    bt_emu = bigtable_emulator(free_port(), logs)
    results: list[Result] = []
    try:
        for emu in (fs_emu, bt_emu):
            emu.launch()
        fs_emu.wait_ready(90)
        bt_emu.wait_ready(30)
        os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{fs_emu.port}"
        os.environ["BIGTABLE_EMULATOR_HOST"] = f"127.0.0.1:{bt_emu.port}"
        load_pack().seed(firestore_client(DEFAULT_PROJECT), args.customers)
        seed_bigtable(admin_client(DEFAULT_PROJECT), args.customers)
        turns = workload(args.turns, args.customers)

        makers = {
            "firestore": lambda b, c: FirestoreContextHandler(DEFAULT_PROJECT, max_batch_size=b, cache=c),
            "bigtable": lambda b, c: BigtableContextHandler(
                DEFAULT_PROJECT, "supportflow", "customer_context", max_batch_size=b, cache=c
            ),
        }
        run_once(turns[:50], makers["firestore"](args.batch, NO_CACHE))  # warm-up: imports, channels, JIT-less
        for store, make in makers.items():
            for batch in (1, args.batch):
                for cache in (False, True):
                    r = measure(store, make, turns, batch, cache, args.repeats)
                    results.append(r)
                    print(
                        f"{store:9s} batch={batch:<3d} cache={'on ' if cache else 'off'} "
                        f"{r.turns_per_s:8.1f} turns/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
                        f"calls {r.store_calls:5d}  rpcs {r.store_rpcs:5d}  hits {r.cache_hits:5d}  "
                        f"flagged {r.flagged}",
                        flush=True,
                    )
        bursts: dict[str, dict[str, dict[str, float]]] = {}
        for store, make in makers.items():
            clear_caches()
            distinct = workload(args.customers, args.customers, seed=11)  # each customer once, shuffled
            burst = min(args.batch, args.customers)
            bursts[store] = {
                "lone turn": burst_latency(make, distinct[:100], 1, batched=False),
                "burst, one at a time": burst_latency(make, distinct, burst, batched=False),
                "burst, batched": burst_latency(make, distinct, burst, batched=True),
            }
            for name, b in bursts[store].items():
                print(
                    f"{store:9s} {name:28s} p50 {b['p50_ms']:8.2f} ms  p99 {b['p99_ms']:8.2f} ms  ({b['turns']} turns)"
                )
    finally:
        for emu in (fs_emu, bt_emu):
            emu.stop()

    def get(store: str, batch: int, cache: bool) -> Result:
        return next(r for r in results if (r.store, r.batch, r.cache) == (store, batch, cache))

    ratios: dict[str, dict[str, float]] = {}
    for store in ("firestore", "bigtable"):
        one, batched = get(store, 1, False), get(store, args.batch, False)
        one_c, batched_c = get(store, 1, True), get(store, args.batch, True)
        ratios[store] = {
            "throughput batched / one-at-a-time (no cache)": round(batched.turns_per_s / one.turns_per_s, 2),
            "burst p50 latency one-at-a-time / batched": round(
                bursts[store]["burst, one at a time"]["p50_ms"] / bursts[store]["burst, batched"]["p50_ms"],
                2,
            ),
            "burst p99 latency one-at-a-time / batched": round(
                bursts[store]["burst, one at a time"]["p99_ms"] / bursts[store]["burst, batched"]["p99_ms"],
                2,
            ),
            "throughput cache / no cache (one-at-a-time)": round(one_c.turns_per_s / one.turns_per_s, 2),
            "throughput cache / no cache (batched)": round(batched_c.turns_per_s / batched.turns_per_s, 2),
            "store RPCs one-at-a-time / batched (no cache)": round(one.store_rpcs / max(1, batched.store_rpcs), 2),
            "throughput batched+cache / one-at-a-time no cache": round(batched_c.turns_per_s / one.turns_per_s, 2),
        }
    report = {
        "machine": machine(),
        "workload": {
            "turns": args.turns,
            "customers": args.customers,
            "repeats": args.repeats,
            "batch": args.batch,
            "burst": min(args.batch, args.customers),
            "load_average_at_start": load_at_start,
        },
        "results": [asdict(r) for r in results],
        "burst_latency": bursts,
        "ratios": ratios,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print("\nratios:")
    for store, rs in ratios.items():
        for name, value in rs.items():
            print(f"  {store:9s} {name}: {value}x")
    print(f"machine: {json.dumps(report['machine'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
