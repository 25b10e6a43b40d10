"""The local runner's output calls (Pub/Sub publishes, BigQuery inserts), sent off its one executor thread, in order.

Beam's local runner evaluates every bundle of every stage on one thread, so a bundle waiting for its ``Publish``
request (~20 ms at 1,000 sessions) or its eval rows' ``insertAll`` (~20 ms into the BigQuery emulator) held up
every other stage's bundles for that long, and each turn crosses ~20 stages. ``BackgroundOutput`` runs those
calls on one thread of its own instead, in the order the bundles hand them over: a session's replies stay in
order (one thread, and a key's order holds within a request), and a turn's eval row is inserted before its reply
is published (``WriteTurnEvals`` is one stage after the agent, ``PublishReplies`` three).

Nothing is lost by not waiting: the local runner holds each inbound message's ack until its reply or dead
letter is read back (``pipeline.local_acks``), so a call still queued at a kill is redelivered and answered
by the next process, and by that order its eval row is in before its ack is. A call that fails (after the
client's own retries) fails the next bundle that hands one over, as a failed wait did before, and at most
``MAX_PENDING`` calls are in flight: a bundle beyond that waits for the oldest.

One instance per process (``install``, ``active``): the writer patch in ``pipeline.local_runner`` installs it,
``pipeline.bigquery.WriteRowsToBigQuery`` finds it. None on Dataflow, where each worker waits for its own calls.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

MAX_PENDING = 64  # calls in flight before a bundle waits for the oldest
CLOSE_TIMEOUT_S = 60.0  # how long closing waits for the calls still queued

_ACTIVE: list[BackgroundOutput] = []  # the process's one instance while the local runner's patch is in


class BackgroundOutput:
    """Runs output calls on one thread, first in first out; a failed call raises at the next ``submit``."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supportflow-output")
        self._pending: deque[Future[Any]] = deque()
        self._lock = threading.Lock()

    def submit(self, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Queue ``call(*args, **kwargs)``; raises the error of an earlier call that failed (its bundle is
        retried)."""
        with self._lock:
            self._settle(block=len(self._pending) >= self.max_pending)
            self._pending.append(self._pool.submit(call, *args, **kwargs))

    def wait(self, timeout: float | None = None) -> None:
        """Block until every queued call is done; raises the first failure."""
        with self._lock:
            while self._pending:
                self._pending.popleft().result(timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        try:
            self.wait(timeout)
        except Exception as exc:  # noqa: BLE001 - closing: its messages are held and come back to the next process
            log.warning("output calls still failing at close (their messages are redelivered): %s", exc)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _settle(self, block: bool) -> None:
        """Drop the calls done (raising the first failure); with ``block``, wait for the oldest first."""
        if block and self._pending:
            self._pending.popleft().result()
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()


def install() -> BackgroundOutput:
    """The process's instance, made on first use (the local runner's writer patch)."""
    if not _ACTIVE:
        _ACTIVE.append(BackgroundOutput())
    return _ACTIVE[-1]


def active() -> BackgroundOutput | None:
    """The instance if the local runner installed one; None elsewhere (Dataflow, tests that run no patches)."""
    return _ACTIVE[-1] if _ACTIVE else None


def close() -> None:
    """Send what is queued, then drop the instance (the patches are undone)."""
    while _ACTIVE:
        _ACTIVE.pop().close()
