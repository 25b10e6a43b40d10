"""Pub/Sub side of the web process: one reply subscription fanned out to many sockets.

- At start the hub creates two subscriptions of its own (random suffix, so
  several web processes each see every reply): ``chat-replies-web-<hex>`` on the
  reply topic, with message ordering (replies carry the session id as ordering
  key, so a session's turns arrive in order), and ``chat-dead-letters-web-<hex>``
  on the dead-letter topic for the operator view. Both are deleted at stop; an
  expiration policy lets Pub/Sub drop them if the process dies without stopping.
  A subscription only sees messages published after it exists.
- One streaming pull per subscription. The reply callback (a Pub/Sub client
  thread) counts the reply for the operator view, stores it in the session
  store, and only then acks; a failure before the ack nacks, so Pub/Sub
  redelivers. Fresh events are handed to the event loop, which routes them to
  the sockets listening on that session id (``listen``/``unlisten``, event loop
  only).
- Publishing: one publisher client; ``publish`` awaits the server's ack.
- Reply deltas (``contract.deltas``): a third subscription, ``chat-reply-deltas-web-<hex>`` on the
  delta topic, without ordering (the page sorts by seq). A delta is acked at once (it is worth
  seconds, never stored), checked (contract, its ``session_id`` attribute against its body, a session
  held here, a turn of that session, no final reply stored yet for it), and handed only to the
  sockets of its own session as ``{"type": "delta", ...}``; the page de-duplicates and sorts them.
  No delta topic (an older stack): the page gets final replies only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from contract.deltas import parse_delta
from contract.messages import ContractError, DeadLetter, InboundMessage, parse_reply
from pipeline.options import DEAD_LETTER_TOPIC, DELTA_TOPIC, INBOUND_TOPIC, REPLY_TOPIC
from web.ops import OpsStats
from web.store import Event, SessionStore, event_key

log = logging.getLogger("web.hub")

ACK_DEADLINE_S = 30
SUBSCRIPTION_TTL_S = 24 * 3600  # Pub/Sub's minimum expiration: orphans of killed processes go away
PUBLISH_TIMEOUT_S = 30.0
SOCKET_QUEUE_MAX = 1000  # events waiting for one slow socket before it is dropped (the page reconnects)


@dataclass(eq=False)
class Listener:
    """One socket's view of a session: events to send, and the keys it already got."""

    session_id: str
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(maxsize=SOCKET_QUEUE_MAX))
    sent: set[str] = field(default_factory=set)
    overflowed: bool = False

    def offer(self, event: Event) -> None:
        """Queue an event unless this socket already has it (event loop thread only)."""
        if self.overflowed:
            return
        key = event_key(event) if event.get("type") in ("message", "reply") else None
        if key is not None:
            if key in self.sent:
                return
            self.sent.add(key)
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # the socket's writer closes it; the page reconnects and gets the history


