"""The local runner's output calls (BigQuery inserts, Pub/Sub publishes), sent off its one executor thread, in rounds.

Beam's local runner evaluates every bundle of every stage on one thread, so a bundle waiting for its ``Publish``
request or its eval rows' ``insertAll`` held up every other stage's bundles for that long, and each turn crosses
~20 stages. ``BackgroundOutput`` takes the rows and messages instead and sends them from one thread of its own,
in rounds: a round takes everything handed over since the last one and sends it as one insert per table, then
one publish request per topic. The cost of a call here is mostly per call, not per row (one insert into the
BigQuery emulator ~50 ms under load, whatever its size), so when the thread falls behind the rounds grow instead
of the queue.

Order: a topic's messages go out in the order handed over (one request, or consecutive ones, per round: a
session's replies stay in order), and a round sends its rows before its messages, so a row handed over before a
message never goes out after it. A turn's eval row is handed over before its reply (``WriteTurnEvals`` is one
stage after the agent, ``PublishReplies`` three), so it is inserted before the reply is published.

Nothing is lost by not waiting: the local runner holds each inbound message's ack until its reply or dead
letter is read back (``pipeline.local_acks``), so what is still queued at a kill is redelivered and answered
by the next process, and by that order its eval row is in before its ack is. A call that fails (after the
client's own retries) fails the next bundle that hands something over, as a failed wait did before, and at
most ``MAX_PENDING`` items wait: a bundle beyond that waits for the round in flight.

One instance per process (``install``, ``active``): the writer patch in ``pipeline.local_runner`` installs it,
``pipeline.bigquery.WriteRowsToBigQuery`` finds it. None on Dataflow, where each worker waits for its own calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

MAX_PENDING = 5000  # rows and messages handed over and not yet sent, before a bundle waits
CLOSE_TIMEOUT_S = 60.0  # how long closing waits for what is still queued

Send = Callable[[list[Any]], None]  # sends one round's items of one key, in order; raises if they were not sent

_ACTIVE: list[BackgroundOutput] = []  # the process's one instance while the local runner's patch is in


class BackgroundOutput:
    """Sends rows and messages from one thread, in rounds; a failed send raises at the next hand-over."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._rows: dict[Hashable, tuple[Send, list[Any]]] = {}
        self._messages: dict[Hashable, tuple[Send, list[Any]]] = {}
        self._pending = 0  # items handed over whose round is not done
        self._failure: Exception | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, name="supportflow-output", daemon=True)
        self._thread.start()

    def add_rows(self, key: Hashable, send: Send, rows: list[Any]) -> None:
        """Hand over rows for ``key`` (a table); a round sends all of a key's rows with the first ``send``."""
        self._add(self._rows, key, send, rows)

    def add_messages(self, key: Hashable, send: Send, messages: list[Any]) -> None:
        """Hand over messages for ``key`` (a topic), sent after the rows of their round, in order."""
        self._add(self._messages, key, send, messages)

    def wait(self, timeout: float | None = None) -> None:
        """Block until everything handed over is sent; raises a failure not raised yet."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending and self._failure is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{self._pending} output item(s) still unsent after {timeout} s")
                self._cond.wait(left)
            self._raise_failure()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        try:
            self.wait(timeout)
        except Exception as exc:  # noqa: BLE001 - closing: its messages are held and come back to the next process
            log.warning("output still failing at close (its messages are redelivered): %s", exc)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _add(self, group: dict[Hashable, tuple[Send, list[Any]]], key: Hashable, send: Send, items: list[Any]) -> None:
        if not items:
            return
        with self._cond:
            self._raise_failure()
            while self._pending >= self.max_pending and self._failure is None:
                self._cond.wait()
            self._raise_failure()
            if key in group:
                group[key][1].extend(items)
            else:
                group[key] = (send, list(items))
            self._pending += len(items)
            self._cond.notify_all()

    def _raise_failure(self) -> None:
        """Under the lock: raise the failure of an earlier round, once (its bundle is retried)."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._rows or self._messages or self._closed):
                    self._cond.wait()
                if not (self._rows or self._messages):
                    return
                batches = [*self._rows.values(), *self._messages.values()]  # the rows first
                self._rows, self._messages = {}, {}
            failure: Exception | None = None
            for send, items in batches:
                try:
                    send(items)
                except Exception as exc:  # noqa: BLE001 - raised at the next hand-over; the rest of the round goes on
                    log.warning("an output call failed (its bundle is retried): %s", exc)
                    failure = failure or exc
            with self._cond:
                self._pending -= sum(len(items) for _, items in batches)
                self.rounds += 1
                if failure is not None and self._failure is None:
                    self._failure = failure
                self._cond.notify_all()


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
