"""How the shop's tool results read to a customer, for models that do not write the reply themselves.

Each renderer turns one result into a few plain sentences built from the result's own fields (the
core's ``agents.replies`` picks the renderer from the tool's spec and adds what is common to every
pack: refusals, errors, and actions the customer did not ask for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Result = Mapping[str, Any]


def _found(render):  # noqa: ANN001, ANN202
    """An order id the account does not have reads the same for every tool."""

    def wrapped(r: Result) -> str:
        if r.get("status") == "not_found" and r.get("order_id"):
            return f"I couldn't find order {r['order_id']} on your account."
        return render(r)

    wrapped.__name__ = render.__name__
    return wrapped


def _money(amount: Any, currency: Any) -> str:
    if isinstance(amount, int | float):
        return f"{amount:.2f} {currency or ''}".strip()
    return ""


def _items(items: Any) -> str:
    names = []
    for item in items if isinstance(items, Sequence) and not isinstance(items, str) else ():
        if isinstance(item, Mapping):
            qty = item.get("qty")
            label = str(item.get("name", "item"))
            names.append(f"{qty}x {label}" if isinstance(qty, int) and qty > 1 else label)
    return ", ".join(names)


def _order_line(order: Result) -> str:
    parts = [f"{order.get('order_id')}: {order.get('status')}"]
    if order.get("carrier"):
        parts.append(f"carrier {order['carrier']}")
    if order.get("placed_on"):
        parts.append(f"placed on {order['placed_on']}")
    if _items(order.get("items")):
        parts.append(_items(order.get("items")))
    if _money(order.get("total"), order.get("currency")):
        parts.append(f"total {_money(order.get('total'), order.get('currency'))}")
    return ", ".join(parts)


@_found
def orders(r: Result) -> str:
    if isinstance(r.get("order"), Mapping):
        return f"Order {_order_line(r['order'])}."
    orders = [o for o in r.get("orders") or () if isinstance(o, Mapping)]
    if not orders:
        return "I don't see any orders on your account."
    return "Your recent orders:\n" + "\n".join(f"- {_order_line(o)}" for o in orders)


@_found
def shipment(r: Result) -> str:
    oid, status = r.get("order_id"), r.get("order_status")
    out = [f"Order {oid} is {status}."]
    if r.get("delivered_on"):
        out.append(f"It was delivered on {r['delivered_on']}.")
    elif r.get("dispatched"):
        carrier = f" with {r['carrier']}" if r.get("carrier") else ""
        track = f", tracking number {r['tracking_id']}" if r.get("tracking_id") else ""
        out.append(f"It was dispatched{carrier}{track}.")
    else:
        carrier = f" It will ship with {r['carrier']}." if r.get("carrier") else ""
        out.append(f"It has not been dispatched yet.{carrier}")
    if r.get("eta") and not r.get("delivered_on"):
        out.append(f"Estimated delivery: {r['eta']}.")
    if r.get("days_late"):
        out.append(f"It is {r['days_late']} days past its estimated delivery date.")
    return " ".join(out)


@_found
def eligibility(r: Result) -> str:
    kind, oid = r.get("kind", "refund"), r.get("order_id")
    if r.get("eligible"):
        out = [f"Good news: order {oid} can get a {kind}. {r.get('explanation', '')}".strip()]
        if _money(r.get("amount"), r.get("currency")):
            out.append(f"The amount would be {_money(r.get('amount'), r.get('currency'))}.")
        if kind == "return" and r.get("label_fee") is not None:
            fee = r["label_fee"]
            out.append("The return label is free on your plan." if not fee else f"The return label costs {fee:.2f}.")
        if r.get("excluded_items"):
            out.append(f"Not returnable: {', '.join(map(str, r['excluded_items']))}.")
        out.append(f"Would you like me to start the {kind}?")
        return " ".join(out)
    out = [f"Order {oid} can't get a {kind} right now. {r.get('explanation', '')}".strip()]
    if r.get("next_step") and r.get("reason") not in ("not_applicable",):
        out.append(str(r["next_step"]))
    return " ".join(out)


@_found
def action(r: Result) -> str:
    oid = r.get("order_id")
    if r.get("status") == "denied":
        return f"I couldn't start that for order {oid}. {r.get('explanation', '')}".strip()
    again = " (this was already done earlier)" if r.get("replayed") else ""
    if r.get("kind") == "refund":
        amount = _money(r.get("amount"), r.get("currency"))
        cancelled = " The order is cancelled." if r.get("order_cancelled") else ""
        return (
            f"I've started a refund{' of ' + amount if amount else ''} for order {oid}{again}, "
            f"reference {r.get('refund_id')}.{cancelled} {r.get('next_step', '')}"
        ).strip()
    fee = r.get("label_fee")
    fee_text = " The label is free." if not fee else f" The label fee is {fee:.2f}."
    excluded = f" Not included: {', '.join(map(str, r['excluded_items']))}." if r.get("excluded_items") else ""
    return (
        f"I've started a return for order {oid}{again}, reference {r.get('return_id')}. "
        f"A prepaid return label is emailed to you.{fee_text}{excluded}"
    )


@_found
def address(r: Result) -> str:
    oid = r.get("order_id")
    if r.get("status") == "denied":
        why = f"{r.get('explanation', '')} {r.get('next_step', '')}".strip()
        return f"I couldn't change the address of order {oid}. {why}".strip()
    a = r.get("address") if isinstance(r.get("address"), Mapping) else {}
    where = ", ".join(str(a[k]) for k in ("line1", "postcode", "city", "country") if a.get(k))
    return f"I've changed the delivery address of order {oid} to {where}."


def articles(r: Result) -> str:
    arts = [a for a in r.get("articles") or () if isinstance(a, Mapping)]
    if not arts:
        return ""  # nothing to say: the core's fallback asks for more
    return "\n".join(f"{a.get('title')}: {a.get('excerpt')}" for a in arts[:2])


@_found
def ticket(r: Result) -> str:
    about = f" about order {r['order_id']}" if r.get("order_id") else ""
    return f"I've opened ticket {r.get('ticket_id')}{about}; our support team will follow up with you."


def handoff(r: Result) -> str:
    return ""  # a hand-off ends the turn with the hand-off text
