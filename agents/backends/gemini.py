"""Gemini (Google's hosted models) through the ``google-genai`` client, as a Beam ModelHandler.

Not Beam's ``apache_beam.ml.inference.gemini_inference.GeminiModelHandler``:
that one sends a whole batch as one ``generate_content`` call and returns one
result, so with batches larger than one it drops elements. Here every element
is its own ``generate_content`` request, and a batch's requests run
concurrently on a thread pool of ``max_concurrency`` threads (one pool per
worker process, shared by all of the process's DoFn threads, like the model
object itself). Results come back one per element, in input order.

Mapping (``agents.model`` -> Gemini):
- system messages -> ``system_instruction`` (joined, in order);
- user -> role "user"; assistant -> role "model";
- tool results (role "tool", ``name`` = the function, ``tool_call_id``) ->
  ``function_response`` parts in a "user" turn (a JSON object content is the
  response as is; anything else is wrapped as ``{"output": ...}``);
  consecutive turns of one role are merged, as Gemini wants alternating turns;
- ``ModelRequest.tools`` (OpenAI ``function`` objects, bare or wrapped in
  ``{"type": "function", "function": ...}``) -> function declarations with
  ``parameters_json_schema`` (the JSON schema as is);
- function-call parts of the reply -> ``ToolCall(id, name, arguments=<JSON>)``;
  Gemini often gives no call id: one is made up (prefix ``gcall_``), and a made-up
  id is not sent back in the matching ``function_response``;
- ``usage_metadata`` -> ``prompt_tokens``; ``completion_tokens`` is candidates +
  thoughts tokens (both are billed as output); ``model_ms`` is the wall time of
  the whole call, retries and back-off included (what the turn waited).

Retries (tenacity, one ``Retrying`` per request; the client's own retries are
switched off so nothing multiplies): 408/429/5xx, timeouts, transport errors
and malformed (non-JSON) replies are retried with exponential back-off and
jitter, up to ``max_attempts`` attempts and a total ``deadline_s`` per request
(counted from when the request leaves the pool's queue);
a server retry hint (``google.rpc.RetryInfo.retryDelay`` in the error details,
else a ``Retry-After`` header) replaces the back-off for that wait (plus up to
10 % jitter). A hint that would overrun the deadline ends the retries at once.
Each attempt's HTTP timeout is ``min(attempt_timeout_s, time left)``. Whatever
fails for good (400, 403, retries exhausted, deadline) becomes
``ModelResponse(error=...)`` for that element only; its batch-mates are not
affected. Counters (namespace ``supportflow_gemini``): ``gemini_requests``,
``gemini_retries``, ``gemini_rate_limited``, ``gemini_timeouts``, ``gemini_errors``.

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

import email.utils
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import tenacity
from apache_beam.metrics import Metrics

from agents.backends.base import AgentModelHandler
from agents.model import ChatMessage, ModelRequest, ModelResponse, ToolCall

logger = logging.getLogger(__name__)

GEMINI_DEFAULT_MODEL = "gemini-2.5-flash"
METRICS_NAMESPACE = "supportflow_gemini"
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
SYNTHETIC_CALL_ID_PREFIX = "gcall_"
_CONTENT_FILTER = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})

ThinkingBudget = int | None | Literal["auto"]


# ---------------------------------------------------------------------------
# Request mapping
# ---------------------------------------------------------------------------


def _function_object(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return tool["function"]
    return tool


def function_declarations(tools: Sequence[dict[str, Any]]) -> list[Any]:
    """OpenAI-style function objects -> ``types.FunctionDeclaration`` (JSON schema passed through)."""
    from google.genai import types

    out = []
    for tool in tools:
        fn = _function_object(tool)
        kwargs: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            kwargs["description"] = fn["description"]
        if fn.get("parameters") is not None:
            kwargs["parameters_json_schema"] = fn["parameters"]
        out.append(types.FunctionDeclaration(**kwargs))
    return out


def _tool_result(content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        return {"output": content}
    return value if isinstance(value, dict) else {"output": value}


def _parts(message: ChatMessage) -> list[Any]:
    from google.genai import types

    if message.role == "tool":
        kwargs: dict[str, Any] = {"name": message.name or "tool", "response": _tool_result(message.content)}
        if message.tool_call_id and not message.tool_call_id.startswith(SYNTHETIC_CALL_ID_PREFIX):
            kwargs["id"] = message.tool_call_id
        return [types.Part(function_response=types.FunctionResponse(**kwargs))]
    parts = [types.Part(text=message.content)] if message.content else []
    # Forward compatible: an assistant message that carries its tool calls replays them.
    for call in getattr(message, "tool_calls", None) or ():
        kwargs = {"name": call.name, "args": call.parsed_arguments()}
        if call.id and not call.id.startswith(SYNTHETIC_CALL_ID_PREFIX):
            kwargs["id"] = call.id
        parts.append(types.Part(function_call=types.FunctionCall(**kwargs)))
    return parts


def to_contents(messages: Sequence[ChatMessage]) -> tuple[str | None, list[Any]]:
    """(system instruction or None, Gemini contents) for a conversation."""
    from google.genai import types

    system = [m.content for m in messages if m.role == "system" and m.content]
    contents: list[Any] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message)
        if not parts:
            continue
        if contents and contents[-1].role == role:
            contents[-1].parts.extend(parts)
        else:
            contents.append(types.Content(role=role, parts=parts))
    return ("\n\n".join(system) if system else None), contents


# ---------------------------------------------------------------------------
# Response mapping
# ---------------------------------------------------------------------------


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", None) or getattr(value, "name", None) or value)


def _finish_reason(raw: str, has_tool_calls: bool) -> str:
    if raw == "STOP" or (not raw and has_tool_calls):
        return "tool_calls" if has_tool_calls else "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _CONTENT_FILTER:
        return "content_filter"
    return raw.lower()


def to_model_response(response: Any, *, model: str, model_ms: float) -> ModelResponse:
    """A ``types.GenerateContentResponse`` as a ``ModelResponse``."""
    usage = response.usage_metadata
    prompt_tokens = int(getattr(usage, "prompt_token_count", None) or 0)
    completion_tokens = int(getattr(usage, "candidates_token_count", None) or 0) + int(
        getattr(usage, "thoughts_token_count", None) or 0
    )
    if not response.candidates:
        feedback = response.prompt_feedback
        reason = _enum_name(getattr(feedback, "block_reason", None)) or "no candidates"
        return ModelResponse(
            text="",
            prompt_tokens=prompt_tokens,
            model_ms=model_ms,
            model=model,
            finish_reason="content_filter",
            error=f"gemini returned no answer: prompt blocked ({reason})",
        )
    candidate = response.candidates[0]
    parts = (candidate.content.parts if candidate.content else None) or []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    calls = []
    for i, part in enumerate(p for p in parts if p.function_call):
        fc = part.function_call
        calls.append(
            ToolCall(
                id=fc.id or f"{SYNTHETIC_CALL_ID_PREFIX}{uuid.uuid4().hex[:12]}_{i}",
                name=fc.name or "",
                arguments=json.dumps(fc.args or {}),
            )
        )
    return ModelResponse(
        text=text,
        tool_calls=tuple(calls),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model_ms=model_ms,
        model=model,
        finish_reason=_finish_reason(_enum_name(candidate.finish_reason), bool(calls)),
    )


# ---------------------------------------------------------------------------
# Retry policy
# ---------------------------------------------------------------------------


class DeadlineExceeded(Exception):
    """No time left in the request's deadline for another attempt."""


