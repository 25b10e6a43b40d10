"""Publishing reply deltas and retractions (``contract.deltas``) from the workers, one publisher per process.

The model handler streams (``AgentModelHandler.stream_deltas``, ``agents.streaming``): while a text
step generates, its released pieces are published here from inside RunInference, as they are
released, not when the bundle ends. Beam's ``WriteToPubSub`` cannot do that (it publishes what a
transform emits, when its bundle is done), so this module owns a ``PublisherClient`` of its own:

- **one per worker process** (``_PUBLISHERS``, keyed by topic and settings), created lazily on the
  worker, shared by every DoFn thread and every step of the process (the client is thread-safe and
  batches across threads); on Dataflow each SDK harness process of a worker VM holds one;
- **batching for small messages**: a delta is ~300 bytes. ``max_latency`` 10 ms (a delta may wait at
  most that long for company), up to 100 messages or 64 KiB per publish request; no ordering key (the
  clients order by ``seq``, and a failed publish never pauses a key the final reply uses);
- **bounded**: flow control of 2,000 outstanding messages / 4 MiB; past it a delta is not published
  (``ERROR`` behaviour) and its turn streams no more: the final reply still comes, it replaces whatever
  the page shows. A delta whose publish fails later is logged and counted (``delta_publish_errors``);
- **retractions block**: ``SettleDeltas`` (before ``FinishTurn``) publishes a turn's retraction and
  waits for Pub/Sub's acknowledgement, so it is published before the final reply is handed to
  ``PublishReplies``.

Deltas are at-least-once (a retried bundle generates and publishes again, with the same seqs);
clients de-duplicate by ``(turn_id, seq)``. Nothing here touches session state or eval rows except
the counts in ``AgentState.stream``, which ``FinishTurn`` turns into ``first_text_ms``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from agents import stream_turn, streaming
from agents.model_io import ModelResponse
from agents.state import AgentState
from agents.streaming import GuardedReleaser, StreamProgress
from contract.deltas import DeltaKind, ReplyDelta

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "agent"
RETRACT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DeltaBatching:
    """The delta publisher's settings: small messages, sent within ``max_latency_s``."""

    max_latency_s: float = 0.01
    max_messages: int = 100
    max_bytes: int = 64 * 1024
    outstanding_messages: int = 2000
    outstanding_bytes: int = 4 * 1024 * 1024


