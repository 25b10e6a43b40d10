"""Routing accuracy of a prompt version's routes on a held-out set, with the model's own embeddings.

    python -m bench.routing_accuracy [--version support_tools_v1] [--set heldout|dev] [--threads 1]

Loads SmolLM2 through the llama.cpp backend (the embedding mode the agent uses),
routes every request of ``bench/routing_heldout.yaml`` as ``agents.steps`` does
(``RouteTable.query`` -> ``agents.embedding_router.rank``), and prints accuracy by route
and by tool, the misses, and the routing's own cost per request (the example
vectors are embedded once, on the first request, and reported separately).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import yaml

from agents.backends.llamacpp import LlamaCppModel, smollm2_gguf_path
from agents.model_io import ChatMessage, ModelRequest
from agents.route_table import load_routes

HELDOUT = Path(__file__).with_name("routing_heldout.yaml")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="support_tools_v1")
    ap.add_argument("--set", default="heldout", choices=("heldout", "dev"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    table = load_routes(args.version)
    if table is None:
        raise SystemExit(f"prompt version {args.version} has no routes file")
    items = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))[args.set]
    model = LlamaCppModel(smollm2_gguf_path(), threads=args.threads)
    t0 = time.perf_counter()
    warm = model.complete(ModelRequest((ChatMessage("user", "x"),), 1, route=table.query("x")), 1)
    first_ms = (time.perf_counter() - t0) * 1000.0
    right = tool_right = 0
    times: list[float] = []
    misses = []
    per_route: dict[str, list[int]] = {}
    for want, text in items:
        request = ModelRequest((ChatMessage("user", text),), 1, route=table.query(text))
        t = time.perf_counter()
        got = model.complete(request, 1).route[0][0]
        times.append((time.perf_counter() - t) * 1000.0)
        ok = got == want
        right += ok
        tool_right += table.routes[got].tool == table.routes[want].tool
        per_route.setdefault(want, [0, 0])[0] += ok
        per_route[want][1] += 1
        if not ok:
            misses.append((text, want, got))
    n = len(items)
    print(f"{args.set}: {n} requests, {len(table.query('x').examples)} examples over {len(table.routes)} routes")
    print(
        f"route accuracy {right}/{n} ({100 * right / n:.0f}%), "
        f"tool accuracy {tool_right}/{n} ({100 * tool_right / n:.0f}%)"
    )
    print("| route | right |\n|---|---|")
    for name, (ok, total) in per_route.items():
        print(f"| {name} | {ok}/{total} |")
    for text, want, got in misses:
        print(f"miss: {text!r}: want {want}, got {got}")
    print(
        f"routing cost per request: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
        f"(first request, embedding every example: {first_ms:.0f} ms; warm-up result {warm.route[0][0]})"
    )


if __name__ == "__main__":
    main()
