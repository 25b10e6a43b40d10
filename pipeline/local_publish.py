"""The local runner's Pub/Sub publishes, sent off the runner's one executor thread, in the order handed over.

Beam's local runner evaluates every bundle of every stage on one thread, so a bundle of replies waiting for
its ``Publish`` request held up every other stage's bundles for that long (~20 ms a request at 1,000
sessions), and each turn crosses ~20 stages. ``BackgroundPublisher`` sends each request on one thread of its
own instead, in the order the bundles handed them over (a session's replies stay in order: one thread, and a
key's order holds within a request).

Nothing is lost by not waiting: the local runner holds each inbound message's ack until its reply or dead
letter is read back (``pipeline.local_acks``), so a request still queued at a kill is redelivered and
answered by the next process. A request that fails (after the client's own retries) fails the next bundle
that publishes, as a failed wait did before, and at most ``MAX_PENDING`` requests are in flight: a flush
beyond that waits for the oldest.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

MAX_PENDING = 64  # publish requests in flight before a flush waits for the oldest
CLOSE_TIMEOUT_S = 60.0  # how long closing waits for the requests still queued


class BackgroundPublisher:
    """Runs publish calls on one thread, first in first out; a failed call raises at the next ``submit``."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supportflow-publish")
        self._pending: deque[Future[Any]] = deque()
        self._lock = threading.Lock()

    def submit(self, publish: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Queue ``publish(*args, **kwargs)``; raises the error of an earlier call that failed (its bundle is
        retried)."""
        with self._lock:
            self._settle(block=len(self._pending) >= self.max_pending)
            self._pending.append(self._pool.submit(publish, *args, **kwargs))

    def wait(self, timeout: float | None = None) -> None:
        """Block until every queued request is sent; raises the first failure."""
        with self._lock:
            while self._pending:
                self._pending.popleft().result(timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        try:
            self.wait(timeout)
        except Exception as exc:  # noqa: BLE001 - closing: its messages are held and come back to the next process
            log.warning("publishes still failing at close (their messages are redelivered): %s", exc)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _settle(self, block: bool) -> None:
        """Drop the requests done (raising the first failure); with ``block``, wait for the oldest first."""
        if block and self._pending:
            self._pending.popleft().result()
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()
