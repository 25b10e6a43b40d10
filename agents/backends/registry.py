"""The one registry of model backends: every fact about a backend is declared here once.

The pipeline's step plan, the settings' checks (GPU or not), the evals harness
and the quick start all ask this registry; none keeps a list of its own.

A backend's entry says:
- ``hardware``: where its model runs (``cpu``, ``gpu``, or ``remote`` for a hosted API);
- ``tool_mode``: how its model calls tools:
  ``native`` (the model's API takes tool declarations and returns calls),
  ``constrained`` (the agent's step protocol, with decoding constrained to
  "one reply, one declared tool call or a hand-off"), or ``none`` (no tools:
  not an agent; only the ``instant`` stub);
- ``prompt_version``: the versioned system prompt (each pack's ``prompts/<version>.txt``) it is given;
- ``factory``: the thin ``make_<x>_handler`` below that builds its RunInference
  ``ModelHandler``; it imports the backend module only when called, so building a
  pipeline never needs a backend's native library;
- ``options``: the pipeline options it reads, which are exactly the factory's named
  keyword parameters (so they are written once, in the factory). Each is a
  ``pipeline.options`` option of the same name: the pipeline passes them by name
  (``Settings.backend_options()``). Extra keyword arguments (``max_batch_size``,
  ``n_ctx``, ...) go through to the handler's constructor.

An option a factory leaves at ``None`` means "the handler's own default" (direct
callers: tests, benches); the pipeline always passes the option table's values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from apache_beam.ml.inference.base import ModelHandler


class Hardware(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    REMOTE = "remote"


class ToolMode(StrEnum):
    NATIVE = "native"
    CONSTRAINED = "constrained"
    NONE = "none"


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not ``None``): the rest keep the handler's defaults."""
    return {k: v for k, v in values.items() if v is not None}


# --- Factories: option names in, a handler out. One per backend, each a mapping and nothing more. ---


def make_llamacpp_handler(*, model_max_tokens: int, model_threads: int | None = None, **handler: Any) -> ModelHandler:
    from agents.backends.llamacpp import LlamaCppHandler

    return LlamaCppHandler(max_tokens=model_max_tokens, **_given(threads=model_threads), **handler)


def make_instant_handler(*, model_max_tokens: int, **handler: Any) -> ModelHandler:
    from agents.backends.instant import InstantHandler

    return InstantHandler(max_tokens=model_max_tokens, **handler)


def make_gemini_handler(
    *,
    model_max_tokens: int,
    gemini_model: str | None = None,
    gemini_base_url: str | None = None,
    gemini_deadline_s: float | None = None,
    gemini_attempt_timeout_s: float | None = None,
    gemini_max_attempts: int | None = None,
    gemini_backoff_s: float | None = None,
    gemini_max_backoff_s: float | None = None,
    gemini_max_concurrency: int | None = None,
    **handler: Any,
) -> ModelHandler:
    from agents.backends.gemini import GeminiHandler

    # One attempt never outlasts the whole call, and the longest wait is never below the first one.
    attempt = gemini_attempt_timeout_s
    if attempt is not None and gemini_deadline_s is not None:
        attempt = min(attempt, gemini_deadline_s)
    longest = gemini_max_backoff_s
    if longest is not None and gemini_backoff_s is not None:
        longest = max(longest, gemini_backoff_s)
    return GeminiHandler(
        max_tokens=model_max_tokens,
        **_given(
            model=gemini_model,
            base_url=gemini_base_url,
            deadline_s=gemini_deadline_s,
            attempt_timeout_s=attempt,
            max_attempts=gemini_max_attempts,
            max_concurrency=gemini_max_concurrency,
            initial_backoff_s=gemini_backoff_s,
            jitter_s=gemini_backoff_s,  # up to one first back-off of jitter
            max_backoff_s=longest,
        ),
        **handler,
    )


