"""The shop's refund and return rules as pure functions of an order, the time and a ``ShopPolicy``.

The rules are code; every number they use (windows, thresholds, fees, exclusions, the damaged-items
route) is a parameter of the policy (``packs/shop/policies.yaml``, loaded by ``packs.shop.policy``), the same
object the help articles and the prompt digests are rendered from, so a verdict, the article it cites
and the prompt's digest always state the same numbers. ``policy`` defaults to the shipped one; the
tools pass the turn's (``CustomerScope.policy``). ``packs/shop/seed.py`` computes its ``refundable`` flag
with ``is_refundable``. Each decision names the articles it rests on, so the tool can show the model
the policy text along with the verdict.

Damaged items: a delivered order is refunded once returned; an item reported damaged or missing within
``damaged_items.report_window_days`` is not refunded by the tools at all (nobody can check the damage
from a chat), so the verdict sends it to a ticket, and the article says a person decides from a photo.

Orders are plain dicts as ``tools.scope.plain`` returns them: timestamps are
ISO strings or datetimes, ``shipping.eta``, ``delivered_at``; optional
``refund`` / ``return`` maps record a request already made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from packs.shop.policy import ShopPolicy, default_policy


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


def _delivered_days_ago(order: Mapping[str, Any], now: datetime) -> float | None:
    delivered = as_datetime(order.get("delivered_at"))
    return None if delivered is None else (now - delivered) / timedelta(days=1)


def is_refundable(order: Mapping[str, Any], now: datetime, policy: ShopPolicy | None = None) -> bool:
    """The refunds article's three cases, ignoring requests already made (the seed's ``refundable`` flag)."""
    p = policy or default_policy()
    status = order.get("status")
    if status == "placed":
        return True
    if status in ("delayed", "shipped"):  # on its way, and more than the policy's days past its ETA
        eta = _eta(order)
        return eta is not None and now - eta >= timedelta(days=p.delays.refund_after_days_late)
    if status in ("delivered", "returned"):
        # The article: delivered under the return window's days ago, and returned (or to be returned).
        age = _delivered_days_ago(order, now)
        return age is not None and age <= p.returns.window_days
    return False


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


def refund_eligibility(order: Mapping[str, Any], now: datetime, policy: ShopPolicy | None = None) -> Eligibility:
    """May this order be refunded now, without anything else happening first?"""
    p = policy or default_policy()
    window, delay, issued = p.returns.window_days, p.delays.refund_after_days_late, p.refunds.issued_within
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
            f"The refund is issued within {issued} of the request; banks can take "
            f"{p.refunds.bank_days_min}-{p.refunds.bank_days_max} more days.",
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
    if status == "returned" and is_refundable(order, now, p):
        return verdict(
            True,
            "return_received",
            "The return was received, so the refund is due.",
            f"Start the refund; it is issued within {issued}.",
            "refunds",
            "returns",
        )
    if status == "returned":
        # The refunds article: a refund follows a return of an order delivered under the window's days ago.
        return verdict(
            False,
            "return_window_closed",
            f"This order was delivered more than {window} days ago, outside the window for a refund on return.",
            "A person can look at the return's history: hand off if the customer still expects a refund.",
            "refunds",
            "returns",
        )
    late = days_late(order, now)
    if status in ("delayed", "shipped") and late >= delay:
        return verdict(
            True,
            "late_enough",
            f"The order is {late:.0f} days past its estimated delivery date (policy: more than {delay}).",
            "Start the refund, or offer a free replacement; we open a trace with the carrier either way.",
            "delivery-delays",
            "refunds",
        )
    if status in ("delayed", "shipped"):
        wait = max(1, int(delay - late + 0.999))
        return verdict(
            False,
            "not_late_enough" if late > 0 else "in_transit",
            f"The order is on its way ({late:.0f} days past its ETA); a refund is possible once it is more than "
            f"{delay} days late, or by returning it after delivery.",
            f"Check the tracking link; if it has not arrived in {wait} more day(s), a refund is possible.",
            "delivery-delays",
            "refunds",
        )
    if status == "delivered":
        damage = _damage_route(order, now, p)
        if is_refundable(order, now, p):
            return verdict(
                False,
                "return_required",
                f"Delivered orders are refunded once returned (within {window} days of delivery).",
                "Start a return; the refund follows when we receive it." + damage,
                "returns",
                "refunds",
            )
        return verdict(
            False,
            "window_closed",
            f"The {window}-day return window for this order has closed.",
            "Faulty items are covered by the warranty even outside the return window." + damage,
            "returns",
            "warranty",
        )
    return verdict(False, "not_applicable", f"Orders with status {status!r} cannot be refunded here.", "Hand off.")


def _damage_route(order: Mapping[str, Any], now: datetime, p: ShopPolicy) -> str:
    """The damaged-items rule as a next step, while the order is within the damage-report window."""
    age = _delivered_days_ago(order, now)
    if age is None or age > p.damaged_items.report_window_days:
        return ""
    keep = "it need not be sent back" if not p.damaged_items.return_required else "we email a label for it"
    return (
        f" If an item arrived damaged or missing (reportable within {p.damaged_items.report_window_days} days of "
        f"delivery), open a ticket with a photo instead: the team replaces or refunds it, and {keep}."
    )


def return_eligibility(
    order: Mapping[str, Any], now: datetime, plan: str | None = None, policy: ShopPolicy | None = None
) -> Eligibility:
    """May this order be returned now (and what would the label cost on this plan)?"""
    p = policy or default_policy()
    window = p.returns.window_days
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
    age = _delivered_days_ago(order, now)
    if age is None or age > window:
        return verdict(
            False,
            "window_closed",
            f"The {window}-day return window for this order has closed.",
            "Faulty items are covered by the warranty even outside the return window.",
            "returns",
            "warranty",
        )
    items: Sequence[Any] = order.get("items") if isinstance(order.get("items"), list) else []
    never = [i for i in items if isinstance(i, Mapping) and i.get("sku") in p.returns.non_returnable]
    excluded = tuple(str(i.get("name", i.get("sku", "item"))) for i in never)
    if items and len(excluded) == len(items):
        return Eligibility(
            "return",
            False,
            "not_returnable",
            f"{p.non_returnable_label([str(i.get('sku')) for i in never])} cannot be returned.",
            "Nothing to return.",
            ("returns",),
            excluded_items=excluded,
        )
    return Eligibility(
        "return",
        True,
        "within_window",
        f"Delivered {age:.0f} days ago; returns are accepted within {window} days "
        "for unused items in their original packaging.",
        "Start the return: we email a prepaid label, and the refund follows when we receive the item.",
        ("returns", "refunds"),
        label_fee=p.returns.fee_for(plan),
        excluded_items=excluded,
    )


def eligibility(
    kind: str, order: Mapping[str, Any], now: datetime, plan: str | None = None, policy: ShopPolicy | None = None
) -> Eligibility:
    if kind == "return":
        return return_eligibility(order, now, plan, policy)
    return refund_eligibility(order, now, policy)
