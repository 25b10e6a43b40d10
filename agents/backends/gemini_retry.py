"""The Gemini backend's retry policy and error classification.

Retries (tenacity, one ``Retrying`` per request; the client's own retries are
switched off so nothing multiplies): 408/429/5xx, timeouts, transport errors
and malformed (non-JSON) replies are retried with exponential back-off and
jitter, up to ``max_attempts`` attempts and a total ``deadline_s`` per request
(counted from when the request leaves the pool's queue);
a server retry hint (``google.rpc.RetryInfo.retryDelay`` in the error details,
else a ``Retry-After`` header) replaces the back-off for that wait (plus up to
10 % jitter). A hint that would overrun the deadline ends the retries at once.
Each attempt's HTTP timeout (set by ``GeminiModel``) is ``min(attempt_timeout_s, time left)``. Whatever
fails for good (400, 403, retries exhausted, deadline) becomes
``ModelResponse(error=...)`` for that element only; its batch-mates are not
affected.
"""

from __future__ import annotations

import email.utils
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import tenacity

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})


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


def status_code(exc: BaseException) -> int | None:
    from google.genai import errors

    return exc.code if isinstance(exc, errors.APIError) else None


def is_timeout(exc: BaseException) -> bool:
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
    if is_timeout(exc):
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


class _HintOrBackoff(tenacity.wait.wait_base):
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


def retrying(policy: RetryPolicy, before_sleep: Any = None) -> tenacity.Retrying:
    """The ``tenacity.Retrying`` for one request under ``policy`` (a fresh one per request: it holds state)."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable),
        stop=tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_before_delay(policy.deadline_s),
        wait=_HintOrBackoff(policy),
        before_sleep=before_sleep,
        reraise=True,
    )
