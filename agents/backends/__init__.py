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
"""

from __future__ import annotations

from typing import Any

from apache_beam.ml.inference.base import ModelHandler

BACKENDS: tuple[str, ...] = ("smollm2", "instant", "gemini")
# Backends whose model really calls tools (SmolLM2's chat template ignores tool declarations).
TOOL_CALLING_BACKENDS: frozenset[str] = frozenset({"gemini"})


def make_handler(
    backend: str,
    *,
    max_tokens: int,
    threads: int,
    gemini_model: str | None = None,
    gemini_base_url: str | None = None,
    **options: Any,
) -> ModelHandler:
    """The ModelHandler for ``backend``.

    ``max_tokens`` caps generated tokens per call (a request may ask for fewer);
    ``threads`` is the CPU threads of one model copy (ignored by "instant" and "gemini").
    ``gemini_model`` names the Gemini model (``--gemini_model``; ignored by the others);
    ``gemini_base_url`` points the client at another endpoint (a local Gemini REST server in tests).
    ``options`` go to the handler's constructor (e.g. ``max_batch_size``,
    ``model_copies``, ``n_ctx`` for smollm2).
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
    raise ValueError(f"unknown model backend {backend!r}; choose one of {list(BACKENDS)}")
