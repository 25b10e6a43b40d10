"""Benchmark: generated tokens per second through RunInference in a Beam pipeline vs direct model calls.

The same model object, prompts and generation settings, in one run, at each batch size:

- ``direct``: the fastest plain program. Gemma: the transformers model's own batched ``generate``
  (static cache on CUDA: the compiled path) on the prompts' token ids. SmolLM2: one llama.cpp chat
  completion after another, no Beam.
- ``pipeline``: a Beam batch pipeline (in-process FnApiRunner) of ``Create(turns) |
  RunInference(<the backend's handler>) | count tokens``, the handler forced to batches of exactly
  B (``min_batch_size = max_batch_size = B``). The wall time covers the whole pipeline run (its
  start-up too), so its figure is what a worker gets, not the model alone.

Each batch size runs enough batches to last ``--seconds`` in the direct program (sized by a probe
batch), after a warm-up of both (the first static-cache call compiles for minutes on a GPU). The
ratio pipeline/direct is the figure: 1.0 means Beam costs nothing.

GPU (Gemma 3 1B shape, random bf16 weights: nothing can be downloaded, so the weights are built from
the architecture's config on the device; see ``agents/backends/hf_gemma.py``)::

    python -m bench.model_throughput --backend gemma --model-path random:gemma-3-1b --device cuda \\
        --batch-sizes 1,8,32 --prompt-tokens 256 --new-tokens 128 --out artifacts/bench_gemma_gpu.json

CPU, the local model (SmolLM2-135M through llama.cpp, one thread)::

    python -m bench.model_throughput --backend smollm2 --batch-sizes 1,8 --new-tokens 32 \\
        --out artifacts/bench_smollm2_cpu.json

``--backend gemma --model-path random:tiny --device cpu`` is a seconds-long smoke run of the GPU
benchmark's code path on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.testing.util import assert_that

from agents.backends import make_handler
from agents.model_io import ChatMessage, ModelCall, ModelRequest, ModelResponse

SYSTEM = "You are the support agent of an online shop. Answer the customer briefly and politely."
FILLER = (
    "My order has not arrived yet and the tracking page has not changed for days. "
    "Could you check where the parcel is and when it will be delivered? "
)


@dataclass
class Figure:
    system: str  # "direct" or "pipeline"
    batch_size: int
    requests: int
    generated_tokens: int
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0


# --- workloads --------------------------------------------------------------------------------------


class Workload:
    """A backend's prompts, direct program and pipeline handler, around one loaded model."""

    name: str

    def requests(self, n: int) -> list[ModelRequest]:
        raise NotImplementedError

    def direct(self, batch: Sequence[ModelRequest]) -> int:
        """Run one batch the plain way; returns the generated tokens."""
        raise NotImplementedError

    def handler(self, batch_size: int) -> ModelHandler:
        raise NotImplementedError

    inference_args: dict[str, Any] = {}


