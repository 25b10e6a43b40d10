"""A terminal chat client: publishes what you type, prints the agent's replies.

It is the smallest honest frontend: messages go to the inbound topic in the
contract's shape; replies come from its own subscription on the reply topic
(created at start, deleted at exit) and are filtered by session id. A reply
delivered twice by Pub/Sub is shown once (keyed by turn id).

While a reply is written, its deltas (``contract.deltas``, a private subscription on the delta
topic) are shown in place as they arrive, ordered, de-duplicated and checked by
``stack.delta_view.DeltaView``; the final reply replaces them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import uuid
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from contract.binding import SESSION_BINDING_KEY_ENV, mint_session_id, parse_keys
from contract.deltas import ReplyDelta, parse_delta
from contract.messages import AgentReply, ContractError, InboundMessage, ReplyKind, parse_reply
from pipeline.options import DELTA_TOPIC, INBOUND_TOPIC, REPLY_TOPIC
from stack.delta_view import DeltaView


class ReplyListener:
    """Streaming-pull subscriber on a private subscription to the reply topic."""

    def __init__(
        self, project: str, name: str | None = None, sessions: set[str] | None = None, deltas: bool = False
    ) -> None:
        self.project = project
        self.sessions = sessions  # None: every session
        self.replies: queue.Queue[AgentReply] = queue.Queue()
        self.deltas: queue.Queue[ReplyDelta] = queue.Queue()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._sub = pubsub_v1.SubscriberClient()
        self.subscription = self._sub.subscription_path(project, name or f"chat-replies-term-{uuid.uuid4().hex[:8]}")
        self._sub.create_subscription(
            request={
                "name": self.subscription,
                "topic": self._sub.topic_path(project, REPLY_TOPIC),
                "enable_message_ordering": True,
                "ack_deadline_seconds": 30,
            }
        )
        self._future = self._sub.subscribe(self.subscription, self._on_message)
        self.delta_subscription: str | None = None
        self._delta_future = None
        if deltas:
            path = self._sub.subscription_path(project, f"{self.subscription.rsplit('/', 1)[1]}-deltas")
            try:
                self._sub.create_subscription(
                    request={
                        "name": path,
                        "topic": self._sub.topic_path(project, DELTA_TOPIC),
                        "ack_deadline_seconds": 10,
                    }
                )
            except gexc.NotFound:
                pass  # no delta topic (an older stack): replies only
            else:
                self.delta_subscription = path
                self._delta_future = self._sub.subscribe(path, self._on_delta)

    def _on_delta(self, message: pubsub_v1.subscriber.message.Message) -> None:
        message.ack()  # a delta is worth something for seconds: never redelivered
        try:
            delta = parse_delta(message.data)
        except ContractError:
            return
        if self.sessions is None or delta.session_id in self.sessions:
            self.deltas.put(delta)

    def _on_message(self, message: pubsub_v1.subscriber.message.Message) -> None:
        try:
            reply = parse_reply(message.data)
        except ContractError:
            message.ack()  # not ours to fix; the pipeline dead-letters what it produced badly
            return
        if self.sessions is None or reply.session_id in self.sessions:
            with self._lock:
                fresh = reply.turn_id not in self._seen
                self._seen.add(reply.turn_id)
            if fresh:
                self.replies.put(reply)
        message.ack()

    def close(self) -> None:
        for future in (self._future, self._delta_future):
            if future is None:
                continue
            future.cancel()
            with contextlib.suppress(Exception):  # a cancelled future raises; nothing to do at shutdown
                future.result(timeout=5)
        for path in (self.subscription, self.delta_subscription):
            if path is not None:
                with contextlib.suppress(gexc.GoogleAPICallError):
                    self._sub.delete_subscription(request={"subscription": path})
        self._sub.close()


def new_session_id(customer_id: str) -> str:
    """A session id bound to the customer when the stack's pipeline checks bindings (contract/binding.py)."""
    keys = parse_keys(os.environ.get(SESSION_BINDING_KEY_ENV))
    return mint_session_id(keys, customer_id) if keys else f"term-{uuid.uuid4().hex[:12]}"


class ChatSession:
    def __init__(self, project: str, customer_id: str, session_id: str | None = None) -> None:
        self.project = project
        self.customer_id = customer_id
        self.session_id = session_id or new_session_id(customer_id)
        self._pub = pubsub_v1.PublisherClient()
        self._topic = self._pub.topic_path(project, INBOUND_TOPIC)
        self.unanswered = 0  # messages sent and not yet answered (a delta needs a turn in flight)

    def send(self, text: str) -> InboundMessage:
        msg = InboundMessage(
            session_id=self.session_id,
            customer_id=self.customer_id,
            message_id=uuid.uuid4().hex,
            text=text,
            sent_at=datetime.now(UTC),
        )
        self._pub.publish(self._topic, msg.to_bytes(), session_id=self.session_id).result(timeout=30)
        self.unanswered += 1
        return msg


def repl(project: str, customer_id: str) -> None:
    """Interactive loop: type a line to send it; replies print as they arrive."""
    chat = ChatSession(project, customer_id)
    listener = ReplyListener(project, sessions={chat.session_id}, deltas=True)
    stop = threading.Event()
    view = DeltaView(chat.session_id, waiting=lambda: chat.unanswered > 0)

    def printer() -> None:
        while not stop.is_set():
            try:
                d = listener.deltas.get_nowait()
            except queue.Empty:
                pass
            else:
                shown = view.add(d)
                if shown is not None:  # the partial reply, rewritten in place (a retraction empties it)
                    print(f"\r\x1b[K[agent…] {shown or '…'}", end="", flush=True)
                continue
            try:
                r = listener.replies.get(timeout=0.05)
            except queue.Empty:
                continue
            view.final(r.turn_id)
            chat.unanswered = max(0, chat.unanswered - len(r.answers))
            tag = {ReplyKind.REPLY: "agent", ReplyKind.HANDOFF: "agent→human", ReplyKind.ERROR: "error"}[r.kind]
            print(f"\r\x1b[K[{tag}] {r.text}\n  ({r.model}, {r.timings.total_ms:.0f} ms)\n> ", end="", flush=True)

    threading.Thread(target=printer, daemon=True).start()
    print(f"Chatting as customer {customer_id} in session {chat.session_id}. Ctrl-D or /quit to stop.")
    try:
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if line.strip() in {"/quit", "/exit"}:
                break
            if line.strip():
                chat.send(line)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        listener.close()
        print()


if __name__ == "__main__":
    import os

    from tools.packs import load_pack

    customer = sys.argv[1] if len(sys.argv) > 1 else load_pack().demo_customer
    repl(os.environ.get("GOOGLE_CLOUD_PROJECT", "supportflow-local"), customer)
