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
   message of another customer is refused. No client changes at all: why it is always on. The
   sessions a bundle meets for the first time are claimed together (``SessionOwners.claim_many``: one
   read of their documents, one commit of the missing ones), not one ``create`` each: on the local
   runner every call blocks the one thread that runs all the stages.

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
from apache_beam.utils.windowed_value import WindowedValue
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
CLAIM_BATCH = 100  # messages of unknown sessions held for one batched claim at most (a local pull brings 100)
NOT_OWNER_REASON = "customer_id does not match the customer that owns this session (session owner registry)"


class SessionOwners:
    """The Firestore registry: ``claim`` returns the session's owner, recording ``customer_id`` if it has none."""

    def __init__(self, client: Any, collection: str, cache_size: int = CACHE_SIZE) -> None:
        self._client = client
        self._collection = client.collection(collection)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def claim(self, session_id: str, customer_id: str) -> str:
        owner = self._cache.get(session_id)
        if owner is None:
            owner = self._claim(session_id, customer_id)
            self._remember(session_id, owner)
        return owner

    def cached(self, session_id: str) -> str | None:
        return self._cache.get(session_id)

    def _remember(self, session_id: str, owner: str) -> None:
        self._cache[session_id] = owner
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def claim_many(self, claims: Sequence[tuple[str, str]]) -> dict[str, str]:
        """``claim`` for many (session id, customer id) pairs at once: each session's owner.

        A session claimed twice here is claimed by its first pair, as one ``claim`` after another would.
        One read of the unknown sessions' documents, then one commit that creates the missing ones; if
        another worker created one of them in between, the commit fails as a whole and they are claimed
        one by one.
        """
        owners: dict[str, str] = {}
        wanted: dict[str, str] = {}
        for session_id, customer_id in claims:
            hit = self._cache.get(session_id)
            if hit is not None:
                owners[session_id] = hit
            else:
                wanted.setdefault(session_id, customer_id)
        if len(wanted) == 1:  # one create, as ``claim`` makes
            ((session_id, customer_id),) = wanted.items()
            owners[session_id] = self.claim(session_id, customer_id)
            return owners
        if not wanted:
            return owners
        found = self._read(list(wanted))
        missing = {s: c for s, c in wanted.items() if s not in found}
        if missing:
            batch = self._client.batch()
            for session_id, customer_id in missing.items():
                batch.create(
                    self._collection.document(session_id), {"customer_id": customer_id, "claimed_at": time.time()}
                )
            try:
                batch.commit(retry=None, timeout=TIMEOUT_S)
                found.update(missing)
            except (gexc.AlreadyExists, gexc.Conflict):
                for session_id, customer_id in missing.items():
                    found[session_id] = self._claim(session_id, customer_id)
        for session_id, owner in found.items():
            self._remember(session_id, owner)
        owners.update(found)
        return owners

    def _read(self, session_ids: list[str]) -> dict[str, str]:
        """The owners recorded for these sessions (absent: no document yet)."""
        refs = [self._collection.document(s) for s in session_ids]
        owners = {}
        for snap in self._client.get_all(refs, retry=None, timeout=TIMEOUT_S):
            if not snap.exists:
                continue
            owner = (snap.to_dict() or {}).get("customer_id")
            if not isinstance(owner, str):  # a document without an owner field is not ours to trust
                raise gexc.FailedPrecondition(f"session_owners/{snap.id} has no customer_id")
            owners[snap.id] = owner
        return owners

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
        self._held: list[tuple[InboundMessage, Any, Any]] | None = None  # within a bundle: (msg, timestamp, window)
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

    def start_bundle(self) -> None:
        self._held = []

    def process(
        self,
        msg: InboundMessage,
        timestamp: Any = beam.DoFn.TimestampParam,  # noqa: ANN401
        window: Any = beam.DoFn.WindowParam,  # noqa: ANN401
    ) -> Iterator:
        """Decides at once when the binding refuses or the owner is known; otherwise holds the message for the
        bundle's batched claim (``finish_bundle``, or when ``CLAIM_BATCH`` are held). Outside a bundle (called
        directly) it claims at once."""
        if self._binding is not None:
            try:
                verify_session_binding(self._binding.accepted(), msg.session_id, msg.customer_id)
            except BindingRefused as e:
                self.refused_binding.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, refused(msg, e.reason))
                return
        assert self._owners is not None, "setup() not called"
        known = self._owners.cached(msg.session_id)
        if known is None and self._held is not None:
            self._held.append((msg, timestamp, window))
            if len(self._held) >= CLAIM_BATCH:
                yield from self._flush()
            return
        yield from self._decided(msg, known if known is not None else self._owner(msg))

    def finish_bundle(self) -> Iterator:
        yield from self._flush()

    def _decided(self, msg: InboundMessage, owner: str | None) -> Iterator:
        if owner is not None and owner != msg.customer_id:
            self.refused_owner.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, refused(msg, NOT_OWNER_REASON))
        else:
            yield msg

    def _flush(self) -> Iterator:
        """Claims the held messages' sessions at once and emits each message where its element would have gone."""
        held, self._held = self._held or [], []
        if not held:
            return
        owners = self._owners_of([m for m, _, _ in held])
        for msg, timestamp, window in held:
            for out in self._decided(msg, owners.get(msg.session_id) if owners is not None else None):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, (window,)))
                else:
                    yield WindowedValue(out, timestamp, (window,))

    def _owners_of(self, msgs: list[InboundMessage]) -> dict[str, str] | None:
        """The registry's owners of these messages' sessions, or None when it cannot be reached."""
        assert self._owners is not None, "setup() not called"
        if time.monotonic() < self._skip_registry_until:
            self.registry_unavailable.inc(len(msgs))
            return None
        claims = [(m.session_id, m.customer_id) for m in msgs]
        for attempt in range(ATTEMPTS):
            try:
                return self._owners.claim_many(claims)
            except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
                if attempt + 1 == ATTEMPTS:
                    log.warning("session owner registry unavailable (%s): Sessions' state check only", exc)
        self.registry_unavailable.inc(len(msgs))
        self._skip_registry_until = time.monotonic() + OPEN_CIRCUIT_S
        return None

    def _owner(self, msg: InboundMessage) -> str | None:
        """The registry's owner of the session, or None when it cannot be reached (Sessions' check applies)."""
        owners = self._owners_of([msg])
        return None if owners is None else owners.get(msg.session_id)
