"""What one tool call costs, by where the tool runs: a Python tool over Firestore, or an MCP tool.

    .venv/bin/python -m bench.tool_hop                 # 300 calls of each kind, after 20 warm-up calls
    .venv/bin/python -m bench.tool_hop --calls 1000

Each kind answers the same shape of question (a read of the customer's own data) through the executors
the agent uses: the shop's ``lookup_orders`` on the Firestore emulator, and the telco pack's
``get_plan_usage`` on its MCP server over stdio and over streamable HTTP (each a real server process on
this machine), and that same read on the telco store called in process. Calls are sequential from one
thread, customers round-robin. An MCP call less the in-process read, measured in the same run, is the
MCP hop's cost per tool call (a turn makes one to three); the ratios to the Firestore call put it beside
the shop's own tool.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.probes import report_head

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(call: Callable[[int], Any], calls: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        call(i)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "calls": calls,
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 3),
        "mean_ms": round(statistics.fmean(times), 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from google.cloud import firestore

    from contract.tool_calls import ToolCall
    from stack.emulators import DEFAULT_STATE_DIR, LocalStack, ensure_bq_venv
    from tools.mcp import McpServer, McpToolSource
    from tools.packs import load_pack
    from tools.registry import FirestoreToolExecutor
    from tools.scope import ToolContext

    report: dict[str, Any] = {**report_head("bench.tool_hop", sys.argv[1:], vars(args) | {"out": str(args.out)})}
    DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-hop-", dir=str(DEFAULT_STATE_DIR)))
    stack = LocalStack(state_dir=state_dir, bq_venv=ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")).start()
    db_path = state_dir / "telco.sqlite"
    http = None
    try:
        stack.apply_env()
        client = firestore.Client(project=stack.project)
        pack = load_pack()
        pack.seed(client, 20)
        ids = [c.customer_id for c in pack.build_customers(20)]
        shop = FirestoreToolExecutor(client, pack=pack, clock=lambda: pack.reference_time)

        def ctx(cid: str, i: int) -> ToolContext:
            return ToolContext(customer_id=cid, session_id=f"bench-{i}", turn_id=f"bench-{i}-t")

        def shop_call(i: int) -> None:
            result = shop.execute(ctx(ids[i % 20], i), ToolCall(f"c{i}", "lookup_orders", "{}"))
            assert result.status == "ok", result

        results = {"firestore_python_tool": _measure(shop_call, args.calls, args.warmup)}

        # The telco store's own read, in this process: what the MCP calls cost beyond it is the hop.
        from packs.telco.data import ensure_database
        from packs.telco.mcp_server import Caller, TelcoStore

        ensure_database(db_path)
        store = TelcoStore(db_path)

        def store_call(i: int) -> None:
            assert store.plan_usage(Caller(f"ACC-{100001 + i % 20}", f"bench-{i}", "t"))["status"] == "ok"

        results["telco_store_in_process"] = _measure(store_call, args.calls, args.warmup)
        command = (sys.executable, "-m", "packs.telco.mcp_server", "--db", str(db_path))
        port = _free_port()
        http = subprocess.Popen([*command, "--http", "--port", str(port)], cwd=REPO, stderr=subprocess.DEVNULL)
        servers = {
            "mcp_stdio": McpServer("telco", command=command, cwd=str(REPO)),
            "mcp_streamable_http": McpServer("telco", url=f"http://127.0.0.1:{port}/mcp", connect_timeout_s=30),
        }
        for name, server in servers.items():
            source = McpToolSource(server)
            for _ in range(50):  # the HTTP server needs a moment to listen
                try:
                    source.start()
                    break
                except ConnectionError:
                    time.sleep(0.2)
            try:

                def mcp_call(i: int, source: McpToolSource = source) -> None:
                    account = f"ACC-{100001 + i % 20}"
                    result = source.execute(ctx(account, i), ToolCall(f"c{i}", "get_plan_usage", "{}"))
                    assert result.status == "ok", result

                results[name] = _measure(mcp_call, args.calls, args.warmup)
            finally:
                source.close()
        base = results["firestore_python_tool"]["p50_ms"]
        report["results"] = results
        report["ratios_p50_to_firestore"] = {k: round(v["p50_ms"] / base, 2) for k, v in results.items()}
        own = results["telco_store_in_process"]["p50_ms"]
        report["mcp_hop_p50_ms"] = {
            k: round(results[k]["p50_ms"] - own, 3) for k in ("mcp_stdio", "mcp_streamable_http")
        }
    finally:
        if http is not None:
            http.terminate()
            http.wait(timeout=10)
        stack.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tool_hop", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_tool_hop.json")
    args = p.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for name, fig in report["results"].items():
        ratio = report["ratios_p50_to_firestore"][name]
        print(f"{name:24s} p50 {fig['p50_ms']:8.2f} ms  p99 {fig['p99_ms']:8.2f} ms  (x{ratio} the Firestore p50)")
    for name, ms in report["mcp_hop_p50_ms"].items():
        print(f"the MCP hop over {name[4:]}: {ms:.2f} ms per call at p50 (the MCP call less the store's own read)")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