class DeltaPublisher:
    """A ``PublisherClient`` for one topic, its errors counted (thread-safe; one per process and topic)."""

    def __init__(self, topic_path: str, batching: DeltaBatching) -> None:
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1 import types

        self.topic_path = topic_path
        self._client = pubsub_v1.PublisherClient(
            batch_settings=types.BatchSettings(
                max_bytes=batching.max_bytes, max_latency=batching.max_latency_s, max_messages=batching.max_messages
            ),
            publisher_options=types.PublisherOptions(
                flow_control=types.PublishFlowControl(
                    message_limit=batching.outstanding_messages,
                    byte_limit=batching.outstanding_bytes,
                    limit_exceeded_behavior=types.LimitExceededBehavior.ERROR,
                )
            ),
        )
        self._lock = threading.Lock()
        self.published = 0
        self.errors = 0

    def publish(self, delta: ReplyDelta) -> Future | None:
        """Hand one message to the client (batched); None if it could not even be queued."""
        try:
            future = self._client.publish(self.topic_path, delta.to_bytes(), **delta.attributes())
        except Exception as exc:  # noqa: BLE001 - flow control or a closed client: this delta is lost, never the turn
            self._failed(delta, exc)
            return None
        future.add_done_callback(lambda f: self._done(delta, f))
        return future

    def _done(self, delta: ReplyDelta, future: Future) -> None:
        exc = future.exception()
        if exc is None:
            with self._lock:
                self.published += 1
        else:
            self._failed(delta, exc)

    def _failed(self, delta: ReplyDelta, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
        log.warning("reply delta %s#%d not published: %s", delta.turn_id, delta.seq, exc)


_PUBLISHERS: dict[tuple[str, DeltaBatching], DeltaPublisher] = {}
_PUBLISHERS_LOCK = threading.Lock()


def publisher(topic_path: str, batching: DeltaBatching) -> DeltaPublisher:
    """The process's publisher for ``topic_path`` (created on first use)."""
    key = (topic_path, batching)
    with _PUBLISHERS_LOCK:
        if key not in _PUBLISHERS:
            _PUBLISHERS[key] = DeltaPublisher(topic_path, batching)
        return _PUBLISHERS[key]


def _delta(state: AgentState, seq: int, kind: DeltaKind, text: str = "", reason: str = "") -> ReplyDelta:
    turn = state.enriched.turn
    return ReplyDelta(session_id=turn.session_id, turn_id=turn.turn_id, seq=seq, kind=kind, text=text, reason=reason)


def retract(pub: DeltaPublisher, state: AgentState, reason: str) -> AgentState:
    """Publish a retraction of what ``state``'s deltas showed and wait for it; the state with the seq used."""
    progress = state.stream
    seq = progress.seq + 1
    future = pub.publish(_delta(state, seq, DeltaKind.RETRACT, reason=reason))
    if future is not None:
        # A failure is counted and logged by the publisher; the final reply still replaces the text.
        with contextlib.suppress(Exception):
            future.result(timeout=RETRACT_TIMEOUT_S)
    return replace(state, stream=replace(progress, seq=seq, shown="", retractions=progress.retractions + 1))


class _TurnStream:
    """One streaming request: its releaser, publishing each release as the next delta of the turn."""

    def __init__(self, state: AgentState, pub: DeltaPublisher) -> None:
        self.state = state
        self.progress = state.stream
        self._pub = pub
        self.releaser: GuardedReleaser = stream_turn.releaser_for(state, self._emit)
        self._sink = stream_turn.sink_for_step(state, self.releaser)

    def feed(self, piece: str) -> None:
        self._sink.feed(piece)

    def halt(self) -> None:
        self._sink.halt()

    def _emit(self, text: str) -> None:
        p = self.progress
        seq = p.seq + 1
        if self._pub.publish(_delta(self.state, seq, DeltaKind.DELTA, text=text)) is None:
            self.releaser.halt("publish failed")
            return
        first = p.first_at if p.first_at is not None else time.time()
        self.progress = replace(p, seq=seq, shown=p.shown + text, deltas=p.deltas + 1, first_at=first)

    def settle(self, response: ModelResponse) -> AgentState:
        self.releaser.finish(stream_turn.final_text_of(response))
        state = replace(self.state, stream=self.progress)
        if response.tool_calls and self.progress.shown:
            # A step that turned into tool calls: what it showed is not the reply. The next step starts afresh.
            state = retract(self._pub, state, "tool call")
        return state


class _StreamBatch:
    def __init__(self, batch: Sequence[Any], pub: DeltaPublisher) -> None:
        self._batch = list(batch)
        self._streams = {i: _TurnStream(e, pub) for i, e in enumerate(self._batch) if stream_turn.streams(e)}
        self._bound: Any = None

    def __enter__(self) -> _StreamBatch:
        self._bound = streaming.bind(self._streams)
        self._bound.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bound.__exit__(*exc)
        if exc[0] is not None:
            # The model call failed (RunInference fails the batch's turns): withdraw what they showed,
            # so the error reply that follows is preceded by a retraction as the contract promises.
            for stream in self._streams.values():
                if stream.progress.shown:
                    retract(stream._pub, replace(stream.state, stream=stream.progress), "model call failed")

    def settle(self, responses: Sequence[Any]) -> list[Any]:
        out = list(self._batch)
        deltas = Metrics.counter(METRICS_NAMESPACE, "reply_deltas")
        retractions = Metrics.counter(METRICS_NAMESPACE, "reply_retractions")
        for i, stream in self._streams.items():
            before = stream.state.stream
            out[i] = stream.settle(responses[i])
            deltas.inc(out[i].stream.deltas - before.deltas)
            retractions.inc(out[i].stream.retractions - before.retractions)
        return out


class PubSubDeltaStreamer:
    """The ``agents.streaming.DeltaStreamer`` of the pipeline: pickled with the handler, publishes on the worker."""

    def __init__(self, topic_path: str, batching: DeltaBatching | None = None) -> None:
        self.topic_path = topic_path
        self.batching = batching or DeltaBatching()

    def open(self, batch: Sequence[Any]) -> _StreamBatch:
        return _StreamBatch(batch, publisher(self.topic_path, self.batching))


class SettleDeltas(beam.DoFn):
    """A finished turn whose deltas showed something else than its final text: retract it, before the final.

    Pass-through: every state comes out as it came in (with the retraction's seq recorded), so every
    turn still ends exactly once in ``FinishTurn``.
    """

    def __init__(self, streamer: PubSubDeltaStreamer) -> None:
        self._streamer = streamer
        self.retractions = Metrics.counter(METRICS_NAMESPACE, "reply_retractions")

    def process(self, state: AgentState) -> Iterator[AgentState]:
        progress = state.stream
        if progress.shown and progress.shown != state.reply_text:
            pub = publisher(self._streamer.topic_path, self._streamer.batching)
            state = retract(pub, state, f"final {state.outcome.value} differs")
            self.retractions.inc()
        yield state


def first_text_ms(state: AgentState, total_ms: float) -> float:
    """Server receipt of the turn's first message -> its first visible text: the first delta, else the final."""
    first_at = state.stream.first_at
    if first_at is None:
        return total_ms
    received = state.enriched.turn.first_received_at.timestamp()
    return min(total_ms, max(0.0, (first_at - received) * 1000.0))


__all__ = [
    "DeltaBatching",
    "DeltaPublisher",
    "PubSubDeltaStreamer",
    "SettleDeltas",
    "StreamProgress",
    "first_text_ms",
    "publisher",
    "retract",
]
