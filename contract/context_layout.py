"""The customer-context layout: what enrichment promises downstream, and how the stores lay it out.

On the ground floor because three layers share it: ``pipeline.enrichment`` builds
the context, ``tools.store`` reads the same documents, and the stack's Bigtable seeder
writes the rows. It never imports Beam. What the context holds beside the profile, and
how much of it, the pack declares (``tools.context_collection.ContextCollection``,
``Pack.context``): the layout is given its collections' names, it never spells them.

Flags (``EnrichedTurn.context_flags``; the prompt and the eval row read them). The turn always goes on:

- ``customer_unknown``: no document / row for the session's customer id; context is ``{}``.
- ``context_unavailable``: the store failed or timed out after the retries; context is ``{}``.
- ``context_malformed``: some documents or fields did not have the expected shape; they are dropped,
  the rest of the context is kept.

Bigtable layout (one row per customer, row key = customer id, every cell a JSON value)::

    family "profile":      one column per profile field  (name, email, plan, tier, address, ...)
    family <collection>:   one column per record id      (the record's document as JSON), one family
                           per collection the pack declares (e.g. "tickets")
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

CUSTOMER_UNKNOWN = "customer_unknown"
CONTEXT_UNAVAILABLE = "context_unavailable"
CONTEXT_MALFORMED = "context_malformed"
FLAGS = (CUSTOMER_UNKNOWN, CONTEXT_UNAVAILABLE, CONTEXT_MALFORMED)

STORES = ("firestore", "bigtable")
DEFAULT_BIGTABLE_INSTANCE = "supportflow"
DEFAULT_BIGTABLE_TABLE = "customer_context"
PROFILE_FAMILY = "profile"
ENCODING = "utf-8"


def table_families(collections: Iterable[str]) -> tuple[str, ...]:
    """The table's column families: the profile's, then one per context collection (by its name)."""
    return (PROFILE_FAMILY, *collections)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()  # the same text Firestore's timestamps become in tools/store.py
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_cell(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode(ENCODING)


def decode_cell(raw: str | bytes) -> Any:
    """A cell's JSON value; ValueError (json.JSONDecodeError, UnicodeDecodeError) when it is not JSON."""
    return json.loads(raw.decode(ENCODING) if isinstance(raw, bytes) else raw)