def _parse_duration(value: Any) -> float | None:
    """A protobuf Duration as JSON ("1.5s") or as a dict ({"seconds": 1, "nanos": 5e8})."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return max(0.0, float(value[:-1]))
        except ValueError:
            return None
    if isinstance(value, dict):
        try:
            return max(0.0, float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9)
        except (TypeError, ValueError):
            return None
    return None


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retry_hint_s(exc: BaseException | None) -> float | None:
    """The server's retry hint in seconds: RetryInfo.retryDelay in the error details, else Retry-After."""
    if exc is None:
        return None
    details = getattr(exc, "details", None)
    if isinstance(details, dict):
        error = details.get("error", details)
        for item in (error.get("details") if isinstance(error, dict) else None) or ():
            if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
                hint = _parse_duration(item.get("retryDelay"))
                if hint is not None:
                    return hint
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None:
        try:
            raw = headers.get("retry-after")
        except AttributeError:
            raw = None
        if raw:
            return _parse_retry_after(str(raw))
    return None


def _status_code(exc: BaseException) -> int | None:
    from google.genai import errors

    return exc.code if isinstance(exc, errors.APIError) else None


def _is_timeout(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, httpx.TimeoutException | TimeoutError)


def is_retryable(exc: BaseException) -> bool:
    """Worth another attempt: 408/429/5xx, timeouts and transport errors, malformed replies."""
    import httpx
    from google.genai import errors

    if isinstance(exc, DeadlineExceeded):
        return False
    if isinstance(exc, errors.APIError):
        return exc.code in RETRYABLE_STATUSES
    if isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError):
        return True
    # A 200 whose body is not JSON (a cut-off reply): the request itself was fine.
    return isinstance(exc, json.JSONDecodeError | errors.UnknownApiResponseError)