class PubSubHub:
    def __init__(
        self,
        project: str,
        store: SessionStore,
        ops: OpsStats,
        *,
        inbound_topic: str = INBOUND_TOPIC,
        reply_topic: str = REPLY_TOPIC,
        dead_letter_topic: str = DEAD_LETTER_TOPIC,
        delta_topic: str = DELTA_TOPIC,
        name_prefix: str = "web",
    ) -> None:
        self.project = project
        self.store = store
        self.ops = ops
        suffix = uuid.uuid4().hex[:10]
        self.reply_subscription_id = f"{reply_topic}-{name_prefix}-{suffix}"
        self.dead_letter_subscription_id = f"{dead_letter_topic}-{name_prefix}-{suffix}"
        self.delta_subscription_id = f"{delta_topic}-{name_prefix}-{suffix}"
        self._topics = {
            "inbound": inbound_topic,
            "reply": reply_topic,
            "dead_letter": dead_letter_topic,
            "delta": delta_topic,
        }
        self.dropped_deltas: dict[str, int] = defaultdict(int)  # reason -> count
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._futures: list[pubsub_v1.subscriber.futures.StreamingPullFuture] = []
        self._created: list[str] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the subscriptions and start pulling (blocking admin calls: run at startup)."""
        self._loop = loop
        self._subscriber = pubsub_v1.SubscriberClient()
        self._publisher = pubsub_v1.PublisherClient()
        try:
            for sub_id, topic, ordering, callback in (
                (self.reply_subscription_id, self._topics["reply"], True, self._on_reply),
                (self.dead_letter_subscription_id, self._topics["dead_letter"], False, self._on_dead_letter),
                (self.delta_subscription_id, self._topics["delta"], False, self._on_delta),
            ):
                path = self._subscriber.subscription_path(self.project, sub_id)
                try:
                    self._subscriber.create_subscription(
                        request={
                            "name": path,
                            "topic": self._subscriber.topic_path(self.project, topic),
                            "enable_message_ordering": ordering,
                            "ack_deadline_seconds": ACK_DEADLINE_S,
                            "expiration_policy": {"ttl": {"seconds": SUBSCRIPTION_TTL_S}},
                        },
                        timeout=15,
                    )
                except gexc.NotFound:
                    if callback != self._on_delta:
                        raise
                    log.warning("no delta topic %s: replies are shown whole", topic)
                    continue
                self._created.append(path)
                self._futures.append(self._subscriber.subscribe(path, callback))
        except BaseException:
            self.stop()
            raise
        log.info("subscribed: %s", ", ".join(self._created))

    def stop(self) -> None:
        for f in self._futures:
            f.cancel()
        for f in self._futures:
            with contextlib.suppress(Exception):  # a cancelled streaming pull raises on result(); nothing to do
                f.result(timeout=5)
        self._futures.clear()
        if self._subscriber is not None:
            for path in self._created:
                with contextlib.suppress(gexc.GoogleAPICallError):
                    self._subscriber.delete_subscription(request={"subscription": path}, timeout=10)
            self._created.clear()
            self._subscriber.close()
            self._subscriber = None
        if self._publisher is not None:
            with contextlib.suppress(Exception):  # flushing at shutdown: nothing left to report to
                self._publisher.stop()
            self._publisher = None

    @property
    def subscriptions(self) -> list[str]:
        return list(self._created)

    def pulling(self) -> bool:
        return bool(self._futures) and not any(f.done() for f in self._futures)

    # -- publishing ------------------------------------------------------------------

    async def publish(self, msg: InboundMessage) -> str:
        """Publish to the inbound topic with the session id attribute; returns the Pub/Sub message id."""
        if self._publisher is None:
            raise RuntimeError("hub not started")
        topic = self._publisher.topic_path(self.project, self._topics["inbound"])
        future = self._publisher.publish(topic, msg.to_bytes(), session_id=msg.session_id)
        return str(await asyncio.wait_for(asyncio.wrap_future(future), timeout=PUBLISH_TIMEOUT_S))

    # -- fan-out (event loop thread) -----------------------------------------------------

    def listen(self, session_id: str) -> Listener:
        listener = Listener(session_id)
        self._listeners[session_id].add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        group = self._listeners.get(listener.session_id)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.session_id]

    def fanout(self, session_id: str, event: Event) -> None:
        for listener in list(self._listeners.get(session_id, ())):
            listener.offer(event)

    def socket_count(self) -> int:
        return sum(len(g) for g in self._listeners.values())

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: the page gets the event from the history
            self._loop.call_soon_threadsafe(fn, *args)

    # -- Pub/Sub callbacks (client threads) ------------------------------------------------

    def _on_reply(self, message: pubsub_v1.subscriber.message.Message) -> None:
        try:
            reply = parse_reply(message.data)
        except ContractError as e:
            log.warning("reply topic: unparseable message %s: %s", message.message_id, e.reason)
            self.ops.record_bad_reply()
            message.ack()  # not ours to fix: the pipeline produced it
            return
        try:
            self.ops.record_reply(reply)
            event = self.store.add_reply(reply)  # stored before the ack: an acked reply is never lost
        except Exception:
            log.exception("storing reply %s failed; nacked for redelivery", reply.turn_id)
            message.nack()
            return
        message.ack()
        if event is not None:
            self._to_loop(self.fanout, reply.session_id, event)

    def _on_delta(self, message: pubsub_v1.subscriber.message.Message) -> None:
        message.ack()  # worth seconds, never stored: a lost delta only delays the text until the final
        try:
            delta = parse_delta(message.data)
        except ContractError as e:
            self._drop_delta("invalid", message.message_id, e.reason)
            return
        attr = message.attributes.get("session_id")
        if attr is not None and attr != delta.session_id:
            self._drop_delta("attribute mismatch", delta.turn_id, f"attribute {attr!r}")
            return
        reason = self.store.delta_drop_reason(delta.session_id, delta.turn_id)
        if reason is not None:
            self._drop_delta(reason, delta.turn_id, f"seq {delta.seq}")
            return
        event = {"type": "delta", **delta.model_dump(mode="json")}
        self._to_loop(self.fanout, delta.session_id, event)

    def _drop_delta(self, reason: str, what: str, detail: str) -> None:
        self.dropped_deltas[reason] += 1
        # Deltas of sessions other web processes hold are the normal case: not worth a warning.
        level = logging.DEBUG if reason == "unknown session" else logging.INFO
        log.log(level, "delta dropped (%s): %s %s", reason, what, detail)

    def _on_dead_letter(self, message: pubsub_v1.subscriber.message.Message) -> None:
        attrs = dict(message.attributes)
        try:
            dl = DeadLetter.model_validate_json(message.data)
            stage, reason, session_id, created = dl.stage, dl.reason, dl.session_id, dl.created_at.isoformat()
        except ValueError:  # pydantic's ValidationError is a ValueError; keep what the attributes say
            stage, reason, session_id, created = attrs.get("stage", "?"), attrs.get("reason", "?"), None, None
            with contextlib.suppress(ValueError, AttributeError):
                session_id = json.loads(message.data).get("session_id")
        self.ops.record_dead_letter(stage, reason, session_id, created)
        message.ack()