def make_gemma_handler(
    *,
    model_max_tokens: int,
    model_path: str | None = None,
    model_device: str | None = None,
    model_batch_size: int | None = None,
    model_batch_wait_s: float | None = None,
    model_copies: int | None = None,
    **handler: Any,
) -> ModelHandler:
    from agents.backends.hf_gemma import GemmaConfig, GemmaHandler

    if not model_path:
        raise ValueError("the gemma backend needs --model_path: a checkpoint directory, a hub id or random:<shape>")
    return GemmaHandler(
        config=GemmaConfig(model_path=model_path, **_given(device=model_device)),
        max_tokens=model_max_tokens,
        **_given(
            max_batch_size=model_batch_size,
            max_batch_duration_secs=model_batch_wait_s,
            model_copies=model_copies or None,  # 0: a copy per SDK process (Beam's default)
        ),
        **handler,
    )


def make_vllm_handler(
    *,
    model_max_tokens: int,
    model_path: str | None = None,
    model_batch_size: int | None = None,
    model_batch_wait_s: float | None = None,
    **handler: Any,
) -> ModelHandler:
    from agents.backends.vllm_gemma import GemmaVLLMHandler

    return GemmaVLLMHandler(
        max_tokens=model_max_tokens,
        **_given(model_name=model_path, max_batch_size=model_batch_size, max_batch_duration_secs=model_batch_wait_s),
        **handler,
    )


# --- The registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    hardware: Hardware
    tool_mode: ToolMode
    prompt_version: str
    factory: Callable[..., ModelHandler]

    @property
    def calls_tools(self) -> bool:
        return self.tool_mode is not ToolMode.NONE

    @property
    def needs_gpu(self) -> bool:
        return self.hardware is Hardware.GPU

    @property
    def options(self) -> tuple[str, ...]:
        """The pipeline options this backend reads: its factory's named keyword parameters."""
        params = inspect.signature(self.factory).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def pick(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Of ``values`` (option name -> value), the ones this backend reads."""
        return {name: values[name] for name in self.options if name in values}


REGISTRY: Mapping[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            name="smollm2",
            summary="SmolLM2-135M-Instruct on the CPU through llama.cpp (xllamacpp); the embedded default.",
            hardware=Hardware.CPU,
            tool_mode=ToolMode.CONSTRAINED,
            prompt_version="support_tools_v2",
            factory=make_llamacpp_handler,
        ),
        Backend(
            name="instant",
            summary="No model: an immediate, deterministic acknowledgement, for measuring pipeline overhead.",
            hardware=Hardware.CPU,
            tool_mode=ToolMode.NONE,
            prompt_version="support_system_v1",
            factory=make_instant_handler,
        ),
        Backend(
            name="gemini",
            summary="Google's hosted Gemini models through google-genai: concurrent, retried, native tool calls.",
            hardware=Hardware.REMOTE,
            tool_mode=ToolMode.NATIVE,
            prompt_version="support_system_v2",
            factory=make_gemini_handler,
        ),
        Backend(
            name="gemma",
            summary="A Gemma checkpoint (or random Gemma-shaped weights) in the worker through transformers.",
            hardware=Hardware.GPU,
            tool_mode=ToolMode.CONSTRAINED,
            prompt_version="support_gemma_v1",
            factory=make_gemma_handler,
        ),
        Backend(
            name="gemma_vllm",
            summary="Gemma served by vLLM through Beam's VLLMChatModelHandler; the production GPU option.",
            hardware=Hardware.GPU,
            tool_mode=ToolMode.CONSTRAINED,
            prompt_version="support_gemma_v1",
            factory=make_vllm_handler,
        ),
    )
}

NAMES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT: str = "smollm2"  # the embedded local stack's backend: CPU-only, no key, no download


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model backend {name!r}; choose one of {list(NAMES)}") from None


def names(*, hardware: Hardware | None = None, calls_tools: bool | None = None) -> tuple[str, ...]:
    """Backend names, optionally only those on ``hardware`` / those that do (or do not) call tools."""
    return tuple(
        b.name
        for b in REGISTRY.values()
        if (hardware is None or b.hardware is hardware) and (calls_tools is None or b.calls_tools is calls_tools)
    )


def make_handler(name: str, **options: Any) -> ModelHandler:
    """The backend's RunInference handler, built by its factory from the options it reads (by option name)."""
    return get(name).factory(**options)
