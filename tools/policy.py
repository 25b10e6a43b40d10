"""The shop's refund and return policy as pure functions of an order (and the time).

The numbers and rules are those the help-centre articles state (``help_articles``
``refunds``, ``returns``, ``cancel-order``, ``delivery-delays``, ``warranty``;
seeded by ``stack/seed.py``, whose ``refundable`` flag follows the same rules:
``tests/test_tools.py`` checks the two agree on every seeded order). Each
decision names the articles it rests on, so the tool can show the model the
policy text along with the verdict.

Orders are plain dicts as ``tools.scope.plain`` returns them: timestamps are
ISO strings or datetimes, ``shipping.eta``, ``delivered_at``; optional
``refund`` / ``return`` maps record a request already made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

RETURN_WINDOW_DAYS = 30
DELAY_REFUND_DAYS = 5
REFUND_DAYS = "3 working days"
# Items the returns article excludes (gift cards; opened earbuds are a caveat the agent mentions).
NON_RETURNABLE_SKUS: Mapping[str, str] = {"SKU-1021": "gift card"}
RETURN_LABEL_FEE: Mapping[str, float] = {"free": 4.95, "plus": 0.0, "pro": 0.0}

Kind = Literal["refund", "return"]
KINDS: tuple[str, ...] = ("refund", "return")


def as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _eta(order: Mapping[str, Any]) -> datetime | None:
    shipping = order.get("shipping")
    return as_datetime(shipping.get("eta")) if isinstance(shipping, Mapping) else None


def days_late(order: Mapping[str, Any], now: datetime) -> float:
    """Days past the ETA for an order not delivered yet (0 if not late or already delivered)."""
    eta = _eta(order)
    if eta is None or order.get("status") in ("delivered", "returned", "refunded", "cancelled"):
        return 0.0
    return max(0.0, (now - eta) / timedelta(days=1))


def is_refundable(order: Mapping[str, Any], now: datetime) -> bool:
    """The refunds article's three cases, ignoring requests already made (mirrors ``stack.seed.is_refundable``)."""
    status = order.get("status")
    if status == "placed":
        return True
    if status == "delayed":
        eta = _eta(order)
        return eta is not None and now - eta >= timedelta(days=DELAY_REFUND_DAYS)
    if status == "delivered":
        delivered = as_datetime(order.get("delivered_at"))
        return delivered is not None and now - delivered <= timedelta(days=RETURN_WINDOW_DAYS)
    return status == "returned"


@dataclass(frozen=True)
class Eligibility:
    """A verdict the model can quote: ``reason`` is a stable code, ``explanation`` one sentence."""

    kind: str
    eligible: bool
    reason: str
    explanation: str
    next_step: str
    articles: tuple[str, ...]
    amount: float | None = None
    currency: str | None = None
    label_fee: float | None = None
    excluded_items: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["articles"] = list(self.articles)
        out["excluded_items"] = list(self.excluded_items)
        return {k: v for k, v in out.items() if v not in (None, [], ())}


def _money(order: Mapping[str, Any]) -> tuple[float | None, str | None]:
    total = order.get("total")
    return (float(total) if isinstance(total, int | float) else None), order.get("currency")


