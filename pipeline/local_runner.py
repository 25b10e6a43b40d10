"""Make Beam 2.77's local streaming runner usable with Pub/Sub.

Prompt pulls. The BundleBasedDirectRunner reads Pub/Sub with a blocking ``pull``
(up to 30 s when the subscription is empty, 10 messages at most) on its single
executor thread. With two subscriptions (inbound and reply memory) one idle pull
stalls the whole pipeline, session timers included: turns came back after 30-60 s
and bursts were split. This swaps in pulls that return at once (the emulator
honours ``return_immediately``), take up to 100 messages, and nap 50 ms when empty.

Acks held until answered. The runner acks every message right after its pull
(``_PubSubReadEvaluator._read_from_pubsub``), before any stage has seen it, so a
killed process lost every message pulled but not yet answered (measured: 26 of
226 with a 3 s quiet window). Given the inbound and reply-memory subscriptions,
an inbound message's ack is held until its reply is read back on the memory
subscription (a reply lists the message ids it answers), its lease renewed to
``LEASE_S`` meanwhile: after a kill, Pub/Sub redelivers it ``LEASE_S`` later at
most. A restarted process reads the memory subscription dry before it pulls
inbound, so a message whose reply was published but not read back before the
kill is known as answered, and its redelivery is acked and dropped (as is any
later redelivery or duplicate of an answered message, within ``ANSWERED_MEMORY``
ids; a redelivery of a held message is not emitted twice either). Payloads the
contract rejects are acked at once (dead-lettered, no reply will come); one
never answered otherwise (a customer mismatch, a lost turn) after ``MAX_HOLD_S``.
What a kill still loses is the runner's state: sessions start again empty
(history, turn counter, seen ids). Dataflow keeps both (docs/architecture.md, "The local runner").

Only for local runs: Dataflow and other runners have their own Pub/Sub readers
and never see this. The patch touches one private hook, so it is checked
against the Beam version it was written for.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from google.api_core import exceptions as gexc
from google.pubsub_v1.types import PullResponse, ReceivedMessage

from contract.messages import parse_inbound, parse_reply

log = logging.getLogger(__name__)

PATCHED_FOR = "2.77."
MAX_MESSAGES = 100
EMPTY_NAP_S = 0.05
LEASE_S = 10  # a killed process's unanswered messages come back this long after its last lease extension
EXTEND_EVERY_S = 3.0
MAX_HOLD_S = 600.0
ANSWERED_MEMORY = 20_000  # message ids whose reply was read, for dropping redeliveries (~3 MB when full)
CATCH_UP_MAX_S = 30.0  # inbound waits at most this long for the memory subscription to be read dry
MAX_SIGNATURES = 10_000  # function signatures kept (a pipeline's DoFns have a few hundred methods)
ACK_BATCH = 1000  # ack ids per request (Pub/Sub caps a request at 512 KB)


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
        self.caught_up = True
        self._waiting_since: float | None = None
        self.dropped = 0  # redeliveries and late duplicates never emitted
        self.expired = 0  # acked after max_hold_s without a reply

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def configure(self, inbound: str | None, memory: str | None) -> None:
        """Subscription ids (last path part): whose acks to hold, and where the replies are read back."""
        with self._lock:
            self.inbound, self.memory = inbound, memory
            self.caught_up = not (inbound and memory)

    def role(self, subscription: str) -> str | None:
        name = subscription.rsplit("/", 1)[-1]
        return "inbound" if name == self.inbound else "memory" if name == self.memory else None

    def may_pull(self, subscription: str) -> bool:
        # A restarted process first reads the replies its predecessor published but never read back;
        # only then the inbound redeliveries of those messages are known as answered and dropped.
        if self.caught_up or self.role(subscription) != "inbound":
            return True
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        if now - self._waiting_since > CATCH_UP_MAX_S:  # replies keep coming (another process?): go on
            log.warning("reply memory not read dry in %.0f s: pulling inbound anyway", CATCH_UP_MAX_S)
            self.caught_up = True
        return self.caught_up

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
                    keep.append(rm)  # rejected: the parser dead-letters it, no reply will come; acked by the runner
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

    def pulled_empty(self, subscription: str) -> None:
        if not self.caught_up and self.role(subscription) == "memory":
            self.caught_up = True

    def unheld(self, ack_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [a for a in ack_ids if a not in self._held_ack_ids]

    def answered(self, message_ids: Iterable[str]) -> None:
        """Replies read back for these messages: ack them (every delivery held)."""
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
        while True:
            time.sleep(EXTEND_EVERY_S)
            self.extend()

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


LEDGER = AckLedger()


class _PromptPull:
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
        if not response.received_messages:
            self._ledger.pulled_empty(subscription)
            time.sleep(EMPTY_NAP_S)
            return response
        keep = self._ledger.admit(self._client, subscription, response.received_messages)
        return PullResponse(received_messages=keep)

    def acknowledge(self, subscription: str, ack_ids: list[str], **kwargs: Any) -> None:
        # The runner acks everything it pulled at once: pass on only what the ledger does not hold.
        ack_ids = self._ledger.unheld(ack_ids)
        if ack_ids:
            self._client.acknowledge(subscription=subscription, ack_ids=ack_ids, **kwargs)


def use_prompt_pubsub_pulls(inbound_subscription: str | None = None, memory_subscription: str | None = None) -> bool:
    """Patch the local runner's Pub/Sub reader; returns False (and logs) when this Beam is not the one it fits.

    With both subscription ids, acks of inbound messages are held until their reply is read back from
    ``memory_subscription``; without, the runner acks on pull as Beam does.
    """
    if not beam.__version__.startswith(PATCHED_FOR):
        log.warning("Beam %s: local Pub/Sub pull patch not applied (written for %sx)", beam.__version__, PATCHED_FOR)
        return False
    LEDGER.configure(inbound_subscription, memory_subscription)
    from apache_beam.runners.direct import transform_evaluator as te

    evaluator = te._PubSubReadEvaluator
    if getattr(evaluator, "_supportflow_prompt_pull", False):
        return True
    original = evaluator._get_subscriber_client.__func__

    def prompt_client(cls: type, transform: Any) -> _PromptPull:
        return _PromptPull(original(cls, transform), LEDGER)

    evaluator._get_subscriber_client = classmethod(prompt_client)
    evaluator._supportflow_prompt_pull = True
    return True


# ------------------------------------------------------------------------------------------------
# DoFn specs, computed once per DoFn shape instead of per bundle
# ------------------------------------------------------------------------------------------------

_SPECS: dict[Any, tuple[set, set]] = {}
_SPECS_LOCK = threading.Lock()


def _specs_key(dofn: Any) -> Any:
    """What a DoFn's state and timer specs depend on, or None when it is not safe to say.

    The specs are read from the defaults of its methods' parameters: for a class, its methods (and
    any method bound on the instance); for a wrapped callable (``beam.Map``), that callable's code.
    """
    from apache_beam.transforms.core import DoFn

    bound = tuple(sorted(k for k, v in vars(dofn).items() if isinstance(v, types.MethodType)))
    if type(dofn)._process_argspec_fn is DoFn._process_argspec_fn:
        return (type(dofn), bound)
    code = getattr(getattr(dofn, "_fn", None), "__code__", None)
    return None if code is None else (type(dofn), bound, code)


def use_cached_dofn_specs() -> bool:
    """Make the local runner compute each DoFn's state/timer specs once, not at every bundle.

    The BundleBasedDirectRunner asks ``get_dofn_specs`` (an ``inspect.signature`` of every method of
    the DoFn) when it schedules a bundle and again when it starts one, on a fresh pickled copy each
    time: profiled under load, that was ~64% of the pipeline's CPU. The answer depends only on the
    DoFn's shape (``_specs_key``). A callable-wrapping DoFn found stateful is not cached (its specs
    are objects the runner keys state by). Local runs only, like the Pub/Sub patch.
    """
    if not beam.__version__.startswith(PATCHED_FOR):
        log.warning("Beam %s: DoFn spec cache not applied (written for %sx)", beam.__version__, PATCHED_FOR)
        return False
    from apache_beam.runners.direct import transform_evaluator as te
    from apache_beam.transforms import userstate

    original = getattr(userstate.get_dofn_specs, "_supportflow_original", userstate.get_dofn_specs)

    def cached_get_dofn_specs(dofn: Any) -> tuple[set, set]:
        key = _specs_key(dofn)
        if key is None:
            return original(dofn)
        with _SPECS_LOCK:
            hit = _SPECS.get(key)
        if hit is not None:
            return set(hit[0]), set(hit[1])
        specs = original(dofn)
        if len(key) == 2 or not (specs[0] or specs[1]):
            with _SPECS_LOCK:
                _SPECS[key] = (set(specs[0]), set(specs[1]))
        return specs

    cached_get_dofn_specs._supportflow_original = original  # type: ignore[attr-defined]
    # userstate.is_stateful_dofn looks get_dofn_specs up in its module at call time; the runner's
    # evaluator imported the name itself.
    userstate.get_dofn_specs = cached_get_dofn_specs
    te.get_dofn_specs = cached_get_dofn_specs
    return True


def use_reused_dofns() -> bool:
    """Let the local runner reuse each ParDo's DoFn across bundles, and read method signatures once.

    Per bundle, the BundleBasedDirectRunner round-trips the DoFn through pickle (a check that it is
    serialisable) and builds a ``DoFnRunner`` whose method wrappers call ``inspect.signature`` on every
    DoFn method: together ~40% of the pipeline's CPU under load once the spec cache was in. Reusing
    the instance is what Dataflow and the portable runners do between ``setup`` and ``teardown``;
    serialisability is still checked where it matters (building a Dataflow job pickles every DoFn,
    tests/test_deploy_dataflow.py, and the FnApiRunner tests run pickled copies). The signatures of
    functions and bound methods are cached by the function object (``DoFnRunner`` is compiled, so the
    cache sits in ``core.get_function_args_defaults``, which it calls). Local runs only.
    """
    if not beam.__version__.startswith(PATCHED_FOR):
        log.warning("Beam %s: DoFn reuse not applied (written for %sx)", beam.__version__, PATCHED_FOR)
        return False
    from apache_beam.runners.direct import transform_evaluator as te
    from apache_beam.transforms import core

    evaluator = te._ParDoEvaluator
    if getattr(evaluator, "_supportflow_reuse", False):
        return True
    original_init = evaluator.__init__

    def init_without_pickle_test(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["perform_dofn_pickle_test"] = False
        original_init(self, *args, **kwargs)

    evaluator.__init__ = init_without_pickle_test
    evaluator._supportflow_reuse = True
    core.get_function_args_defaults = _cached_args_defaults(core.get_function_args_defaults)
    return True


def _cached_args_defaults(original: Any) -> Any:
    """``get_function_args_defaults`` memoised for plain functions and bound methods (by the function)."""
    cache: dict[tuple[Any, bool], tuple[list[str], list[Any]]] = {}
    lock = threading.Lock()

    def cached(f: Any) -> tuple[list[str], list[Any]]:
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
            key = (f.__func__, True)
        elif isinstance(f, types.FunctionType):
            key = (f, False)
        else:
            return original(f)
        with lock:
            hit = cache.get(key)
        if hit is None:
            hit = original(f)
            with lock:
                if len(cache) > MAX_SIGNATURES:  # functions made per bundle somewhere: start over
                    cache.clear()
                cache[key] = hit
        return list(hit[0]), list(hit[1])

    cached._supportflow_original = original  # type: ignore[attr-defined]
    return cached
