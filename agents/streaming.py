"""Streaming a text step's reply as it is written, released only where the output guardrails passed it.

Three parts, none of which knows Pub/Sub (the pipeline's ``pipeline.deltas`` publishes):

- ``GuardedReleaser``: fed the model's raw text piece by piece; releases text only at a sentence or
  clause boundary (``.``, ``!``, ``?``, ``;``, ``:``, ``,`` or a line break, followed by white space),
  and only when the text up to that boundary passes ``check`` unchanged (``agents.stream_turn`` makes
  ``check`` the output guardrails of ``agents.guardrails`` with the turn's own facts). The first prefix
  that fails, or that the guardrails would change (a redacted e-mail), stops the release for good: what
  comes after is never released, and the final reply decides (a retraction precedes it when it
  differs from what was shown). ``finish`` releases the rest when the whole reply passes unchanged.
- sinks bound per RunInference batch: ``AgentModelHandler.run_inference`` opens a ``DeltaStreamer``
  (the pipeline's), which binds a ``TextSink`` per streaming element with ``bind``; a backend's
  ``answer`` asks ``sink_for(i)`` for request i's sink (in the bundle's thread: a backend that runs
  requests on a pool fetches the sinks first) and, when there is one, generates with its streaming call
  and feeds every text piece to it; ``halt`` when a function call shows up (tool steps never stream).
- ``StreamProgress``: what a turn's deltas have shown so far, carried in ``AgentState.stream`` from one
  step to the next and to the end of the turn (never into session state).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# A boundary: sentence or clause punctuation (or a line break), then white space. Text is released
# up to and including the punctuation; a boundary is known only once the white space after it arrived.
BOUNDARY = re.compile(r"(?:[.!?;:,\u2026]+[\"')\]]*(?=\s)|\n)")
MIN_RELEASE_CHARS = 1


@dataclass(frozen=True)
class StreamProgress:
    """What a turn's deltas have done so far: the last seq used, the text shown since the last retraction."""

    seq: int = 0
    shown: str = ""
    deltas: int = 0
    retractions: int = 0
    first_at: float | None = None  # epoch seconds when the first delta was handed to its publisher


@runtime_checkable
class TextSink(Protocol):
    """Where a backend puts the text of a streaming request while it is generated."""

    def feed(self, piece: str) -> None:
        """The next piece of raw model text (content only: no JSON, no function calls)."""

    def halt(self) -> None:
        """Nothing more from this request may be released (a function call started: a tool step)."""


class GuardedReleaser:
    """Releases a reply's text by sentence or clause, each release checked as the whole text up to it.

    ``check(prefix) -> bool`` says whether ``prefix`` (the stripped text from the start of the reply up
    to a boundary) may be shown exactly as it is. ``emit(text)`` publishes one release. ``released`` is
    the concatenation of everything emitted; it always equals a prefix of the model's left-stripped text.
    """

    def __init__(self, check: Callable[[str], bool], emit: Callable[[str], None]) -> None:
        self._check = check
        self._emit = emit
        self._raw: list[str] = []
        self._text = ""
        self._scanned = 0  # boundaries before this index of the stripped text are already handled
        self.released = ""
        self.stopped = False
        self.stop_reason = ""

    def feed(self, piece: str) -> None:
        if self.stopped or not piece:
            return
        self._raw.append(piece)
        self._text = "".join(self._raw).lstrip()
        cut = None
        for m in BOUNDARY.finditer(self._text, self._scanned):
            cut = m.end()
        if cut is None or cut <= len(self.released):
            return
        self._scanned = cut
        self._try_release(self._text[:cut].rstrip())

    def halt(self, reason: str = "tool call") -> None:
        if not self.stopped:
            self.stopped, self.stop_reason = True, reason

    def finish(self, final_text: str | None) -> None:
        """The model is done; ``final_text`` is the reply it will be (None: not a reply, release nothing)."""
        if self.stopped or final_text is None:
            self.halt("not a final text")
            return
        if final_text.startswith(self.released):
            self._try_release(final_text)
        self.halt("finished")

    def _try_release(self, prefix: str) -> None:
        if len(prefix) < len(self.released) + MIN_RELEASE_CHARS or not prefix.startswith(self.released):
            return
        if not self._check(prefix):
            self.halt("guardrails")
            return
        piece = prefix[len(self.released) :]
        self.released = prefix
        self._emit(piece)


# ---------------------------------------------------------------------------
# Sinks bound per batch (set by the RunInference handler, read by the backend)
# ---------------------------------------------------------------------------

_SINKS: ContextVar[Mapping[int, TextSink] | None] = ContextVar("supportflow_text_sinks", default=None)


@contextmanager
def bind(sinks: Mapping[int, TextSink]) -> Iterator[None]:
    """Make ``sinks`` (batch index -> sink) what ``sink_for`` answers inside the block."""
    token = _SINKS.set(dict(sinks))
    try:
        yield
    finally:
        _SINKS.reset(token)


def sink_for(index: int) -> TextSink | None:
    """The sink of the batch's request ``index``, or None when that request must not stream."""
    sinks = _SINKS.get()
    return None if sinks is None else sinks.get(index)


def sinks_for(count: int) -> list[TextSink | None]:
    return [sink_for(i) for i in range(count)]


class DeltaStreamer(Protocol):
    """What ``AgentModelHandler`` asks to stream a batch (``pipeline.deltas.PubSubDeltaStreamer``)."""

    def open(self, batch: Sequence[Any]) -> StreamBatch: ...


class StreamBatch(Protocol):
    """One batch's streams: a context manager binding the sinks, then ``settle`` with the responses."""

    def __enter__(self) -> StreamBatch: ...

    def __exit__(self, *exc: object) -> None: ...

    def settle(self, responses: Sequence[Any]) -> list[Any]:
        """The batch's elements, each with its stream progress recorded (same order, same length)."""
        ...
