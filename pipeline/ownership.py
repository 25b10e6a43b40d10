"""Who owns a session, decided where no lost state can undo it: the ``CheckSessionOwner`` stage.

``Sessions`` refuses a message whose customer differs from the one that opened the session, but it
knows that only from its state. The local runner loses state at a kill; Dataflow loses it at a drain
and relaunch (an in-place update keeps it). With the state gone, a held message claiming customer B in
customer A's session used to open it again as B, and the agent answered B's data into A's session.
So every inbound message passes two checks before it is keyed, and either can refuse it with a dead
letter that gives the reason:

1. **The binding** (when ``--session_binding_key`` or ``--session_binding_secret`` is set): the frontend
   mints session ids bound to one customer with a key (``contract.binding``); an id not bound to the
   message's customer (another customer's claim, forged, another key, expired) is refused. No store, so
   it holds also while the registry below is unreachable. Off by default: every other publisher (tests,
   benches, the terminal client, eval runs) uses plain session ids. With a secret, the key is read from
   Secret Manager at ``setup()`` and re-read as it rotates (``pipeline.secrets.BindingKeys``): the job's
   options carry only the secret's name.
2. **The registry** (always): ``session_owners/{session_id}`` in Firestore, created at a session's first
   message with ``create`` (fails when the document exists, so the first claim wins atomically; no
   transaction, no lock contention). Owners never change, so each worker caches what it read. A
   message of another customer is refused. No client changes at all: why it is always on.

If the registry cannot be reached (after ``ATTEMPTS`` tries of ``TIMEOUT_S``), the message goes on to
``Sessions``, whose state check still applies, and the registry is skipped for ``OPEN_CIRCUIT_S``:
a store outage costs no turns (tests/test_faults_stack.py), and only a message that meets an outage,
a lost state and another customer's session at once could pass, unless the binding is configured.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from google.api_core import exceptions as gexc

from contract.binding import BindingRefused, parse_keys, verify_session_binding
from contract.dead_letters import DEAD_LETTER_TAG
from contract.messages import DeadLetter, InboundMessage
from pipeline.secrets import BindingKeys, SecretReader

log = logging.getLogger(__name__)

STAGE = "CheckSessionOwner"
TIMEOUT_S = 2.0
ATTEMPTS = 2
OPEN_CIRCUIT_S = 5.0
CACHE_SIZE = 50_000  # session id -> owner (~100 bytes each)
NOT_OWNER_REASON = "customer_id does not match the customer that owns this session (session owner registry)"


class SessionOwners:
    """The Firestore registry: ``claim`` returns the session's owner, recording ``customer_id`` if it has none."""

    def __init__(self, client: Any, collection: str, cache_size: int = CACHE_SIZE) -> None:
        self._collection = client.collection(collection)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def claim(self, session_id: str, customer_id: str) -> str:
        owner = self._cache.get(session_id)
        if owner is None:
            owner = self._claim(session_id, customer_id)
            self._cache[session_id] = owner
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return owner

    def _claim(self, session_id: str, customer_id: str) -> str:
        doc = self._collection.document(session_id)
        try:
            doc.create({"customer_id": customer_id, "claimed_at": time.time()}, retry=None, timeout=TIMEOUT_S)
            return customer_id
        except (gexc.AlreadyExists, gexc.Conflict):
            pass
        owner = (doc.get(retry=None, timeout=TIMEOUT_S).to_dict() or {}).get("customer_id")
        if not isinstance(owner, str):  # a document without an owner field is not ours to trust
            raise gexc.FailedPrecondition(f"session_owners/{session_id} has no customer_id")
        return owner


def refused(msg: InboundMessage, reason: str) -> DeadLetter:
    return DeadLetter(
        stage=STAGE,
        reason=reason,
        payload=msg.model_dump_json(),
        session_id=msg.session_id,
        message_ids=[msg.message_id],
    )


class CheckSessionOwner(beam.DoFn):
    """InboundMessage -> the same message when its customer owns the session; tagged ``dead_letter`` otherwise."""

    def __init__(
        self,
        project: str,
        collection: str,
        binding_keys: str | Sequence[str] | None = None,
        database: str | None = None,
        *,
        binding_secret: str | None = None,
        secret_endpoint: str | None = None,
    ) -> None:
        self._project, self._collection, self._database = project, collection, database
        self._keys = parse_keys(binding_keys)
        # Only the secret's name is pickled with the DoFn (and so into the job); the value is read in setup().
        self._secret, self._secret_endpoint = binding_secret, secret_endpoint
        self._binding: BindingKeys | None = None
        self._owners: SessionOwners | None = None
        self._client: Any = None
        self._skip_registry_until = 0.0
        self.refused_binding = Metrics.counter("ownership", "refused_binding")
        self.refused_owner = Metrics.counter("ownership", "refused_owner")
        self.registry_unavailable = Metrics.counter("ownership", "registry_unavailable")

    def setup(self) -> None:
        from google.cloud import firestore

        if self._secret:
            self._binding = BindingKeys(secret=self._secret, reader=SecretReader(self._secret_endpoint))
        elif self._keys:
            self._binding = BindingKeys(self._keys)
        self._client = firestore.Client(project=self._project, database=self._database)
        self._owners = SessionOwners(self._client, self._collection)

    def teardown(self) -> None:
        if self._binding is not None:
            self._binding.close()
            self._binding = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def process(self, msg: InboundMessage) -> Iterator:
        if self._binding is not None:
            try:
                verify_session_binding(self._binding.accepted(), msg.session_id, msg.customer_id)
            except BindingRefused as e:
                self.refused_binding.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, refused(msg, e.reason))
                return
        owner = self._owner(msg)
        if owner is not None and owner != msg.customer_id:
            self.refused_owner.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, refused(msg, NOT_OWNER_REASON))
            return
        yield msg

    def _owner(self, msg: InboundMessage) -> str | None:
        """The registry's owner of the session, or None when it cannot be reached (Sessions' check applies)."""
        assert self._owners is not None, "setup() not called"
        if time.monotonic() < self._skip_registry_until:
            self.registry_unavailable.inc()
            return None
        for attempt in range(ATTEMPTS):
            try:
                return self._owners.claim(msg.session_id, msg.customer_id)
            except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
                if attempt + 1 == ATTEMPTS:
                    log.warning("session owner registry unavailable (%s): Sessions' state check only", exc)
        self.registry_unavailable.inc()
        self._skip_registry_until = time.monotonic() + OPEN_CIRCUIT_S
        return None
