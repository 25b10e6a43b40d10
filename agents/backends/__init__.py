"""Model backends, each a Beam RunInference ``ModelHandler`` with one contract.

Element: anything with ``.request: agents.model.ModelRequest`` (e.g.
``agents.model.ModelCall``) or a bare ``ModelRequest``. Result:
``PredictionResult(example=<the element>, inference=<agents.model.ModelResponse>)``,
exactly one per element, in input order.

Backends (names match ``pipeline.options.MODEL_BACKENDS``):
- ``smollm2``: SmolLM2-135M-Instruct on CPU through llama.cpp (``xllamacpp``).
- ``instant``: no model; an immediate, deterministic acknowledgement, for
  measuring pipeline overhead. Not an agent.
- ``gemini``: Google's hosted Gemini models through ``google-genai``, one
  request per element, concurrent, retried (``agents/backends/gemini.py``).
- ``gemma``: a Gemma checkpoint (or random Gemma-shaped weights) in the worker
  through transformers, one batched ``generate`` per batch, on a GPU or the CPU
  (``agents/backends/hf_gemma.py``).
- ``gemma_vllm``: Gemma served by vLLM, through Beam's ``VLLMChatModelHandler``
  (``agents/backends/vllm_gemma.py``); the production option on Dataflow GPUs.
"""

from __future__ import annotations

from typing import Any

from apache_beam.ml.inference.base import ModelHandler

BACKENDS: tuple[str, ...] = ("smollm2", "instant", "gemini", "gemma", "gemma_vllm")
# Backends whose model really calls tools (SmolLM2's chat template ignores tool declarations).
TOOL_CALLING_BACKENDS: frozenset[str] = frozenset({"gemini"})


def make_handler(
    backend: str,
    *,
    max_tokens: int,
    threads: int = 1,
    gemini_model: str | None = None,
    gemini_base_url: str | None = None,
    model_path: str | None = None,
    device: str = "auto",
    batch_size: int = 8,
    batch_wait_s: float | None = None,
    copies: int = 0,
    **options: Any,
) -> ModelHandler:
    """The ModelHandler for ``backend``.

    ``max_tokens`` caps generated tokens per call (a request may ask for fewer);
    ``threads`` is the CPU threads of one model copy (ignored by "instant" and "gemini").
    ``gemini_model`` names the Gemini model (``--gemini_model``; ignored by the others);
    ``gemini_base_url`` points the client at another endpoint (a local Gemini REST server in tests).
    ``model_path``, ``device``, ``batch_size``, ``batch_wait_s`` and ``copies``
    configure the Gemma backends (``--model_*``; ignored by the others).
    ``options`` go to the handler's constructor (e.g. ``max_batch_size``,
    ``model_copies``, ``n_ctx`` for smollm2; ``deadline_s`` for gemini).
    """
    if backend == "smollm2":
        from agents.backends.llamacpp import LlamaCppHandler

        return LlamaCppHandler(max_tokens=max_tokens, threads=threads, **options)
    if backend == "instant":
        from agents.backends.instant import InstantHandler

        return InstantHandler(max_tokens=max_tokens, **options)
    if backend == "gemini":
        from agents.backends.gemini import GEMINI_DEFAULT_MODEL, GeminiHandler

        return GeminiHandler(
            model=gemini_model or GEMINI_DEFAULT_MODEL, max_tokens=max_tokens, base_url=gemini_base_url, **options
        )
    if backend == "gemma":
        from agents.backends.hf_gemma import GemmaConfig, GemmaHandler

        if not model_path:
            raise ValueError("the gemma backend needs --model_path: a checkpoint directory, a hub id or random:<shape>")
        return GemmaHandler(
            config=GemmaConfig(model_path=model_path, device=device),
            max_tokens=max_tokens,
            max_batch_size=batch_size,
            max_batch_duration_secs=batch_wait_s,
            model_copies=copies or None,
            **options,
        )
    if backend == "gemma_vllm":
        from agents.backends.vllm_gemma import GEMMA_VLLM_DEFAULT_MODEL, GemmaVLLMHandler

        return GemmaVLLMHandler(
            model_name=model_path or GEMMA_VLLM_DEFAULT_MODEL,
            max_tokens=max_tokens,
            max_batch_size=batch_size,
            max_batch_duration_secs=batch_wait_s,  # type: ignore[arg-type]  # Beam annotates int; a float works
            **options,
        )
    raise ValueError(f"unknown model backend {backend!r}; choose one of {list(BACKENDS)}")
