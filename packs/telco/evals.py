"""The telco pack's hooks for the offline evals (``evals/packworld.py`` reads them through ``PACK.evals``).

Each trial gets its own copy of the seeded SQLite store (copied from a template seeded once per process)
and its own MCP server over it; the customers' profiles go to the trial's Firestore (``packs.telco.seed``).
The store's rows of a scenario's customers read as documents, so the harness's end-state checks, diff and
strict state work on them unchanged::

    customers/<account>/account/current        the account row (plan, data used, extra data, SIM status)
    customers/<account>/invoices/<invoice id>  its invoices (items as a list)
    customers/<account>/data_packs/<pack id>   data packs added        (what the actions create)
    customers/<account>/sim_orders/<order id>  replacement SIMs ordered
    customers/<account>/tickets/<ticket id>    tickets opened
    customers/<account>/handoffs/<handoff id>  hand-offs to a person
    customers/<account>/audit/<action id>      the audit row of every data-changing call (exempt from strict state)

A scenario's ``seed.overrides`` on these paths write to the trial's store: ``set`` updates the account row
(``account/current``), ``create`` inserts a row into one of the action tables, ``delete`` removes one.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from packs.telco import data
from packs.telco.seed import PROFILES, profile

STORE_FILE = "telco.sqlite"
ACCOUNT_DOC = ("account", "current")
# Tables of what the actions create, keyed by their first column; ``actions`` reads as the audit collection.
ROW_TABLES: Mapping[str, str] = {
    "invoices": "invoice_id",
    "data_packs": "pack_id",
    "sim_orders": "order_id",
    "tickets": "ticket_id",
    "handoffs": "handoff_id",
}
AUDIT_COLLECTION = "audit"


def _account_index(account_id: str) -> int:
    return int(account_id.rsplit("-", 1)[1]) - 100000


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("items", "args", "result"):
        if isinstance(out.get(key), str):
            with suppress(ValueError):
                out[key] = json.loads(out[key])
    return out


class TelcoEvals:
    """``PackEvals`` for the telco pack: a store per trial, its rows as documents, what must not leak."""

    def __init__(self, server_for: Callable[[str], Any]) -> None:
        self._server_for = server_for  # the store's path -> the pack's MCP server over it
        self._lock = threading.Lock()
        self._template: Path | None = None

    def _seeded(self) -> Path:
        with self._lock:
            if self._template is None or not self._template.exists():
                folder = Path(tempfile.mkdtemp(prefix="telco-evals-template-"))
                self._template = data.ensure_database(folder / STORE_FILE)
            return self._template

    def prepare(self, folder: Path) -> Mapping[str, Any]:
        """A fresh copy of the seeded store in ``folder``; the pack's MCP servers over it (name -> McpServer)."""
        store = Path(folder) / STORE_FILE
        shutil.copyfile(self._seeded(), store)
        server = self._server_for(str(store))
        return {server.name: server}

    def seed_customers(self, client: Any, customers: Sequence[str], policy: Any = None) -> None:
        """The customers' profiles in the trial's Firestore (what enrichment reads), as the stack seeds them
        (the pack has no policy of its own: ``policy`` is None)."""
        if not customers:
            return
        accounts = {a["account_id"]: a for a in data.build_seed(max(map(_account_index, customers))).accounts}
        batch = client.batch()
        for cid in customers:
            batch.set(client.collection(PROFILES).document(cid), profile(accounts[cid]))
        batch.commit()

    def snapshot(self, folder: Path, customers: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The store's rows of ``customers`` as documents (paths in the module's docstring)."""
        out: dict[str, dict[str, Any]] = {}
        with closing(data.connect(Path(folder) / STORE_FILE)) as conn:
            for cid in customers:
                base = f"customers/{cid}"
                row = conn.execute("SELECT * FROM accounts WHERE account_id = ?", (cid,)).fetchone()
                if row is not None:
                    out[f"{base}/{'/'.join(ACCOUNT_DOC)}"] = _decode(row)
                for table, key in ROW_TABLES.items():
                    for r in conn.execute(f"SELECT * FROM {table} WHERE account_id = ?", (cid,)):
                        out[f"{base}/{table}/{r[key]}"] = _decode(r)
                for r in conn.execute("SELECT * FROM actions WHERE account_id = ?", (cid,)):
                    out[f"{base}/{AUDIT_COLLECTION}/{r['action_id']}"] = _decode(r)
        return out

    def apply(self, folder: Path, path: str, override: Mapping[str, Any]) -> bool:
        """A scenario override on a store path (False: not the store's; the harness writes it to Firestore).

        ``override``: ``{"set": {...}}``, ``{"create": {...}}`` or ``{"delete": True}``."""
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "customers":
            return False
        cid, collection, doc = parts[1], parts[2], parts[3]
        with closing(data.connect(Path(folder) / STORE_FILE)) as conn, data.transaction(conn):
            if (collection, doc) == ACCOUNT_DOC:
                values = dict(override.get("set") or {})
                if not values:
                    raise ValueError(f"{path}: the account row takes set (update), not create or delete")
                assignments = ", ".join(f"{_column(conn, 'accounts', k)} = ?" for k in values)
                conn.execute(f"UPDATE accounts SET {assignments} WHERE account_id = ?", (*values.values(), cid))
                return True
            if collection not in ROW_TABLES:
                return False
            key = ROW_TABLES[collection]
            if override.get("delete"):
                conn.execute(f"DELETE FROM {collection} WHERE {key} = ? AND account_id = ?", (doc, cid))
                return True
            values = {**dict(override.get("create") or override.get("set") or {}), key: doc, "account_id": cid}
            values = {_column(conn, collection, k): json.dumps(v) if isinstance(v, list | dict) else v
                      for k, v in values.items()}  # fmt: skip
            conn.execute(
                f"INSERT OR REPLACE INTO {collection} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
            return True

    def customer_strings(self, customers: Sequence[str]) -> list[str]:
        """What must never reach a reply from these customers' data: ids, e-mails, numbers, SIMs, invoice ids."""
        if not customers:
            return []
        seed = data.build_seed(max(map(_account_index, customers)))
        wanted = set(customers)
        out: list[str] = []
        for a in seed.accounts:
            if a["account_id"] in wanted:
                out += [a["account_id"], a["email"], a["sim_msisdn"], a["sim_iccid"]]
        out += [i["invoice_id"] for i in seed.invoices if i["account_id"] in wanted]
        return out


def _column(conn: sqlite3.Connection, table: str, name: str) -> str:
    """``name`` if it is a column of ``table`` (overrides name columns; nothing else reaches the SQL)."""
    columns = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
    if name not in columns:
        raise ValueError(f"{table} has no column {name!r}; it has {sorted(columns)}")
    return name