def describe_error(exc: BaseException) -> str:
    """A short, key-free description of a failure."""
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        return f"{exc.code} {exc.status or ''}: {exc.message or ''}".strip()
    if _is_timeout(exc):
        return f"timeout ({type(exc).__name__})"
    if isinstance(exc, json.JSONDecodeError | errors.UnknownApiResponseError):
        return "malformed response (not JSON)"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries. ``deadline_s`` bounds everything: attempts and waits."""

    max_attempts: int = 5
    deadline_s: float = 60.0
    attempt_timeout_s: float = 30.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 20.0
    jitter_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.deadline_s <= 0 or self.attempt_timeout_s <= 0:
            raise ValueError("need max_attempts >= 1, deadline_s > 0, attempt_timeout_s > 0")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.jitter_s < 0:
            raise ValueError("back-off values must be >= 0")


class _Wait(tenacity.wait.wait_base):
    """The server's retry hint when there is one (plus up to 10 % jitter), else exponential back-off with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = tenacity.wait_exponential_jitter(
            initial=policy.initial_backoff_s, max=policy.max_backoff_s, jitter=policy.jitter_s
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hint = retry_hint_s(exc)
        if hint is not None:
            return hint * (1.0 + random.uniform(0.0, 0.1))
        return self._backoff(retry_state)


@dataclass
class CallStats:
    """What happened to one request (summed into Beam counters by the bundle's thread)."""

    attempts: int = 0
    rate_limited: int = 0
    timeouts: int = 0

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


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
        self, request: ModelRequest, max_tokens: int, temperature: float | None = None, seed: int | None = None
    ) -> tuple[ModelResponse, CallStats]:
        """One request, retried per the policy. Never raises: failures come back as ``error``."""
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
                return self._client.models.generate_content(model=self.model_name, contents=contents, config=config)
            except Exception as exc:  # counted here, re-raised for tenacity to classify
                if _status_code(exc) == 429:
                    stats.rate_limited += 1
                if _is_timeout(exc):
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
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_exception(is_retryable),
                stop=tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_before_delay(policy.deadline_s),
                wait=_Wait(policy),
                before_sleep=before_sleep,
                reraise=True,
            )
            response = retrying(attempt, contents, config)
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
    ) -> list[tuple[ModelResponse, CallStats]]:
        """All requests concurrently (at most ``max_concurrency`` at a time), results in input order.

        ``caps[i]`` is request i's ``max_output_tokens`` (``agents.backends.base.token_caps``).
        """
        futures = [
            self._pool.submit(self.complete, r, cap, temperature, seed)
            for r, cap in zip(requests, caps, strict=True)
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
        outcomes = model.complete_all(requests, caps, temperature=args.get("temperature"), seed=args.get("seed"))
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
