"""What a pack declares about the customer context: the lists of the customer's records each turn carries.

The context a turn sees is ``{"customer_id", "profile", <one list per collection>}``. A
``ContextCollection`` says where one list comes from and what the prompt and the guardrails may rely
on in it: the Firestore subcollection under ``customers/{id}`` (and the Bigtable column family of the
same name), the field that receives each document's id, the timestamp that orders them newest first,
how many are kept, and the type of each field the agent reads. Enrichment drops a document whose
declared fields do not have their type (the turn is flagged ``context_malformed``); fields not
declared pass through untouched.

Field types are words, so a declaration is plain data (it travels with the Beam handlers):

    str  number  bool  timestamp (ISO-8601 text)  mapping  list
    records:KEY   a list of mappings, each with a text ``KEY`` (e.g. ``records:name``)
    TYPE?         the same, or None / absent
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Check = Callable[[Any], bool]

RECORDS = "records:"
# Bigtable family names (the collection's name is its family) allow these; keep to them.
NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")
RESERVED = ("customer_id", "profile")  # the context's own keys


def _timestamp(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


KINDS: Mapping[str, Check] = {
    "str": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "timestamp": _timestamp,
    "mapping": lambda v: isinstance(v, Mapping),
    "list": lambda v: isinstance(v, list),
}


@functools.lru_cache(maxsize=64)
def field_check(kind: str) -> Check:
    """The check of one declared field type (``ValueError`` for a type it does not know)."""
    if kind.endswith("?"):
        inner = field_check(kind[:-1])
        return lambda v: v is None or inner(v)
    if kind.startswith(RECORDS) and kind[len(RECORDS) :]:
        key = kind[len(RECORDS) :]
        return lambda v: isinstance(v, list) and all(isinstance(i, Mapping) and isinstance(i.get(key), str) for i in v)
    if kind in KINDS:
        return KINDS[kind]
    raise ValueError(f"unknown field type {kind!r} (known: {', '.join(KINDS)}, {RECORDS}KEY, TYPE?)")


@dataclass(frozen=True)
class ContextCollection:
    """One list in the customer context, e.g. ``ContextCollection("tickets", "ticket_id", "created_at", 5)``."""

    name: str  # the context's key, and the Bigtable column family
    id_field: str  # each record gets its document id in this field
    newest_first: str  # the timestamp field the list is sorted by, newest first (a declared, required field)
    max_kept: int  # the newest this many are kept: the prompt is small and the store is on the hot path
    fields: Mapping[str, str] = field(default_factory=dict)  # field -> type (above): what the agent relies on
    subcollection: str = ""  # the Firestore subcollection under customers/{id}; "" is ``name``

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name) or self.name in RESERVED:
            raise ValueError(f"context collection {self.name!r}: a lower-case name, not one of {RESERVED}")
        if self.max_kept < 1:
            raise ValueError(f"context collection {self.name!r}: max_kept must be at least 1")
        for kind in self.fields.values():
            field_check(kind)  # an unknown type fails the pack's load
        if self.fields.get(self.newest_first) != "timestamp":
            raise ValueError(
                f"context collection {self.name!r}: newest_first {self.newest_first!r} must be a field of type "
                "'timestamp' (required: every record is sorted by it)"
            )

    @property
    def source(self) -> str:
        """The Firestore subcollection its documents are read from."""
        return self.subcollection or self.name

    def valid(self, doc: Any) -> bool:
        """Every declared field present (None only where optional) and of its type."""
        return isinstance(doc, Mapping) and all(field_check(kind)(doc.get(f)) for f, kind in self.fields.items())

    def record(self, doc_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The document as the context carries it: its id in ``id_field``."""
        return {**doc, self.id_field: doc_id}