class GemmaWorkload(Workload):
    def __init__(self, model_path: str, device: str, prompt_tokens: int, new_tokens: int, static: str) -> None:
        from agents.backends.hf_gemma import GemmaConfig, load_gemma

        self.name = f"gemma ({model_path})"
        self.prompt_tokens = prompt_tokens
        self.new_tokens = new_tokens
        static_cache = {"auto": None, "on": True, "off": False}[static]
        self.config = GemmaConfig(
            model_path=model_path, device=device, static_cache=static_cache, max_prompt_tokens=prompt_tokens
        )
        self.model = load_gemma(self.config)  # the handler's process cache: the pipeline gets this object
        self.inference_args = {"min_tokens": new_tokens}

    def requests(self, n: int) -> list[ModelRequest]:
        return [self._request(i) for i in range(n)]

    def _request(self, i: int) -> ModelRequest:
        """A chat whose rendered prompt is exactly ``prompt_tokens`` tokens (distinct per i)."""
        head = f"[{i}] "
        text = head + FILLER * (1 + self.prompt_tokens // 8)
        low, high = 0, len(text)
        while low < high:  # the longest prefix that fits
            mid = (low + high + 1) // 2
            if self._count(text[:mid]) <= self.prompt_tokens:
                low = mid
            else:
                high = mid - 1
        request = self._wrap(text[:low])
        if self._count(text[:low]) != self.prompt_tokens:
            raise ValueError(f"no prompt of exactly {self.prompt_tokens} tokens: template and system text need more")
        return request

    def _wrap(self, text: str) -> ModelRequest:
        return ModelRequest((ChatMessage("system", SYSTEM), ChatMessage("user", text)), max_tokens=self.new_tokens)

    def _count(self, text: str) -> int:
        rendered = self.model.render(self._wrap(text))
        return len(self.model.tokenizer(rendered, add_special_tokens=False)["input_ids"])

    def direct(self, batch: Sequence[ModelRequest]) -> int:
        import torch

        tok, hf = self.model.tokenizer, self.model.model
        ids = [tok(self.model.render(r), add_special_tokens=False)["input_ids"] for r in batch]
        inputs = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.model.device)
        kwargs: dict[str, Any] = {"max_new_tokens": self.new_tokens, "min_new_tokens": self.new_tokens}
        if self.model.static_cache:
            kwargs["cache_implementation"] = "static"
        with torch.inference_mode():
            out = hf.generate(**inputs, **kwargs, do_sample=False, pad_token_id=tok.pad_token_id)
        if self.model.device.startswith("cuda"):
            torch.cuda.synchronize()
        return int((out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0])

    def handler(self, batch_size: int) -> ModelHandler:
        from agents.backends.hf_gemma import GemmaHandler

        return GemmaHandler(
            config=self.config, max_tokens=self.new_tokens, max_batch_size=batch_size, min_batch_size=batch_size
        )


