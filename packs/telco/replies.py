"""How the telco tools' results read to a customer, for models that do not write the reply themselves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Result = Mapping[str, Any]


def _money(amount: Any, currency: Any = "GBP") -> str:
    return f"{amount:.2f} {currency or ''}".strip() if isinstance(amount, int | float) else ""


def usage(r: Result) -> str:
    plan = r.get("plan") if isinstance(r.get("plan"), Mapping) else {}
    out = [f"You have {r.get('data_left_gb')} GB of data left this cycle"]
    out.append(f"({r.get('data_used_gb')} GB used of {plan.get('data_allowance_gb')} GB")
    extra = r.get("extra_data_gb")
    out[-1] += f" plus {extra} GB of data packs)." if extra else ")."
    if r.get("cycle_end"):
        out.append(f"Your cycle ends on {r['cycle_end']} ({r.get('days_left')} days left).")
    if plan.get("name"):
        out.append(f"Plan: {plan['name']}, {_money(plan.get('monthly_price'), plan.get('currency'))} a month.")
    return " ".join(out)


def invoices(r: Result) -> str:
    rows = [i for i in r.get("invoices") or () if isinstance(i, Mapping)]
    if not rows:
        return "I don't see any invoices on your account yet."
    lines = [f"- {i.get('invoice_id')}: {_money(i.get('total'), i.get('currency'))}, issued {i.get('issued_on')}, "
             f"{i.get('status')}" for i in rows]  # fmt: skip
    return "Your recent invoices:\n" + "\n".join(lines)


def bill_change(r: Result) -> str:
    newest = r.get("newest") if isinstance(r.get("newest"), Mapping) else None
    previous = r.get("previous") if isinstance(r.get("previous"), Mapping) else None
    if newest is None or previous is None:
        return str(r.get("message") or "There is no earlier bill to compare with.")
    head = (
        f"Your latest bill {newest.get('invoice_id')} is {_money(newest.get('total'), newest.get('currency'))}, "
        f"against {_money(previous.get('total'), previous.get('currency'))} on {previous.get('invoice_id')}."
    )
    changes = [c for c in r.get("changes") or () if isinstance(c, Mapping)]
    if not changes:
        return head + " No line item changed."
    why = [f"- {c.get('item')}: {_money(c.get('difference'))} ({c.get('why')})" for c in changes]
    return head + " What changed:\n" + "\n".join(why)


def outage(r: Result) -> str:
    area = r.get("postcode_area")
    rows = [o for o in r.get("outages") or () if isinstance(o, Mapping)]
    if not rows:
        return f"There are no outages reported in your area ({area})."
    lines = [f"- {o.get('service')}: {o.get('status')}, expected fix {o.get('eta') or 'not yet known'}. "
             f"{o.get('summary') or ''}".strip() for o in rows]  # fmt: skip
    lead = "There is an outage in your area" if r.get("active") else "No outage is active in your area"
    return f"{lead} ({area}):\n" + "\n".join(lines)


def data_pack(r: Result) -> str:
    if r.get("status") == "denied":
        return f"I couldn't add a data pack. {r.get('message') or ''}".strip()
    again = " (this was already done earlier)" if r.get("replayed") else ""
    return (f"I've added a {r.get('size_gb')} GB data pack{again}, reference {r.get('pack_id')}; "
            f"{_money(r.get('price'))} will be on your next bill.")  # fmt: skip


def sim(r: Result) -> str:
    if r.get("status") == "denied":
        return f"I couldn't order a replacement SIM. {r.get('message') or ''}".strip()
    barred = " Your old SIM is barred now." if r.get("old_sim_barred") else ""
    return (f"I've ordered a replacement SIM, reference {r.get('order_id')}; it arrives by {r.get('delivery_by')} "
            f"and keeps your number.{barred}")  # fmt: skip


def ticket(r: Result) -> str:
    return f"I've opened ticket {r.get('ticket_id')}; our support team will follow up with you."


def handoff(r: Result) -> str:
    return ""  # a hand-off ends the turn with the hand-off text
