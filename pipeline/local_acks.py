"""Acks of the local runner's inbound messages, held until each message's outcome is read back.

Beam's local streaming runner acks every Pub/Sub message right after its pull
(``_PubSubReadEvaluator._read_from_pubsub``), before any stage has seen it, so a
killed process lost every message pulled but not yet answered (measured: 26 of
226 with a 3 s quiet window). With ``AckLedger`` an inbound message's ack is held until its outcome
is read back: a reply (hand-offs are replies of kind ``handoff``) on the reply-memory
subscription, or a dead letter from a stage that ends a message (``SETTLING_STAGES``)
on a subscription of the dead-letter topic the ledger reads itself. Payloads the
contract rejects are held too (by a digest of their bytes, which their dead letter
keeps). Leases are renewed to ``LEASE_S`` meanwhile: after a kill, Pub/Sub redelivers
a held message ``LEASE_S`` later at most. A restarted process reads both the memory
and the dead-letter subscriptions dry before it pulls inbound (the dead-letter one first seeked back, so
a dead letter its predecessor pulled but never acked is read too), so a message whose
outcome was published but not read back before the kill is known as settled, and
its redelivery is acked and dropped (as is any later redelivery or duplicate of a
settled message, within ``ANSWERED_MEMORY`` ids; a redelivery of a held message is
not emitted twice either). Only a message that gets no outcome at all (a lost turn)
is acked after ``MAX_HOLD_S``.

``PromptPullClient`` wraps the runner's subscriber client: pulls that return at once (the emulator
honours ``return_immediately``), up to ``MAX_MESSAGES``, and acks only what the ledger does not hold. An
empty pull naps ``EMPTY_NAP_S`` (an idle runner would spin) only once no subscription has delivered for
``NAP_AFTER_QUIET_S``: the nap blocks the runner's one thread, so under load it delayed every stage and
timer (about a third of that thread's time at 1,000 sessions, ``docs/performance.md``).
``pipeline/local_runner.py`` hands it to the runner.

What a kill still loses is the runner's state: sessions start again empty
(history, turn counter, seen ids). Dataflow keeps both (docs/architecture.md, "The local runner").
Who owns a session does not depend on that state (``pipeline.ownership``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.protobuf.timestamp_pb2 import Timestamp
from google.pubsub_v1.types import PullResponse, ReceivedMessage

from contract.messages import DeadLetter, parse_inbound, parse_reply

log = logging.getLogger(__name__)

MAX_MESSAGES = 100
EMPTY_NAP_S = 0.05
NAP_AFTER_QUIET_S = 0.5  # an empty pull naps only when no subscription has delivered for this long
LEASE_S = 10  # a killed process's unanswered messages come back this long after its last lease extension
EXTEND_EVERY_S = 3.0
MAX_HOLD_S = 600.0
ANSWERED_MEMORY = 20_000  # message ids whose reply was read, for dropping redeliveries (~3 MB when full)
CATCH_UP_MAX_S = 30.0  # inbound waits at most this long for the memory subscription to be read dry
ACK_BATCH = 1000  # ack ids per request (Pub/Sub caps a request at 512 KB)
SETTLE_POLL_S = 0.1  # the dead-letter read-back's nap when its subscription is empty
REREAD_S = MAX_HOLD_S  # a restarted process re-reads the dead letters left unacked this far back (none is held longer)
# Dead letters that end a message (nothing else will come for it). Not the eval writers': their turn
# was answered, and a reply not yet published must keep its message held.
SETTLING_STAGES = frozenset({"ParseInbound", "CheckSessionOwner", "Sessions", "AgentTurn"})


def payload_key(data: bytes) -> str:
    """The ledger's key of a payload the contract rejects (it has no message id): a digest of its bytes."""
    return "payload:" + hashlib.sha256(data).hexdigest()