class SmolLM2Workload(Workload):
    def __init__(self, threads: int, prompt_tokens: int, new_tokens: int) -> None:
        self.name = "smollm2 (SmolLM2-135M-Instruct Q4_1, llama.cpp)"
        self.threads = threads
        self.prompt_tokens = prompt_tokens
        self.new_tokens = new_tokens
        self.model = self.handler(1).load_model()  # process cache: the pipeline's handler gets this object

    def requests(self, n: int) -> list[ModelRequest]:
        # ~4 characters per token for this text; the figure reports the tokens really generated.
        text = FILLER * (1 + self.prompt_tokens * 4 // len(FILLER))
        return [
            ModelRequest(
                (ChatMessage("system", SYSTEM), ChatMessage("user", f"[{i}] " + text[: self.prompt_tokens * 4])),
                max_tokens=self.new_tokens,
            )
            for i in range(n)
        ]

    def direct(self, batch: Sequence[ModelRequest]) -> int:
        return sum(self.model.complete(r, max_tokens=self.new_tokens).completion_tokens for r in batch)

    def handler(self, batch_size: int) -> ModelHandler:
        return make_handler(
            "smollm2",
            model_max_tokens=self.new_tokens,
            model_threads=self.threads,
            max_batch_size=batch_size,
            min_batch_size=batch_size,
        )


# --- measuring --------------------------------------------------------------------------------------


def _tokens(result: PredictionResult) -> int:
    response: ModelResponse = result.inference
    if not response.ok:
        raise RuntimeError(f"model error in the benchmark: {response.error}")
    return response.completion_tokens


class _Sum:
    """Collects the pipeline's token count in this process (FnApiRunner runs in-process)."""

    total = 0

    @classmethod
    def check(cls, counts: list[int]) -> None:
        cls.total = sum(counts)


def run_pipeline(work: Workload, requests: Sequence[ModelRequest], batch_size: int) -> tuple[int, float]:
    calls = [ModelCall(r, payload=i) for i, r in enumerate(requests)]
    start = time.perf_counter()
    with beam.Pipeline(runner="FnApiRunner") as p:
        counts = (
            p
            | "Turns" >> beam.Create(calls, reshuffle=False)
            | "RunModel" >> RunInference(work.handler(batch_size), inference_args=work.inference_args or None)
            | "Tokens" >> beam.Map(_tokens)
        )
        assert_that(counts, _Sum.check)
    return _Sum.total, time.perf_counter() - start


def run_direct(work: Workload, requests: Sequence[ModelRequest], batch_size: int) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = sum(work.direct(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size))
    return tokens, time.perf_counter() - start


def measure(
    work: Workload, batch_sizes: Sequence[int], seconds: float, repeats: int, log: Callable[[str], None]
) -> list[Figure]:
    figures: list[Figure] = []
    for b in batch_sizes:
        probe = work.requests(b)
        log(f"batch {b}: warm-up (the first static-cache calls compile) ...")
        run_direct(work, probe, b)
        run_pipeline(work, probe, b)
        _, probe_s = run_direct(work, probe, b)
        batches = max(2, math.ceil(seconds / max(probe_s, 1e-3)))
        requests = work.requests(b * batches)
        for system, runner in (("direct", run_direct), ("pipeline", run_pipeline)):
            best: Figure | None = None
            for _ in range(repeats):
                tokens, wall = runner(work, requests, b)
                fig = Figure(system, b, len(requests), tokens, wall)
                if best is None or fig.tokens_per_s > best.tokens_per_s:
                    best = fig
            assert best is not None
            figures.append(best)
            log(f"batch {b} {system:8s}: {best.requests} turns, {best.generated_tokens} tokens, "
                f"{best.wall_s:.2f} s, {best.tokens_per_s:,.1f} tokens/s")  # fmt: skip
    return figures


def table(figures: Sequence[Figure]) -> str:
    by = {(f.system, f.batch_size): f for f in figures}
    sizes = sorted({f.batch_size for f in figures})
    base = by.get(("pipeline", sizes[0]))
    lines = [
        "| batch | direct tokens/s | pipeline tokens/s | pipeline / direct | pipeline vs its batch 1 |",
        "|---|---|---|---|---|",
    ]
    for b in sizes:
        d, p = by[("direct", b)], by[("pipeline", b)]
        lift = f"{p.tokens_per_s / base.tokens_per_s:.2f}x" if base and base.tokens_per_s else "-"
        lines.append(
            f"| {b} | {d.tokens_per_s:,.1f} | {p.tokens_per_s:,.1f} | {p.tokens_per_s / d.tokens_per_s:.2f} | {lift} |"
        )
    return "\n".join(lines)


def device_info(work: Workload) -> dict[str, Any]:
    from bench.probes import machine

    info: dict[str, Any] = {"machine": machine()}
    model = getattr(work, "model", None)
    device = getattr(model, "device", "cpu")
    info["device"] = device
    if isinstance(device, str) and device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
        info["torch"] = torch.__version__
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("gemma", "smollm2"), default="smollm2")
    p.add_argument("--model-path", default="random:tiny", help="gemma: checkpoint dir, hub id or random:<shape>")
    p.add_argument("--device", default="auto", help="gemma: auto, cpu, cuda or cuda:N")
    p.add_argument("--static-cache", choices=("auto", "on", "off"), default="auto", help="gemma (auto: on for CUDA)")
    p.add_argument("--threads", type=int, default=1, help="smollm2: llama.cpp threads")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated (default: %(default)s)")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0, help="direct-program time per batch size (sizes the run)")
    p.add_argument("--repeats", type=int, default=2, help="runs per system and batch size; the best counts")
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if args.backend == "gemma":
        work: Workload = GemmaWorkload(
            args.model_path, args.device, args.prompt_tokens, args.new_tokens, args.static_cache
        )
    else:
        work = SmolLM2Workload(args.threads, args.prompt_tokens, args.new_tokens)
    log(f"{work.name}: loaded in {time.perf_counter() - t0:.1f} s")
    figures = measure(work, sizes, args.seconds, args.repeats, log)
    info = device_info(work)
    ratios = [
        f.tokens_per_s / d.tokens_per_s
        for f in figures
        if f.system == "pipeline"
        for d in figures
        if d.system == "direct" and d.batch_size == f.batch_size
    ]
    result = {
        "benchmark": "model_throughput",
        "backend": work.name,
        "command": "python -m bench.model_throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "figures": [{**asdict(f), "tokens_per_s": round(f.tokens_per_s, 2)} for f in figures],
        "pipeline_over_direct_geomean": round(statistics.geometric_mean(ratios), 3) if ratios else None,
        **info,
    }
    print(f"\n{work.name} on {info.get('gpu') or info['machine'].get('cpu_model', 'CPU')}\n")
    print(table(figures))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
