"""Gemini (Google's hosted models) through the ``google-genai`` client, as a Beam ModelHandler.

Not Beam's ``apache_beam.ml.inference.gemini_inference.GeminiModelHandler``:
that one sends a whole batch as one ``generate_content`` call and returns one
result, so with batches larger than one it drops elements. Here every element
is its own ``generate_content`` request, and a batch's requests run
concurrently on a thread pool of ``max_concurrency`` threads (one pool per
worker process, shared by all of the process's DoFn threads, like the model
object itself). Results come back one per element, in input order.

The request/response mapping to google-genai types is ``agents.backends.gemini_convert``;
the retry policy and error classification are ``agents.backends.gemini_retry``
(both re-exported here). A failure is per element: ``ModelResponse(error=...)``
for that element only; its batch-mates are not affected. Counters (namespace
``supportflow_gemini``): ``gemini_requests``, ``gemini_retries``,
``gemini_rate_limited``, ``gemini_timeouts``, ``gemini_errors``.

Credentials, read on the worker when the model loads (so they are not pickled
into the pipeline unless passed explicitly): ``api_key=`` or the environment's
``GOOGLE_API_KEY`` / ``GEMINI_API_KEY`` (the Gemini Developer API), or Vertex AI
with ``GOOGLE_GENAI_USE_VERTEXAI=true`` plus ``GOOGLE_CLOUD_PROJECT`` /
``GOOGLE_CLOUD_LOCATION`` and application-default credentials. The key never
appears in a repr or a log line of this module. ``base_url`` points the client
elsewhere (tests use a local fake: ``tests/gemini_server.py``).

Thinking: Gemini 2.5 Flash thinks by default, and thinking tokens count against
``max_output_tokens``, so a small cap (the pipeline's default is 96) can end in
an empty reply with finish reason "length". ``thinking_budget="auto"`` (the
default) sends budget 0 (thinking off) to ``gemini-2.5-flash*`` models and
nothing to others (2.5 Pro cannot switch thinking off); pass an int to choose
(-1: the model decides), or None to never send one.

Against the real API::

    export GOOGLE_API_KEY=...
    # or: export GOOGLE_GENAI_USE_VERTEXAI=true GOOGLE_CLOUD_PROJECT=P GOOGLE_CLOUD_LOCATION=us-central1
    python -m pipeline.main --model_backend=gemini --gemini_model=gemini-2.5-flash ...

or in Python: ``RunInference(GeminiHandler(model="gemini-2.5-flash", max_tokens=256))``
over ``ModelCall`` elements. On Dataflow the workers need the credentials too:
prefer Vertex AI with the worker service account; an API key reaches workers
only through ``api_key=`` (pickled with the pipeline) or the workers' environment.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import tenacity
from apache_beam.metrics import Metrics

from agents.backends.base import AgentModelHandler
from agents.backends.gemini_convert import (
    SYNTHETIC_CALL_ID_PREFIX,
    function_declarations,
    to_contents,
    to_model_response,
)
from agents.backends.gemini_retry import (
    RETRYABLE_STATUSES,
    CallStats,
    DeadlineExceeded,
    RetryPolicy,
    describe_error,
    is_retryable,
    is_timeout,
    retry_hint_s,
    retrying,
    status_code,
)
from agents.backends.gemini_stream import stream_content
from agents.model_io import ModelRequest, ModelResponse
from agents.streaming import TextSink, sinks_for

# Names importers take from here (the handler module), whichever module defines them.
__all__ = [
    "GEMINI_DEFAULT_MODEL",
    "METRICS_NAMESPACE",
    "RETRYABLE_STATUSES",
    "SYNTHETIC_CALL_ID_PREFIX",
    "CallStats",
    "DeadlineExceeded",
    "GeminiHandler",
    "GeminiModel",
    "RetryPolicy",
    "ThinkingBudget",
    "describe_error",
    "function_declarations",
    "is_retryable",
    "retry_hint_s",
    "to_contents",
    "to_model_response",
]

logger = logging.getLogger(__name__)

GEMINI_DEFAULT_MODEL = "gemini-2.5-flash"
METRICS_NAMESPACE = "supportflow_gemini"

ThinkingBudget = int | None | Literal["auto"]


# ---------------------------------------------------------------------------
# The model (one per worker process) and the handler
# ---------------------------------------------------------------------------


class GeminiModel:
    """A ``genai.Client`` plus a bounded thread pool; thread-safe, shared by a process's DoFn threads."""

    def __init__(
        self,
        client: Any,
        *,
        model: str,
        max_concurrency: int = 8,
        policy: RetryPolicy | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        thinking_budget: ThinkingBudget = "auto",
    ) -> None:
        self._client = client
        self.model_name = model
        self.policy = policy or RetryPolicy()
        self._temperature = temperature
        self._seed = seed
        self._thinking_budget = thinking_budget
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="gemini")

    def __repr__(self) -> str:
        return f"GeminiModel(model={self.model_name!r}, policy={self.policy!r})"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _thinking(self) -> Any:
        from google.genai import types

        budget = self._thinking_budget
        if budget == "auto":
            budget = 0 if self.model_name.startswith("gemini-2.5-flash") else None
        return None if budget is None else types.ThinkingConfig(thinking_budget=int(budget))

    def _config(
        self, request: ModelRequest, system: str | None, max_tokens: int, temperature: float | None, seed: int | None
    ) -> Any:
        from google.genai import types

        config = types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=max_tokens,
            temperature=self._temperature if temperature is None else temperature,
            seed=self._seed if seed is None else seed,
            thinking_config=self._thinking(),
            candidate_count=1,
            # Our tools are declarations only; never let the SDK call Python functions itself.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if request.tools:
            config.tools = [types.Tool(function_declarations=function_declarations(request.tools))]
        return config

    def complete(
        self,
        request: ModelRequest,
        max_tokens: int,
        temperature: float | None = None,
        seed: int | None = None,
        sink: TextSink | None = None,
    ) -> tuple[ModelResponse, CallStats]:
        """One request, retried per the policy. Never raises: failures come back as ``error``.

        With a ``sink`` the call streams (``gemini_stream``): text parts are fed to it as they arrive."""
        from google.genai import types

        policy = self.policy
        stats = CallStats()
        start = time.monotonic()

        def elapsed_ms() -> float:
            return (time.monotonic() - start) * 1000.0

        def attempt(contents: list[Any], config: Any) -> Any:
            stats.attempts += 1
            left = policy.deadline_s - (time.monotonic() - start)
            if left <= 0.01:
                raise DeadlineExceeded(f"deadline of {policy.deadline_s:g} s reached")
            timeout_ms = max(1, math.ceil(min(policy.attempt_timeout_s, left) * 1000.0))
            config.http_options = types.HttpOptions(timeout=timeout_ms)
            try:
                if sink is not None:
                    return stream_content(self._client, self.model_name, contents, config, sink)
                return self._client.models.generate_content(model=self.model_name, contents=contents, config=config)
            except Exception as exc:  # counted here, re-raised for tenacity to classify
                if status_code(exc) == 429:
                    stats.rate_limited += 1
                if is_timeout(exc):
                    stats.timeouts += 1
                raise

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.info(
                "gemini %s: attempt %d failed (%s); retrying in %.2f s",
                self.model_name,
                state.attempt_number,
                describe_error(exc) if exc else "?",
                state.upcoming_sleep,
            )

        try:
            system, contents = to_contents(request.messages)
            config = self._config(request, system, max_tokens, temperature, seed)
            response = retrying(policy, before_sleep)(attempt, contents, config)
        except Exception as exc:  # noqa: BLE001 - one bad request must not fail its batch-mates
            why = describe_error(exc)
            if is_retryable(exc) or isinstance(exc, DeadlineExceeded):
                why = f"gave up after {stats.attempts} attempt(s) in {elapsed_ms() / 1000.0:.1f} s: {why}"
            return ModelResponse(text="", model_ms=elapsed_ms(), model=self.model_name, error=f"gemini {why}"), stats
        try:
            return to_model_response(response, model=self.model_name, model_ms=elapsed_ms()), stats
        except Exception as exc:  # noqa: BLE001 - an odd reply is this element's error only
            error = f"gemini unreadable response: {describe_error(exc)}"
            return ModelResponse(text="", model_ms=elapsed_ms(), model=self.model_name, error=error), stats

    def complete_all(
        self,
        requests: Sequence[ModelRequest],
        caps: Sequence[int],
        temperature: float | None = None,
        seed: int | None = None,
        sinks: Sequence[TextSink | None] | None = None,
    ) -> list[tuple[ModelResponse, CallStats]]:
        """All requests concurrently (at most ``max_concurrency`` at a time), results in input order.

        ``caps[i]`` is request i's ``max_output_tokens`` (``agents.backends.base.token_caps``).
        """
        sinks = list(sinks) if sinks is not None else [None] * len(requests)
        futures = [
            self._pool.submit(self.complete, r, cap, temperature, seed, sink)
            for r, cap, sink in zip(requests, caps, sinks, strict=True)
        ]
        return [f.result() for f in futures]


