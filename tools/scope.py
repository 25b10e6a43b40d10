"""The tenant boundary of the support tools.

``ToolContext`` names who a tool call is for: the session's customer, session
and turn. It is plain data (it travels inside ``agents.steps.AgentState``) and
it is bound by the pipeline, never by the model: no tool schema has a customer
parameter, so a model cannot even ask for another customer.

``CustomerScope`` is what a tool receives at execution time (LangChain
``InjectedToolArg``): the Firestore client plus the context. Every read and
write it offers starts at ``customers/{ctx.customer_id}``; a document id that
belongs to someone else simply does not exist under that document ("not
found", indistinguishable from an id that exists nowhere).

Actions that change data go through ``CustomerScope.run_action``: one
Firestore transaction that reads the action's audit record
``customers/{cid}/audit/{action_id}`` first. ``action_id`` is a hash of
(session, turn, tool, the tool's identifying arguments), so a replayed bundle
(or the model repeating a call in the same turn) finds the record and gets the
stored result back (``replayed: true``, the record's ``replays`` counter goes
up) instead of acting twice. Otherwise the tool's own reads and writes and the
audit record commit together, or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

CUSTOMERS = "customers"
AUDIT = "audit"
HELP_ARTICLES = "help_articles"

# Firestore document ids we accept from a model: short, no "/", no "." or ".." alone.
_DOC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@#-]{0,127}$")
_ARTICLES_TTL_S = 300.0

TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.TooManyRequests,
    gexc.Conflict,  # the emulator's "409 Transaction lock timeout"
)


def is_transient(exc: BaseException) -> bool:
    """A transient error, also when Firestore's transaction wrapper gave up on one: after its last attempt
    it raises ``ValueError("Failed to commit transaction in N attempts")`` from the last ``Aborted``."""
    return isinstance(exc, TRANSIENT) or (isinstance(exc, ValueError) and isinstance(exc.__cause__, TRANSIENT))


store_retry = retry(
    retry=retry_if_exception(is_transient),
    wait=wait_exponential_jitter(initial=0.05, max=1.0),
    stop=stop_after_attempt(6),
    reraise=True,
)


# An action is decided by one thread of a process at a time (striped by action id): concurrent replays of one
# action in one process otherwise run the same transaction together, and the emulator's pessimistic locks
# can abort every one of them on every retry (seen once in an idle CI run: 12 replays, none committed). The
# threads that wait then find the stored result and replay it without a transaction. Across processes the
# transaction and its retries still decide.
_DECIDING = tuple(threading.Lock() for _ in range(64))


def _deciding(aid: str) -> threading.Lock:
    return _DECIDING[int(hashlib.sha256(aid.encode()).hexdigest()[:8], 16) % len(_DECIDING)]


def valid_doc_id(value: str) -> bool:
    return bool(_DOC_ID.match(value)) and value not in (".", "..")


@dataclass(frozen=True)
class ToolContext:
    """Who the tools act for, and under which policy. Bound from the session, never from model output.

    ``policy`` is the turn's policy (the one its prompt digests were rendered from: the pack's own object, which
    the core only passes on); None means the pack's shipped one (``Pack.policy``).
    """

    customer_id: str
    session_id: str
    turn_id: str
    policy: Any = field(default=None, compare=False, hash=False)  # not who: no part of identity

    def __post_init__(self) -> None:
        for name in ("customer_id", "session_id", "turn_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ToolContext.{name} must be a non-empty string")
        if not valid_doc_id(self.customer_id):
            raise ValueError(f"ToolContext.customer_id {self.customer_id!r} is not a valid document id")


def plain(value: Any) -> Any:
    """Firestore values -> JSON-friendly values (timestamps become ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def action_id(ctx: ToolContext, tool: str, key: Mapping[str, Any]) -> str:
    """Deterministic id of one action: (session, turn, tool, identifying args)."""
    material = json.dumps(
        {"session": ctx.session_id, "turn": ctx.turn_id, "tool": tool, "key": dict(key)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ActionResult:
    result: dict[str, Any]
    action_id: str
    replayed: bool


_ARTICLES_CACHE: dict[tuple[str, str, str], tuple[float, dict[str, dict[str, Any]]]] = {}
_ARTICLES_LOCK = threading.Lock()


class CustomerScope:
    """One customer's subtree of Firestore, for one tool call. Not picklable; made per call.

    ``default_policy`` is the pack's shipped policy (``Pack.policy``), used when the turn carries none.
    What the collections under the customer are is the pack's (e.g. ``packs/shop/records.py``).
    """

    def __init__(
        self,
        db: firestore.Client,
        ctx: ToolContext,
        now: datetime,
        timeout_s: float = 5.0,
        *,
        default_policy: Any = None,
    ) -> None:
        self._db = db
        self.ctx = ctx
        self.now = now
        self.timeout_s = timeout_s
        self._default_policy = default_policy

    @property
    def policy(self) -> Any:
        """The turn's policy: what the verdicts use and the policy articles are rendered from."""
        return self.ctx.policy if self.ctx.policy is not None else self._default_policy

    # -- reads -------------------------------------------------------------

    @property
    def customer_ref(self) -> firestore.DocumentReference:
        return self._db.collection(CUSTOMERS).document(self.ctx.customer_id)

    def document_ref(self, collection: str, doc_id: str) -> firestore.DocumentReference | None:
        """This customer's document ``collection/doc_id``, or None for an id that cannot exist."""
        if not valid_doc_id(doc_id):
            return None
        return self.customer_ref.collection(collection).document(doc_id)

    @store_retry
    def profile(self) -> dict[str, Any] | None:
        snap = self.customer_ref.get(timeout=self.timeout_s)
        return plain(snap.to_dict() or {}) if snap.exists else None

    @store_retry
    def read(self, ref: firestore.DocumentReference, id_field: str) -> dict[str, Any] | None:
        """The document at ``ref`` (plain values, its id as ``id_field``), or None: not found, whoever else may
        own that id."""
        snap = ref.get(timeout=self.timeout_s)
        return {id_field: snap.id, **plain(snap.to_dict() or {})} if snap.exists else None

    @store_retry
    def newest(self, collection: str, by: str, limit: int, id_field: str) -> list[dict[str, Any]]:
        """This customer's newest ``limit`` documents of ``collection`` by the field ``by`` (ids as ``id_field``)."""
        docs = (
            self.customer_ref.collection(collection)
            .order_by(by, direction=firestore.Query.DESCENDING)
            .limit(limit)
            .stream(timeout=self.timeout_s)
        )
        return [{id_field: d.id, **plain(d.to_dict() or {})} for d in docs]

    def help_articles(self) -> dict[str, dict[str, Any]]:
        """All help-centre articles: the policy's own, rendered from the turn's policy, over Firestore's others.

        The Firestore copies of the policy's articles are a projection for the help centre (the pack's seed);
        the tools never serve them, so an article can never say something the verdicts and the prompt do not.
        """
        own = self.policy.articles_rendered() if self.policy is not None else {}
        return {**self._stored_articles(), **own}

    def _stored_articles(self) -> dict[str, dict[str, Any]]:
        """The ``help_articles`` collection (shared, not customer data), cached per database for a few minutes."""
        # Keyed by what the client points at, not id(client): ids are reused after garbage collection.
        key = (self._db.project, getattr(self._db, "_database", ""), os.environ.get("FIRESTORE_EMULATOR_HOST", ""))
        with _ARTICLES_LOCK:
            hit = _ARTICLES_CACHE.get(key)
            if hit and time.monotonic() - hit[0] < _ARTICLES_TTL_S:
                return hit[1]
        articles = self._load_articles()
        with _ARTICLES_LOCK:
            _ARTICLES_CACHE[key] = (time.monotonic(), articles)
        return articles

    @store_retry
    def _load_articles(self) -> dict[str, dict[str, Any]]:
        docs = self._db.collection(HELP_ARTICLES).stream(timeout=self.timeout_s)
        return {d.id: plain(d.to_dict() or {}) for d in docs}

    # -- writes ------------------------------------------------------------

    def read_in(self, transaction: firestore.Transaction, ref: firestore.DocumentReference) -> dict[str, Any] | None:
        """A document read inside ``transaction`` (plain values), or None if it does not exist."""
        snap = ref.get(transaction=transaction)
        return {"_id": snap.id, **plain(snap.to_dict() or {})} if snap.exists else None

    @store_retry
    def run_action(
        self,
        tool: str,
        key: Mapping[str, Any],
        args: Mapping[str, Any],
        body: Callable[[firestore.Transaction, str], dict[str, Any]],
    ) -> ActionResult:
        """Run ``body(transaction, action_id)`` once per action id, audited; replays get the stored result.

        ``body`` must do all its reads (``read_in``) before its writes (Firestore's rule for
        transactions) and return a small JSON-able dict with a ``status``. Denied attempts are
        audited too (their ``status`` says so).
        """
        aid = action_id(self.ctx, tool, key)
        audit_ref = self.customer_ref.collection(AUDIT).document(aid)
        replay = {"replays": firestore.Increment(1), "last_replay_at": firestore.SERVER_TIMESTAMP}

        # A replay of a settled action needs no transaction: the record is final, and the counter is a server-side
        # increment. Concurrent replays then contend only while the action is being decided.
        def stored() -> ActionResult | None:
            snap = audit_ref.get(timeout=self.timeout_s)
            if not snap.exists:
                return None
            audit_ref.update(replay, timeout=self.timeout_s)
            return ActionResult(dict((snap.to_dict() or {}).get("result") or {}), aid, replayed=True)

        settled = stored()
        if settled is not None:
            return settled

        @firestore.transactional
        def txn(transaction: firestore.Transaction) -> ActionResult:
            snap = audit_ref.get(transaction=transaction)
            if snap.exists:
                stored = snap.to_dict() or {}
                transaction.update(audit_ref, replay)
                return ActionResult(dict(stored.get("result") or {}), aid, replayed=True)
            result = body(transaction, aid)
            transaction.create(
                audit_ref,
                {
                    "action_id": aid,
                    "tool": tool,
                    "args": plain(dict(args)),
                    "key": plain(dict(key)),
                    "customer_id": self.ctx.customer_id,
                    "session_id": self.ctx.session_id,
                    "turn_id": self.ctx.turn_id,
                    "status": result.get("status", ""),
                    "result": result,
                    "actor": "agent",
                    "created_at": firestore.SERVER_TIMESTAMP,
                    "replays": 0,
                },
            )
            return ActionResult(result, aid, replayed=False)

        with _deciding(aid):
            return stored() or txn(self._db.transaction())
