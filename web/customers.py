"""The seeded customers the DEMO login offers: ids and names, searchable by either.

Read from Firestore (``customers/*``, the ``name`` field only) at startup and again when a search
finds nothing (at most every ``REFRESH_EVERY_S``), so customers seeded after the server started are
found too. Names are decoration: the login works by id when Firestore cannot be read.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("web")

CUSTOMERS = "customers"  # the store's customer records (tools/store.py reads the same collection)
READ_TIMEOUT_S = 10.0
REFRESH_EVERY_S = 5.0
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class CustomerDirectory:
    def __init__(self, project: str) -> None:
        self.project = project
        self._names: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._read_at = 0.0

    def refresh(self) -> None:
        from google.cloud import firestore  # only this needs it

        client = firestore.Client(project=self.project)
        try:
            names: dict[str, str | None] = {}
            for snap in client.collection(CUSTOMERS).select(["name"]).stream(timeout=READ_TIMEOUT_S):
                name = (snap.to_dict() or {}).get("name")
                names[snap.id] = name if isinstance(name, str) else None
        finally:
            client.close()
        with self._lock:
            self._names = names
            self._read_at = time.monotonic()

    def _refresh_quietly(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < REFRESH_EVERY_S:
                return
            self._read_at = time.monotonic()
        try:
            self.refresh()
        except Exception:  # names are decoration
            log.exception("could not read the customers from Firestore")

    def search(self, query: str = "", limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """Customers whose id starts with ``query`` or whose name contains it (case-insensitive), by id."""
        limit = max(1, min(limit, MAX_LIMIT))
        hits = self._search(query.strip().lower(), limit)
        if not hits:
            self._refresh_quietly()
            hits = self._search(query.strip().lower(), limit)
        return hits

    def _search(self, q: str, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self._names.items())
        out = []
        for cid, name in items:
            if not q or cid.lower().startswith(q) or (name and q in name.lower()):
                out.append({"id": cid, "name": name})
                if len(out) == limit:
                    break
        return out

    def get(self, customer_id: str) -> dict[str, Any] | None:
        """The customer, if seeded (re-reading once when not known yet)."""
        for attempt in range(2):
            with self._lock:
                if customer_id in self._names:
                    return {"id": customer_id, "name": self._names[customer_id]}
            if attempt == 0:
                self._refresh_quietly()
        return None

    def name(self, customer_id: str) -> str | None:
        with self._lock:
            return self._names.get(customer_id)