def refund_eligibility(order: Mapping[str, Any], now: datetime) -> Eligibility:
    """May this order be refunded now, without anything else happening first?"""
    amount, currency = _money(order)
    status = order.get("status")

    def verdict(eligible: bool, reason: str, explanation: str, next_step: str, *articles: str) -> Eligibility:
        return Eligibility(
            "refund",
            eligible,
            reason,
            explanation,
            next_step,
            articles or ("refunds",),
            amount if eligible else None,
            currency if eligible else None,
        )

    existing = order.get("refund")
    if isinstance(existing, Mapping) and existing.get("refund_id"):
        return verdict(
            False,
            "already_requested",
            f"A refund ({existing['refund_id']}) was already requested for this order.",
            f"The refund is issued within {REFUND_DAYS} of the request; banks can take 5-10 more days.",
        )
    if status == "refunded":
        return verdict(False, "already_refunded", "This order was already refunded.", "Nothing to do.")
    if status == "cancelled":
        return verdict(False, "cancelled", "This order was cancelled.", "Cancelled orders are refunded automatically.")
    if status == "placed":
        return verdict(
            True,
            "not_dispatched",
            "The order has not been dispatched, so it can be cancelled and refunded in full.",
            "Start the refund: the order is cancelled and refunded to the original payment method.",
            "cancel-order",
            "refunds",
        )
    if status == "returned":
        return verdict(
            True,
            "return_received",
            "The return was received, so the refund is due.",
            f"Start the refund; it is issued within {REFUND_DAYS}.",
            "refunds",
            "returns",
        )
    late = days_late(order, now)
    if status in ("delayed", "shipped") and late >= DELAY_REFUND_DAYS:
        return verdict(
            True,
            "late_enough",
            f"The order is {late:.0f} days past its estimated delivery date (policy: more than {DELAY_REFUND_DAYS}).",
            "Start the refund, or offer a free replacement; we open a trace with the carrier either way.",
            "delivery-delays",
            "refunds",
        )
    if status in ("delayed", "shipped"):
        wait = max(1, int(DELAY_REFUND_DAYS - late + 0.999))
        return verdict(
            False,
            "not_late_enough" if late > 0 else "in_transit",
            f"The order is on its way ({late:.0f} days past its ETA); a refund is possible once it is more than "
            f"{DELAY_REFUND_DAYS} days late, or by returning it after delivery.",
            f"Check the tracking link; if it has not arrived in {wait} more day(s), a refund is possible.",
            "delivery-delays",
            "refunds",
        )
    if status == "delivered":
        if is_refundable(order, now):
            return verdict(
                False,
                "return_required",
                f"Delivered orders are refunded once returned (within {RETURN_WINDOW_DAYS} days of delivery).",
                "Start a return; the refund follows when we receive it.",
                "returns",
                "refunds",
            )
        return verdict(
            False,
            "window_closed",
            f"The {RETURN_WINDOW_DAYS}-day return window for this order has closed.",
            "Faulty items are covered by the warranty even outside the return window.",
            "returns",
            "warranty",
        )
    return verdict(False, "not_applicable", f"Orders with status {status!r} cannot be refunded here.", "Hand off.")


def return_eligibility(order: Mapping[str, Any], now: datetime, plan: str | None = None) -> Eligibility:
    """May this order be returned now (and what would the label cost on this plan)?"""
    status = order.get("status")

    def verdict(eligible: bool, reason: str, explanation: str, next_step: str, *articles: str) -> Eligibility:
        return Eligibility("return", eligible, reason, explanation, next_step, articles or ("returns",))

    existing = order.get("return")
    if isinstance(existing, Mapping) and existing.get("return_id"):
        return verdict(
            False,
            "already_requested",
            f"A return ({existing['return_id']}) was already started for this order.",
            "Use the prepaid label we emailed.",
        )
    if status == "placed":
        return verdict(
            False,
            "not_dispatched",
            "The order has not been dispatched yet, so there is nothing to return.",
            "It can be cancelled and refunded instead (a refund).",
            "cancel-order",
        )
    if status in ("shipped", "delayed"):
        return verdict(False, "not_delivered", "The order has not been delivered yet.", "Return it once it arrives.")
    if status in ("returned", "refunded", "cancelled"):
        return verdict(False, f"already_{status}", f"This order was already {status}.", "Nothing to return.")
    if status != "delivered":
        return verdict(False, "not_applicable", f"Orders with status {status!r} cannot be returned here.", "Hand off.")
    delivered = as_datetime(order.get("delivered_at"))
    if delivered is None or now - delivered > timedelta(days=RETURN_WINDOW_DAYS):
        return verdict(
            False,
            "window_closed",
            f"The {RETURN_WINDOW_DAYS}-day return window for this order has closed.",
            "Faulty items are covered by the warranty even outside the return window.",
            "returns",
            "warranty",
        )
    items: Sequence[Any] = order.get("items") if isinstance(order.get("items"), list) else []
    excluded = tuple(
        str(i.get("name", i.get("sku", "item")))
        for i in items
        if isinstance(i, Mapping) and i.get("sku") in NON_RETURNABLE_SKUS
    )
    if items and len(excluded) == len(items):
        return Eligibility(
            "return",
            False,
            "not_returnable",
            "Gift cards cannot be returned.",
            "Nothing to return.",
            ("returns",),
            excluded_items=excluded,
        )
    fee = RETURN_LABEL_FEE.get(str(plan or "").lower(), RETURN_LABEL_FEE["free"])
    left = RETURN_WINDOW_DAYS - (now - delivered) / timedelta(days=1)
    return Eligibility(
        "return",
        True,
        "within_window",
        f"Delivered {RETURN_WINDOW_DAYS - left:.0f} days ago; returns are accepted within {RETURN_WINDOW_DAYS} days "
        "for unused items in their original packaging.",
        "Start the return: we email a prepaid label, and the refund follows when we receive the item.",
        ("returns", "refunds"),
        label_fee=fee,
        excluded_items=excluded,
    )


def eligibility(kind: str, order: Mapping[str, Any], now: datetime, plan: str | None = None) -> Eligibility:
    if kind == "return":
        return return_eligibility(order, now, plan)
    return refund_eligibility(order, now)