class _Secret:
    """A value that never shows itself in a repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class GeminiHandler(AgentModelHandler[GeminiModel]):
    """RunInference handler: one ``generate_content`` per element, concurrently, results in input order.

    Same element/result contract as the other backends: elements carry
    ``.request: ModelRequest`` (or are one); output is ``PredictionResult(example=element,
    inference=ModelResponse, model_id=model)``. Failures are per element
    (``ModelResponse.error``), never an exception for the batch.

    Batching: a batch's requests run in parallel (up to ``max_concurrency``
    per worker process), and the batch is emitted when its slowest request
    ends; ``max_batch_size`` defaults to ``max_concurrency``.
    """

    METRICS_NAMESPACE = METRICS_NAMESPACE
    STREAMS_TEXT = True  # generate_content_stream for text steps (agents.backends.gemini_stream)

    def __init__(
        self,
        *,
        model: str = GEMINI_DEFAULT_MODEL,
        max_tokens: int = 96,
        max_concurrency: int = 8,
        api_key: str | None = None,
        vertexai: bool | None = None,
        project: str | None = None,
        location: str | None = None,
        base_url: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        thinking_budget: ThinkingBudget = "auto",
        max_attempts: int = 5,
        deadline_s: float = 60.0,
        attempt_timeout_s: float = 30.0,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 20.0,
        jitter_s: float = 1.0,
        max_batch_size: int | None = None,
        min_batch_size: int | None = None,
    ) -> None:
        if max_tokens < 1 or max_concurrency < 1:
            raise ValueError("need max_tokens >= 1 and max_concurrency >= 1")
        if not model:
            raise ValueError("a Gemini model name is required, e.g. gemini-2.5-flash")
        super().__init__(
            max_batch_size=max_batch_size if max_batch_size is not None else max_concurrency,
            min_batch_size=min_batch_size,
        )
        self._model_name = model
        self._max_tokens = max_tokens
        self._max_concurrency = max_concurrency
        self._api_key = _Secret(api_key) if api_key else None
        self._vertexai = vertexai
        self._project = project
        self._location = location
        self._base_url = base_url
        self._temperature = temperature
        self._seed = seed
        self._thinking_budget = thinking_budget
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            deadline_s=deadline_s,
            attempt_timeout_s=attempt_timeout_s,
            initial_backoff_s=initial_backoff_s,
            max_backoff_s=max_backoff_s,
            jitter_s=jitter_s,
        )

    def __repr__(self) -> str:
        key = "explicit" if self._api_key else "from environment"
        return (
            f"GeminiHandler(model={self._model_name!r}, max_concurrency={self._max_concurrency}, "
            f"base_url={self._base_url!r}, vertexai={self._vertexai!r}, api_key=<{key}>, policy={self.policy!r})"
        )

    def make_client(self) -> Any:
        """The ``genai.Client``: credentials from the arguments or the environment, SDK retries off."""
        from google import genai
        from google.genai import types

        http_options = types.HttpOptions(
            base_url=self._base_url,
            # The SDK can retry on its own (HttpRetryOptions); keep it to one attempt so only our policy retries.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        kwargs: dict[str, Any] = {"http_options": http_options}
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key.get()
        if self._vertexai is not None:
            kwargs["vertexai"] = self._vertexai
        if self._project:
            kwargs["project"] = self._project
        if self._location:
            kwargs["location"] = self._location
        try:
            return genai.Client(**kwargs)
        except ValueError as exc:
            raise ValueError(
                "no Gemini credentials: set GOOGLE_API_KEY (or GEMINI_API_KEY), or GOOGLE_GENAI_USE_VERTEXAI=true "
                f"with GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION ({exc})"
            ) from None

    def load_model(self) -> GeminiModel:
        return GeminiModel(
            self.make_client(),
            model=self._model_name,
            max_concurrency=self._max_concurrency,
            policy=self.policy,
            temperature=self._temperature,
            seed=self._seed,
            thinking_budget=self._thinking_budget,
        )

    def answer(
        self, model: GeminiModel, requests: Sequence[ModelRequest], caps: Sequence[int], args: Mapping[str, Any]
    ) -> list[ModelResponse]:
        # The sinks are bound to this (the bundle's) thread: fetch them here, the pool's threads cannot.
        outcomes = model.complete_all(
            requests, caps, temperature=args.get("temperature"), seed=args.get("seed"), sinks=sinks_for(len(requests))
        )
        # Beam counters only count on the bundle's own thread, not on the pool's: sum here.
        ns = self.get_metrics_namespace()
        Metrics.counter(ns, "gemini_requests").inc(len(outcomes))
        for name, value in (
            ("gemini_retries", sum(s.retries for _, s in outcomes)),
            ("gemini_rate_limited", sum(s.rate_limited for _, s in outcomes)),
            ("gemini_timeouts", sum(s.timeouts for _, s in outcomes)),
            ("gemini_errors", sum(1 for r, _ in outcomes if r.error)),
        ):
            if value:
                Metrics.counter(ns, name).inc(value)
        return [r for r, _ in outcomes]
