"""Benchmark: do concurrent turns gain from one llama.cpp decode (parallel sequences) on this CPU?

llama.cpp's server engine batches the calls that arrive together into one decode when it has more than
one slot (``n_parallel``). Each case sends the same ``--calls`` chat completions to one model copy twice:
one after another, then all at once from as many threads. The figure is the all-at-once wall time with
``--slots`` slots over the same with one slot (where llama.cpp queues the calls): below 1.0, batching
concurrent turns into one decode pays on this machine.

Cases: ``n_parallel`` 1 and ``--slots`` (default 4) for each workload:

- ``generate``: a short prompt and ``--new-tokens`` generated (decode-bound);
- ``prompt``: a ``--prompt-words``-word system prompt, different per call, and 24 generated
  (prompt-bound, like a turn that decodes a tool's arguments).

    .venv/bin/python -m bench.llamacpp_parallel --out artifacts/bench_llamacpp_parallel.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.probes import report_head

_TEXT = "the customer wants to know where the parcel is and what the policy says about it today"
_WORDS = _TEXT.split()


def _server(slots: int, threads: int) -> Any:
    import xllamacpp as xlc

    from agents.backends.llamacpp import smollm2_gguf_path

    params = xlc.CommonParams()
    params.model.path = smollm2_gguf_path()
    params.n_ctx = 4096 * slots  # each slot gets a 4,096-token context, as the backend's one slot has
    params.n_parallel = slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.sampling.temp = 0.0
    params.cache_prompt = True
    params.verbosity = 0
    params.ui = False
    params.api_keys = ["bench"]
    params.n_threads_http = 1
    params.offline = True
    return xlc.Server(params)


def _body(workload: str, i: int, new_tokens: int, prompt_words: int) -> dict[str, Any]:
    if workload == "generate":
        messages = [{"role": "user", "content": f"Write a long story about a cat called number {i}."}]
        return {"messages": messages, "max_tokens": new_tokens, "temperature": 0}
    system = " ".join(_WORDS[(j + i) % len(_WORDS)] for j in range(prompt_words))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": f"hello {i}"}]
    return {"messages": messages, "max_tokens": 24, "temperature": 0}


def measure(slots: int, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    server = _server(slots, args.threads)
    server.handle_chat_completions(_body(workload, 10_000, args.new_tokens, args.prompt_words))  # warm-up
    t0 = time.perf_counter()
    for i in range(args.calls):
        server.handle_chat_completions(_body(workload, i, args.new_tokens, args.prompt_words))
    sequential = time.perf_counter() - t0
    results: list[dict[str, Any]] = [{} for _ in range(args.calls)]

    def call(i: int) -> None:
        results[i] = server.handle_chat_completions(_body(workload, 1_000 + i, args.new_tokens, args.prompt_words))

    workers = [threading.Thread(target=call, args=(i,)) for i in range(args.calls)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    concurrent = time.perf_counter() - t0
    tokens = sum(int((r.get("usage") or {}).get("completion_tokens", 0)) for r in results)
    prompt = sum(int((r.get("usage") or {}).get("prompt_tokens", 0)) for r in results)
    return {
        "n_parallel": slots,
        "workload": workload,
        "calls": args.calls,
        "sequential_s": round(sequential, 2),
        "concurrent_s": round(concurrent, 2),
        "concurrent_over_sequential": round(concurrent / sequential, 2),
        "prompt_tokens_per_call": round(prompt / args.calls),
        "completion_tokens_per_call": round(tokens / args.calls),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=6)
    p.add_argument("--slots", type=int, default=4, help="n_parallel of the batching case")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (the pipeline's default is 1)")
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--prompt-words", type=int, default=550)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    report = report_head("bench.llamacpp_parallel", list(argv or sys.argv[1:]), vars(args) | {"out": str(args.out)})
    report["results"] = results = [measure(s, w, args) for s in (1, args.slots) for w in ("generate", "prompt")]
    for r in results:
        print(
            f"n_parallel={r['n_parallel']} {r['workload']:>8}: {r['calls']} calls one after another "
            f"{r['sequential_s']} s, all at once {r['concurrent_s']} s"
        )
    one = {r["workload"]: r["concurrent_s"] for r in results if r["n_parallel"] == 1}
    report["batched_over_queued"] = {
        r["workload"]: round(r["concurrent_s"] / one[r["workload"]], 2) for r in results if r["n_parallel"] != 1
    }
    for workload, ratio in report["batched_over_queued"].items():
        print(f"{workload}: all at once on {args.slots} slots / on 1 slot = {ratio}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
