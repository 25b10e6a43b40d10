"""The shop's Firestore layout under ``customers/{id}``, and its reads through the core's ``CustomerScope``.

``orders`` and ``tickets`` are seeded (``packs.shop.seed``); the tools create ``refunds``, ``returns``,
``tickets`` and ``handoffs``. The scope keeps every read and write inside the session's customer; this
module only names the collections and the shop's order ids.
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from tools.scope import CustomerScope

ORDERS = "orders"
TICKETS = "tickets"
REFUNDS = "refunds"
RETURNS = "returns"
HANDOFFS = "handoffs"


def normalize_order_id(raw: str) -> str:
    """What a model or a customer types ("#o-c0001-01 ", "order O-C0001-01") -> "O-C0001-01"."""
    text = raw.strip().strip("#").strip()
    if " " in text:
        text = text.split()[-1].strip("#")
    return text.upper()


def order_ref(scope: CustomerScope, order_id: str) -> firestore.DocumentReference | None:
    """The reference of this customer's order ``order_id``, or None for an id that cannot exist."""
    return scope.document_ref(ORDERS, normalize_order_id(order_id))


def order(scope: CustomerScope, order_id: str) -> dict[str, Any] | None:
    """This customer's order (with ``order_id``), or None: not found, whoever else may own that id."""
    ref = order_ref(scope, order_id)
    return scope.read(ref, "order_id") if ref is not None else None


def recent_orders(scope: CustomerScope, limit: int) -> list[dict[str, Any]]:
    return scope.newest(ORDERS, "placed_at", limit, "order_id")
