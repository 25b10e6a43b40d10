"""The shop's records in the prompt: its orders and open tickets as the templates' ``${orders}`` and ``${tickets}``.

An allow-list, not a block-list: of an order only its id, status, item names, total, carrier, tracking
id and ETA; of a ticket only its id, status and subject. Addresses and payment data never reach the
model. Bounded: at most ``MAX_ORDERS`` orders (the context is newest first) and ``MAX_TICKETS`` open
tickets, each field one short line (``tools.prompt_fields``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tools.prompt_fields import mappings, one_line

MAX_ORDERS = 5
MAX_TICKETS = 3
MAX_ITEMS_SHOWN = 2
_CLOSED = frozenset({"closed", "resolved", "done", "cancelled"})


def _item_name(item: Any) -> str:
    if isinstance(item, Mapping):
        label = item.get("name") or item.get("title") or item.get("sku") or "item"
        qty = item.get("qty", item.get("quantity"))
        return f"{qty}x {one_line(label, 30)}" if isinstance(qty, int) and qty > 1 else one_line(label, 30)
    return one_line(item, 30)


def _order_line(order: Mapping[str, Any]) -> str:
    parts = [f"- {one_line(order.get('order_id', '?'), 40)}: {one_line(order.get('status', 'unknown'), 30)}"]
    items = order.get("items")
    if isinstance(items, Sequence) and not isinstance(items, str) and items:
        shown = ", ".join(_item_name(i) for i in items[:MAX_ITEMS_SHOWN])
        more = len(items) - MAX_ITEMS_SHOWN
        parts.append(shown + (f" +{more} more" if more > 0 else ""))
    if order.get("total") is not None:
        parts.append(one_line(f"{order['total']} {order.get('currency', '')}".strip(), 30))
    shipping = order.get("shipping")
    if isinstance(shipping, Mapping):
        ship = " ".join(one_line(shipping[k], 40) for k in ("carrier", "tracking_id") if shipping.get(k))
        if shipping.get("eta"):
            ship = f"{ship}, ETA {one_line(shipping['eta'], 25)}".lstrip(", ")
        if ship:
            parts.append(ship)
    return " | ".join(parts)


def _ticket_line(ticket: Mapping[str, Any]) -> str:
    subject = ticket.get("subject") or ticket.get("topic") or ticket.get("title") or ""
    line = f"- {one_line(ticket.get('ticket_id', '?'), 40)}: {one_line(ticket.get('status', 'unknown'), 30)}"
    return f"{line} - {one_line(subject)}" if subject else line


def prompt_context(context: Mapping[str, Any]) -> dict[str, str]:
    """The templates' ``orders`` and ``tickets`` placeholders for the customer's context."""
    orders = mappings(context.get("orders"))[:MAX_ORDERS]
    tickets = [t for t in mappings(context.get("tickets")) if str(t.get("status", "")).lower() not in _CLOSED]
    return {
        "orders": "\n".join(_order_line(o) for o in orders) or "- none on file",
        "tickets": "\n".join(_ticket_line(t) for t in tickets[:MAX_TICKETS]) or "- none",
    }
