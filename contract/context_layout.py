"""The customer-context layout: what enrichment promises downstream, and how the stores lay it out.

On the ground floor because three layers share it: ``pipeline.enrichment`` builds
the context, ``tools.store`` reads the same documents with the same bounds, and the
stack's Bigtable seeder writes the rows. It never imports Beam.

Flags (``EnrichedTurn.context_flags``; the prompt and the eval row read them). The turn always goes on:

- ``customer_unknown``: no document / row for the session's customer id; context is ``{}``.
- ``context_unavailable``: the store failed or timed out after the retries; context is ``{}``.
- ``context_malformed``: some documents or fields did not have the expected shape; they are dropped,
  the rest of the context is kept.

Bigtable layout (one row per customer, row key = customer id, every cell a JSON value)::

    family "profile":  one column per profile field  (name, email, plan, tier, address, ...)
    family "orders":   one column per order id       (the order document as JSON)
    family "tickets":  one column per ticket id      (the ticket document as JSON)
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

CUSTOMER_UNKNOWN = "customer_unknown"
CONTEXT_UNAVAILABLE = "context_unavailable"
CONTEXT_MALFORMED = "context_malformed"
FLAGS = (CUSTOMER_UNKNOWN, CONTEXT_UNAVAILABLE, CONTEXT_MALFORMED)

# Bound what one turn pulls in: the prompt is small and the store is on the hot path.
MAX_ORDERS = 8
MAX_TICKETS = 5

STORES = ("firestore", "bigtable")
DEFAULT_BIGTABLE_INSTANCE = "supportflow"
DEFAULT_BIGTABLE_TABLE = "customer_context"
PROFILE_FAMILY, ORDERS_FAMILY, TICKETS_FAMILY = "profile", "orders", "tickets"
FAMILIES = (PROFILE_FAMILY, ORDERS_FAMILY, TICKETS_FAMILY)
ENCODING = "utf-8"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()  # the same text Firestore's timestamps become in tools/store.py
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_cell(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode(ENCODING)


def decode_cell(raw: str | bytes) -> Any:
    """A cell's JSON value; ValueError (json.JSONDecodeError, UnicodeDecodeError) when it is not JSON."""
    return json.loads(raw.decode(ENCODING) if isinstance(raw, bytes) else raw)
