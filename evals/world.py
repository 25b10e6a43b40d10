"""A fresh copy of the seed state per trial, in its own Firestore emulator project.

Every trial gets a project id of its own (``sfeval-<run>-<n>``) in the emulator,
which keeps projects apart: the trial seeds the scenario's customers there (the pack's
``PackEvals.seed_customers``: the same deterministic data as the local stack, and the help
articles of the trial's policy), applies the scenario's overrides, snapshots the
customers' documents, runs the conversation, snapshots again, and the diff is
what the agent changed. Trials never see each other's writes, so they may run
concurrently, and the shared seeded project of the stack is never touched.
Afterwards the project's documents are deleted through the emulator's REST API.

A pack that keeps its data outside Firestore (``StoreEvals``, ``evals/packworld.py``) gets, besides its
customers' Firestore documents, a fresh copy of its own store per trial and an executor whose MCP servers run
over that copy; the store's rows of the scenario's customers are part of each snapshot.

Emulator only: ``World`` refuses to start without ``FIRESTORE_EMULATOR_HOST``
(it writes seed data, and must never write to a real database).
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.cloud import firestore

from evals.packworld import PackStore, has_store, pack_evals, reference_time
from evals.scenario import Override, Scenario
from tools.packs import DEFAULT_PACK, load_pack
from tools.registry import FirestoreToolExecutor, ToolExecutor
from tools.scope import AUDIT, CUSTOMERS, plain

# Collections under a customer left out of snapshots. Audit records are in them (scenarios check them);
# the scorer exempts them from strict_state unless a scenario asks (every attempt, denied too, writes one).
IGNORED_COLLECTIONS: frozenset[str] = frozenset()

Snapshot = dict[str, dict[str, Any]]  # absolute document path -> plain document


def emulator_host() -> str:
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "").strip()
    if not host:
        raise RuntimeError("FIRESTORE_EMULATOR_HOST is not set: the eval harness only runs against the emulator")
    return host


def is_audit_path(path: str) -> bool:
    """``customers/<id>/audit/<action id>``: the record of one action attempt (tools.scope)."""
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == CUSTOMERS and parts[2] == AUDIT


def resolve_time(value: Any, pack: str = DEFAULT_PACK) -> Any:
    """Override values: ``{$days_ago: N}`` / ``{$days_ahead: N}`` (from ``pack``'s seed "now") and YAML dates
    become UTC datetimes."""
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in ("$days_ago", "$days_ahead"):
            op, days = next(iter(value.items()))
            delta, now = timedelta(days=float(days)), reference_time(pack)
            return now - delta if op == "$days_ago" else now + delta
        return {k: resolve_time(v, pack) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_time(v, pack) for v in value]
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _expand_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}} (for documents written whole)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, leaf = str(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


@dataclass
class World:
    """One trial's database: ``setup`` seeds it, ``snapshot`` reads it, ``teardown`` deletes it."""

    scenario: Scenario
    project: str
    client: firestore.Client | None = None
    store: PackStore | None = None  # the trial's copy of the pack's own store (packs with eval hooks)

    def setup(self) -> None:
        emulator_host()
        self.client = firestore.Client(project=self.project)
        pack = self.scenario.pack
        if has_store(pack):
            self.store = PackStore(pack)
        # The trial's policy (seed.policy), as the agent's: the help articles the pack writes follow it.
        pack_evals(pack).seed_customers(self.client, self.scenario.customers, self.scenario.policy)
        for override in self.scenario.seed.overrides:
            self.apply(override)

    def apply(self, override: Override) -> None:
        path = self.scenario.absolute(override.doc)
        if self.store is not None and self.store.apply(path, override.model_dump(exclude_defaults=True)):
            return
        db = self._db()
        ref = db.document(path)
        if override.delete:
            ref.delete()
        elif override.create is not None:
            ref.set(_expand_dotted(resolve_time(override.create, self.scenario.pack)))
        elif override.set is not None:
            values = resolve_time(override.set, self.scenario.pack)
            if ref.get().exists:
                ref.update(values)
            else:
                ref.set(_expand_dotted(values))

    def snapshot(self) -> Snapshot:
        """Every document of the seeded customers: profile and subcollections, audit records included."""
        db = self._db()
        out: Snapshot = {}
        for cid in dict.fromkeys((self.scenario.customer, *self.scenario.seed.customers)):
            ref = db.collection(CUSTOMERS).document(cid)
            snap = ref.get()
            if snap.exists:
                out[ref.path] = plain(snap.to_dict() or {})
            for coll in ref.collections():
                if coll.id in IGNORED_COLLECTIONS:
                    continue
                for doc in coll.stream():
                    out[doc.reference.path] = plain(doc.to_dict() or {})
        if self.store is not None:
            seeded = dict.fromkeys((self.scenario.customer, *self.scenario.seed.customers))
            out.update(self.store.snapshot(list(seeded)))
        return out

    def executor(self, clock: Callable[[], datetime] | None = None) -> ToolExecutor:
        """The executor of the trial's tools: on its Firestore project, and on its own store's MCP servers."""
        if self.store is not None:
            return self.store.executor(self._db(), clock)
        return FirestoreToolExecutor(self._db(), pack=load_pack(self.scenario.pack), clock=clock)

    def teardown(self) -> None:
        """Delete the trial's documents (the emulator's per-project reset) and close the client."""
        host = emulator_host()
        url = f"http://{host}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        with contextlib.suppress(OSError):  # best effort: an emulator restart forgets everything anyway
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).close()
        if self.client is not None:
            self.client.close()
        if self.store is not None:
            self.store.close()

    def _db(self) -> firestore.Client:
        if self.client is None:
            raise RuntimeError("World.setup() first")
        return self.client


@dataclass(frozen=True)
class Change:
    """One document the conversation changed."""

    path: str
    kind: str  # created | modified | deleted
    fields: tuple[str, ...] = ()  # top-level fields that differ (modified)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.kind == "modified":
            return f"{self.path} modified ({', '.join(self.fields)})"
        return f"{self.path} {self.kind}"


def diff(before: Snapshot, after: Snapshot) -> list[Change]:
    """What changed between two snapshots, by path."""
    out: list[Change] = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            out.append(Change(path, "created", after=new))
        elif new is None:
            out.append(Change(path, "deleted", before=old))
        else:
            fields = tuple(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))
            out.append(Change(path, "modified", fields, old, new))
    return out


def other_customer_strings(customers: Iterable[str], pack: str = DEFAULT_PACK) -> list[str]:
    """What must never reach a reply from another customer's data (the pack says: ids, e-mails, phones, ...)."""
    return [s for s in dict.fromkeys(pack_evals(pack).customer_strings(list(customers))) if s]