def settled_keys(dead_letter: DeadLetter) -> list[str]:
    """What one dead letter settles: its message ids, or the rejected payload it keeps, if its stage ends messages."""
    if dead_letter.stage not in SETTLING_STAGES:
        return []
    if dead_letter.message_ids:
        return list(dead_letter.message_ids)
    if dead_letter.payload_encoding == "base64":
        return [payload_key(base64.b64decode(dead_letter.payload))]
    return [payload_key(dead_letter.payload.encode("utf-8"))]


@dataclass
class _Held:
    client: Any
    subscription: str
    since: float
    ack_ids: list[str] = field(default_factory=list)
    pubsub_ids: set[str] = field(default_factory=set)


class AckLedger:
    """Inbound messages pulled but not answered yet, keyed by contract message id; shared by every reader."""

    def __init__(self, lease_s: int = LEASE_S, max_hold_s: float = MAX_HOLD_S) -> None:
        self.lease_s, self.max_hold_s = lease_s, max_hold_s
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._held_ack_ids: set[str] = set()
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._leaser: threading.Thread | None = None
        self.inbound: str | None = None
        self.memory: str | None = None
        self.settle: str | None = None  # full path of the dead-letter subscription read back
        self.dead_letter_topic: str | None = None
        self.caught_up = True
        self.dead_letters_caught_up = True
        self._settler: threading.Thread | None = None
        self._closed = threading.Event()  # set by close(): the lease and read-back threads end
        self._waiting_since: float | None = None
        self.dropped = 0  # redeliveries and late duplicates never emitted
        self.expired = 0  # acked after max_hold_s without a reply
        self._delivered_at = float("-inf")  # the last pull, of any subscription, that returned messages

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def configure(
        self,
        inbound: str | None,
        memory: str | None,
        settle: str | None = None,
        dead_letter_topic: str | None = None,
    ) -> None:
        """Subscription ids (last path part): whose acks to hold, and where the replies are read back;
        ``settle`` and ``dead_letter_topic`` (full paths): where dead letters are read back (created if missing)."""
        with self._lock:
            self.inbound, self.memory = inbound, memory
            self.settle = settle if inbound and memory else None
            self.dead_letter_topic = dead_letter_topic
            self.caught_up = not (inbound and memory)
            self.dead_letters_caught_up = self.settle is None

    def role(self, subscription: str) -> str | None:
        name = subscription.rsplit("/", 1)[-1]
        return "inbound" if name == self.inbound else "memory" if name == self.memory else None

    def may_pull(self, subscription: str) -> bool:
        # A restarted process first reads the replies its predecessor published but never read back;
        # only then the inbound redeliveries of those messages are known as answered and dropped.
        if self.role(subscription) != "inbound":
            return True
        self._start_settler()
        if self.caught_up and self.dead_letters_caught_up:
            return True
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        if now - self._waiting_since > CATCH_UP_MAX_S:  # outcomes keep coming (another process?): go on
            log.warning("reply memory / dead letters not read dry in %.0f s: pulling inbound anyway", CATCH_UP_MAX_S)
            self.caught_up = self.dead_letters_caught_up = True
        return self.caught_up and self.dead_letters_caught_up

    def admit(self, client: Any, subscription: str, received: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """What the runner may emit from one pull; holds the acks of inbound messages, acks redeliveries."""
        role = self.role(subscription)
        if role == "memory":
            answers: list[str] = []
            for rm in received:
                # Unreadable: ParseReplyEvent dead-letters it, and it releases nothing.
                with contextlib.suppress(Exception):
                    answers += parse_reply(rm.message.data).answers
            self.answered(answers)  # before the runner acks the replies: a kill in between loses no ack
            return list(received)
        if role != "inbound":
            return list(received)
        keep: list[ReceivedMessage] = []
        ack_now: list[str] = []
        lease: list[str] = []
        now = time.monotonic()
        with self._lock:
            for rm in received:
                try:
                    mid = parse_inbound(rm.message.data).message_id
                except Exception:  # noqa: BLE001 - as ParseInbound: no payload may crash the read
                    # Rejected: ParseInbound dead-letters it with its bytes, and that dead letter settles it.
                    mid = payload_key(rm.message.data) if self.settle else None
                    if mid is None:
                        keep.append(rm)  # no dead-letter read-back: acked by the runner, as Beam does
                        continue
                if mid in self._answered:
                    ack_now.append(rm.ack_id)
                    self.dropped += 1
                    continue
                held = self._held.get(mid)
                if held is None:
                    held = self._held[mid] = _Held(client, subscription, now)
                held.ack_ids.append(rm.ack_id)
                self._held_ack_ids.add(rm.ack_id)
                lease.append(rm.ack_id)
                if rm.message.message_id in held.pubsub_ids:
                    self.dropped += 1  # its lease lapsed while it was in the pipeline: already there
                    continue
                held.pubsub_ids.add(rm.message.message_id)
                keep.append(rm)
            if lease and self._leaser is None:
                self._leaser = threading.Thread(target=self._lease_loop, name="supportflow-ack-lease", daemon=True)
                self._leaser.start()
        _call(client.acknowledge, subscription, ack_now)
        # Shorten the subscription's deadline to ours: a killed process's messages come back sooner.
        _call(client.modify_ack_deadline, subscription, lease, ack_deadline_seconds=self.lease_s)
        return keep

    def pulled(self, subscription: str, delivered: int) -> float:
        """Note one pull's yield; returns how long the runner's thread should nap after it."""
        now = time.monotonic()
        if delivered:
            self._delivered_at = now
            return 0.0
        if not self.caught_up and self.role(subscription) == "memory":
            self.caught_up = True
        return EMPTY_NAP_S if now - self._delivered_at >= NAP_AFTER_QUIET_S else 0.0

    def _start_settler(self) -> None:
        with self._lock:
            if self.settle is None or self._settler is not None:
                return
            self._settler = threading.Thread(target=self._settle_loop, name="supportflow-dead-letters", daemon=True)
        self._settler.start()

    def _settle_loop(self) -> None:
        """Read the dead letters back: each one from a stage that ends messages settles them.

        Its own client and thread: the graph does not read dead letters (on Dataflow nothing needs to).
        The dead letters' own acks come after the inbound acks, so a kill in between loses nothing.
        """
        from google.cloud import pubsub_v1

        client = pubsub_v1.SubscriberClient()
        assert self.settle is not None
        if self.dead_letter_topic:
            with contextlib.suppress(gexc.AlreadyExists):
                client.create_subscription(request={"name": self.settle, "topic": self.dead_letter_topic}, timeout=10)
        self._reread_outstanding(client)
        while not self._closed.is_set():
            try:
                request = {"subscription": self.settle, "max_messages": MAX_MESSAGES, "return_immediately": True}
                got = client.pull(request=request, timeout=10).received_messages
            except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
                log.warning("reading dead letters back from %s failed: %s", self.settle, exc)
                self._closed.wait(1.0)
                continue
            if not got:
                self.dead_letters_caught_up = True
                self._closed.wait(SETTLE_POLL_S)
                continue
            keys: list[str] = []
            for rm in got:
                with contextlib.suppress(Exception):  # not a dead letter of ours: it settles nothing
                    keys += settled_keys(DeadLetter.model_validate_json(rm.message.data))
            self.answered(keys)
            _call(client.acknowledge, self.settle, [rm.ack_id for rm in got])

    def _reread_outstanding(self, client: Any) -> None:
        """Make the dead letters a killed predecessor pulled but never acked deliverable again, before the first pull.

        Its settler acks a dead letter after the inbound messages it settles; a kill in between leaves the dead
        letter leased to a dead process, invisible for the subscription's ack deadline, while the inbound message
        comes back after its own lease: read dry without it, the next process would dead-letter the message again.
        A seek to ``REREAD_S`` ago redelivers every unacked dead letter since then at once (acked ones stay acked).
        """
        when = Timestamp()
        when.FromSeconds(int(time.time() - REREAD_S))
        try:
            client.seek(request={"subscription": self.settle, "time": when}, timeout=10)
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            log.warning("seeking %s back failed (a dead letter may be published twice): %s", self.settle, exc)

    def unheld(self, ack_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [a for a in ack_ids if a not in self._held_ack_ids]

    def answered(self, message_ids: Iterable[str]) -> None:
        """Outcomes read back for these messages (message ids or payload keys): ack every delivery held."""
        acks: dict[tuple[Any, str], list[str]] = {}
        with self._lock:
            for mid in message_ids:
                self._answered[mid] = None
                self._answered.move_to_end(mid)
                held = self._held.pop(mid, None)
                if held is not None:
                    acks.setdefault((held.client, held.subscription), []).extend(held.ack_ids)
                    self._held_ack_ids.difference_update(held.ack_ids)
            while len(self._answered) > ANSWERED_MEMORY:
                self._answered.popitem(last=False)
        for (client, subscription), ids in acks.items():
            _call(client.acknowledge, subscription, ids)

    def _lease_loop(self) -> None:
        # A thread, not the pulls: a long bundle (a slow model) would otherwise let leases lapse.
        while not self._closed.wait(EXTEND_EVERY_S):
            self.extend()

    def close(self) -> None:
        """End the lease and read-back threads (what is held stays unacked: Pub/Sub redelivers it)."""
        self._closed.set()

    def extend(self) -> None:
        """Renew every held lease; ack what was held longer than ``max_hold_s`` (it will get no reply)."""
        now = time.monotonic()
        renew: dict[tuple[Any, str], list[str]] = {}
        give_up: dict[tuple[Any, str], list[str]] = {}
        with self._lock:
            for mid, held in list(self._held.items()):
                target = give_up if now - held.since > self.max_hold_s else renew
                target.setdefault((held.client, held.subscription), []).extend(held.ack_ids)
                if target is give_up:
                    del self._held[mid]
                    self._held_ack_ids.difference_update(held.ack_ids)
                    self.expired += 1
        if give_up:
            log.warning("acked %d message(s) held over %.0f s without an outcome (%d so far)",
                        sum(map(len, give_up.values())), self.max_hold_s, self.expired)  # fmt: skip
        for (client, subscription), ids in give_up.items():
            _call(client.acknowledge, subscription, ids)
        for (client, subscription), ids in renew.items():
            _call(client.modify_ack_deadline, subscription, ids, ack_deadline_seconds=self.lease_s)


def _call(method: Any, subscription: str, ack_ids: list[str], **kwargs: Any) -> None:
    """Ack or modack in batches; a failure only means a redelivery later (then dropped or answered), so log it."""
    for i in range(0, len(ack_ids), ACK_BATCH):
        try:
            method(subscription=subscription, ack_ids=ack_ids[i : i + ACK_BATCH], **kwargs)
        except (gexc.GoogleAPICallError, gexc.RetryError, ValueError) as exc:  # ValueError: client closed
            log.warning("%s on %s failed: %s", getattr(method, "__name__", method), subscription, exc)


class PromptPullClient:
    """The runner's subscriber client, pulling at once and acking what ``ledger`` does not hold."""

    def __init__(self, client: Any, ledger: AckLedger) -> None:
        self._client = client
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pull(self, subscription: str, max_messages: int, timeout: float) -> Any:
        request = {
            "subscription": subscription,
            "max_messages": max(max_messages, MAX_MESSAGES),
            "return_immediately": True,
        }
        if not self._ledger.may_pull(subscription):
            time.sleep(EMPTY_NAP_S)
            return PullResponse()
        response = self._client.pull(request=request, timeout=timeout)
        nap = self._ledger.pulled(subscription, len(response.received_messages))
        if not response.received_messages:
            time.sleep(nap)
            return response
        keep = self._ledger.admit(self._client, subscription, response.received_messages)
        return PullResponse(received_messages=keep)

    def acknowledge(self, subscription: str, ack_ids: list[str], **kwargs: Any) -> None:
        # The runner acks everything it pulled at once: pass on only what the ledger does not hold.
        ack_ids = self._ledger.unheld(ack_ids)
        if ack_ids:
            self._client.acknowledge(subscription=subscription, ack_ids=ack_ids, **kwargs)
