"""The support tools, each defined once as a LangChain ``StructuredTool``.

What the model sees of a tool is its name, its description and the JSON schema
of its pydantic ``args_schema``; none of them has a customer parameter. What
the tool receives besides the model's arguments is a ``CustomerScope``
(``Annotated[CustomerScope, InjectedToolArg]``: LangChain leaves it out of the
schema and the executor passes it in), bound to the session's customer.

Every tool returns a small JSON-able dict with a ``status``:
``ok`` (read done), ``not_found``, ``denied`` (policy says no; ``reason`` says
why), ``done`` (an action was carried out) or ``handed_off``.

Data-changing tools (``MUTATING_TOOLS``) run through ``CustomerScope.run_action``:
idempotent per (session, turn, tool, identifying arguments) and audited under
``customers/{cid}/audit``. Their identifying arguments are in ``ACTION_KEYS``
(free text such as a reason or a summary is left out of the key, so a model that
rewords its call on a replay still hits the same action). ``PII_ARGS`` names the
arguments that eval rows must not carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from google.cloud import firestore
from langchain_core.tools import InjectedToolArg, StructuredTool
from pydantic import BaseModel, ConfigDict, Field

from packs.shop import eligibility as policy
from packs.shop import records, replies
from packs.shop.records import HANDOFFS, REFUNDS, RETURNS, TICKETS, normalize_order_id
from tools.actions import ActionSpec
from tools.scope import CustomerScope
from tools.spec import Applies, ToolSpec

MAX_ORDERS_LISTED = 10
MAX_ARTICLES = 5
EXCERPT_CHARS = 360
# The arguments that identify one action of each data-changing tool (its audit record's key): free text such
# as a reason or a summary is left out, so a model that rewords its call on a replay still hits the same action.
IDEMPOTENCY_KEYS: Mapping[str, tuple[str, ...]] = {
    "start_refund_or_return": ("order_id", "kind"),
    "change_delivery_address": ("order_id",),
    "open_ticket": ("order_id",),
    "handoff_to_human": (),
}


def _key(tool: str, **values: Any) -> dict[str, Any]:
    return {k: values[k] for k in IDEMPOTENCY_KEYS[tool]}


OrderId = Annotated[
    str,
    Field(min_length=1, max_length=64, description="The order id exactly as shown to the customer, e.g. O-C0001-01."),
]


class _Args(BaseModel):
    # Unknown arguments are refused by the executor (tools.registry.prepare_arguments) before
    # validation; "ignore" here lets LangChain re-inject the CustomerScope after its own validation.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def _not_found(order_id: str) -> dict[str, Any]:
    return {
        "status": "not_found",
        "order_id": normalize_order_id(order_id)[:64],
        "message": "No order with this id on this customer's account.",
    }


def _items(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = order.get("items") if isinstance(order.get("items"), list) else []
    return [{"name": str(i.get("name", "item")), "qty": i.get("qty", 1)} for i in items if isinstance(i, Mapping)]


def _day(value: Any) -> str | None:
    dt = policy.as_datetime(value)
    return dt.date().isoformat() if dt else None


def _order_summary(order: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "order_id": order.get("order_id"),
        "status": order.get("status"),
        "placed_on": _day(order.get("placed_at")),
        "items": _items(order),
        "total": order.get("total"),
        "currency": order.get("currency"),
    }
    # "Where is my order?" is answered from this list: say who carries each order.
    shipping = order.get("shipping") if isinstance(order.get("shipping"), Mapping) else {}
    if shipping.get("carrier"):
        out["carrier"] = shipping["carrier"]
    for key, id_key in (("refund", "refund_id"), ("return", "return_id")):
        req = order.get(key)
        if isinstance(req, Mapping) and req.get(id_key):
            out[key] = {id_key: req[id_key], "state": req.get("state")}
    return out


# ---------------------------------------------------------------------------
# Read-only tools
# ---------------------------------------------------------------------------


class LookupOrdersArgs(_Args):
    order_id: str | None = Field(
        default=None, max_length=64, description="One order id (e.g. O-C0001-01); leave out to list recent orders."
    )
    limit: int = Field(default=5, ge=1, le=MAX_ORDERS_LISTED, description="How many recent orders to list.")


def lookup_orders(
    order_id: str | None = None, limit: int = 5, *, scope: Annotated[CustomerScope, InjectedToolArg]
) -> dict[str, Any]:
    if order_id:
        order = records.order(scope, order_id)
        return {"status": "ok", "order": _order_summary(order)} if order else _not_found(order_id)
    orders = records.recent_orders(scope, limit)
    return {"status": "ok", "orders": [_order_summary(o) for o in orders]}


class ShipmentArgs(_Args):
    order_id: OrderId


def get_shipment_status(order_id: str, *, scope: Annotated[CustomerScope, InjectedToolArg]) -> dict[str, Any]:
    order = records.order(scope, order_id)
    if order is None:
        return _not_found(order_id)
    shipping = order.get("shipping") if isinstance(order.get("shipping"), Mapping) else {}
    address = shipping.get("address") if isinstance(shipping.get("address"), Mapping) else {}
    out: dict[str, Any] = {
        "status": "ok",
        "order_id": order["order_id"],
        "order_status": order.get("status"),
        "dispatched": bool(shipping.get("tracking_id")),
        "carrier": shipping.get("carrier"),
        "tracking_id": shipping.get("tracking_id"),
        "eta": _day(shipping.get("eta")),
        "delivered_on": _day(order.get("delivered_at")),
        "delivery_city": address.get("city"),
    }
    late = policy.days_late(order, scope.now)
    if late >= 1:
        out["days_late"] = int(late)
    return {k: v for k, v in out.items() if v is not None}


class EligibilityArgs(_Args):
    order_id: OrderId
    kind: Literal["refund", "return"] = Field(
        default="refund", description="'refund' (money back now) or 'return' (send the item back for a refund)."
    )


def _policy_excerpts(scope: CustomerScope, slugs: tuple[str, ...]) -> list[dict[str, Any]]:
    articles = scope.help_articles()
    out = []
    for slug in slugs:
        art = articles.get(slug)
        if art:
            out.append({"slug": slug, "title": art.get("title"), "excerpt": _excerpt(str(art.get("body", "")))})
    return out


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def check_refund_eligibility(
    order_id: str, kind: str = "refund", *, scope: Annotated[CustomerScope, InjectedToolArg]
) -> dict[str, Any]:
    order = records.order(scope, order_id)
    if order is None:
        return _not_found(order_id)
    plan = (scope.profile() or {}).get("plan") if kind == "return" else None
    verdict = policy.eligibility(kind, order, scope.now, plan, scope.policy)
    return {
        "status": "ok",
        "order_id": order["order_id"],
        **verdict.to_dict(),
        "policy": _policy_excerpts(scope, verdict.articles),
    }


class SearchArgs(_Args):
    query: str = Field(min_length=1, max_length=200, description="What the customer wants to know, in a few words.")
    limit: int = Field(default=3, ge=1, le=MAX_ARTICLES, description="How many articles to return.")


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "can",
        "do",
        "does",
        "for",
        "from",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "who",
        "why",
        "with",
        "you",
        "your",
        "me",
        "we",
        "our",
        "this",
        "that",
    ]
)


def _terms(text: str) -> set[str]:
    words = {w for w in _WORD.findall(text.lower()) if w not in _STOP}
    # Crude stemming, enough for "returns"/"return", "refunded"/"refund", "delayed"/"delay".
    return words | {w.rstrip("s") for w in words} | {re.sub(r"(ed|ing)$", "", w) for w in words}


def search_help_articles(
    query: str, limit: int = 3, *, scope: Annotated[CustomerScope, InjectedToolArg]
) -> dict[str, Any]:
    terms = _terms(query)
    scored = []
    for slug, art in scope.help_articles().items():
        tags = _terms(" ".join(art.get("tags") or ()) + " " + slug.replace("-", " "))
        title = _terms(str(art.get("title", "")))
        body = _terms(str(art.get("body", "")))
        score = 3 * len(terms & tags) + 2 * len(terms & title) + len(terms & body)
        if score:
            scored.append((score, slug, art))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return {
        "status": "ok" if scored else "not_found",
        "articles": [
            {"slug": slug, "title": art.get("title"), "excerpt": _excerpt(str(art.get("body", "")))}
            for _, slug, art in scored[:limit]
        ],
    }


# ---------------------------------------------------------------------------
# Tools that change data (idempotent, audited)
# ---------------------------------------------------------------------------


class StartRefundArgs(_Args):
    order_id: OrderId
    kind: Literal["refund", "return"] = Field(
        description="'refund' (cancel an undispatched order, a late order, or a received return) or 'return' "
        "(a delivered order within the return window: emails a prepaid label)."
    )
    reason: str = Field(default="", max_length=300, description="The customer's reason, in a few words.")


def start_refund_or_return(
    order_id: str, kind: str, reason: str = "", *, scope: Annotated[CustomerScope, InjectedToolArg]
) -> dict[str, Any]:
    ref = records.order_ref(scope, order_id)
    if ref is None:
        return _not_found(order_id)
    oid = ref.id
    args = {"order_id": oid, "kind": kind, "reason": reason}

    def body(txn: firestore.Transaction, aid: str) -> dict[str, Any]:
        order = scope.read_in(txn, ref)
        profile = scope.read_in(txn, scope.customer_ref) if kind == "return" else None
        if order is None:
            return _not_found(oid)
        order["order_id"] = oid
        verdict = policy.eligibility(kind, order, scope.now, (profile or {}).get("plan"), scope.policy)
        if not verdict.eligible:
            return {"status": "denied", "order_id": oid, **verdict.to_dict()}
        common = {
            "order_id": oid,
            "session_id": scope.ctx.session_id,
            "turn_id": scope.ctx.turn_id,
            "action_id": aid,
            "note": reason,
            "created_at": firestore.SERVER_TIMESTAMP,
        }
        if kind == "refund":
            refund_id = f"R-{aid[:12].upper()}"
            txn.create(
                scope.customer_ref.collection(REFUNDS).document(refund_id),
                {**common, "amount": verdict.amount, "currency": verdict.currency, "state": "requested",
                 "policy_reason": verdict.reason},
            )  # fmt: skip
            refund = {"refund_id": refund_id, "state": "requested", "amount": verdict.amount}
            update: dict[str, Any] = {"refund": refund}
            if order.get("status") == "placed":
                update["status"] = "cancelled"
            txn.update(ref, update)
            return {
                "status": "done",
                "kind": "refund",
                "order_id": oid,
                "refund_id": refund_id,
                "amount": verdict.amount,
                "currency": verdict.currency,
                "order_cancelled": "status" in update,
                "next_step": "The refund goes to the original payment method within "
                f"{scope.policy.refunds.issued_within}.",
            }
        return_id = f"RMA-{aid[:12].upper()}"
        txn.create(
            scope.customer_ref.collection(RETURNS).document(return_id),
            {**common, "state": "label_sent", "label_fee": verdict.label_fee,
             "excluded_items": list(verdict.excluded_items)},
        )  # fmt: skip
        txn.update(ref, {"return": {"return_id": return_id, "state": "label_sent"}})
        return {
            "status": "done",
            "kind": "return",
            "order_id": oid,
            "return_id": return_id,
            "label_fee": verdict.label_fee,
            "excluded_items": list(verdict.excluded_items),
            "next_step": "A prepaid return label is emailed; the refund follows when we receive the item.",
        }

    key = _key("start_refund_or_return", order_id=oid, kind=kind)
    done = scope.run_action("start_refund_or_return", key, args, body)
    return {**done.result, "replayed": True} if done.replayed else done.result


class ChangeAddressArgs(_Args):
    order_id: OrderId
    line1: str = Field(min_length=3, max_length=120, description="Street address (house number and street).")
    city: str = Field(min_length=1, max_length=80)
    postcode: str = Field(min_length=2, max_length=16)
    country: str | None = Field(
        default=None, min_length=2, max_length=2, description="Two-letter country code; leave out to keep the same."
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean_field(value: str) -> str:
    return " ".join(_CONTROL.sub(" ", value).split())


def change_delivery_address(
    order_id: str,
    line1: str,
    city: str,
    postcode: str,
    country: str | None = None,
    *,
    scope: Annotated[CustomerScope, InjectedToolArg],
) -> dict[str, Any]:
    ref = records.order_ref(scope, order_id)
    if ref is None:
        return _not_found(order_id)
    oid = ref.id
    new = {"line1": _clean_field(line1), "city": _clean_field(city), "postcode": _clean_field(postcode).upper()}
    args = {"order_id": oid, **new, "country": country}

    def body(txn: firestore.Transaction, aid: str) -> dict[str, Any]:
        order = scope.read_in(txn, ref)
        if order is None:
            return _not_found(oid)
        shipping = order.get("shipping") if isinstance(order.get("shipping"), Mapping) else {}
        if order.get("status") != "placed" or shipping.get("tracking_id"):
            return {
                "status": "denied",
                "order_id": oid,
                "reason": "already_dispatched",
                "explanation": "The address can only be changed before the order is dispatched.",
                "next_step": "The carrier's tracking page may offer redirection.",
                "articles": ["change-address"],
            }
        old = shipping.get("address") if isinstance(shipping.get("address"), Mapping) else {}
        address = {**new, "country": (country or old.get("country") or "").upper()}
        txn.update(ref, {"shipping.address": address, "address_changed_by": aid})
        return {"status": "done", "order_id": oid, "address": address}

    done = scope.run_action("change_delivery_address", _key("change_delivery_address", order_id=oid), args, body)
    return {**done.result, "replayed": True} if done.replayed else done.result


class OpenTicketArgs(_Args):
    subject: str = Field(min_length=3, max_length=120, description="A short subject line.")
    details: str = Field(default="", max_length=1000, description="What the customer needs, in a few sentences.")
    order_id: str | None = Field(default=None, max_length=64, description="The order it is about, if any.")


def open_ticket(
    subject: str,
    details: str = "",
    order_id: str | None = None,
    *,
    scope: Annotated[CustomerScope, InjectedToolArg],
) -> dict[str, Any]:
    oref = records.order_ref(scope, order_id) if order_id else None
    if order_id and oref is None:
        return _not_found(order_id)
    oid = oref.id if oref is not None else None
    args = {"subject": subject, "details": details, "order_id": oid}

    def body(txn: firestore.Transaction, aid: str) -> dict[str, Any]:
        if oref is not None and scope.read_in(txn, oref) is None:
            return _not_found(oid or "")
        ticket_id = f"T-{aid[:10].upper()}"
        txn.create(
            scope.customer_ref.collection(TICKETS).document(ticket_id),
            {"subject": _clean_field(subject), "details": details, "order_id": oid, "status": "open",
             "source": "agent", "session_id": scope.ctx.session_id, "turn_id": scope.ctx.turn_id,
             "created_at": firestore.SERVER_TIMESTAMP},
        )  # fmt: skip
        return {"status": "done", "ticket_id": ticket_id, "order_id": oid, "ticket_status": "open"}

    done = scope.run_action("open_ticket", _key("open_ticket", order_id=oid), args, body)
    return {**done.result, "replayed": True} if done.replayed else done.result


HandoffReason = Literal["customer_request", "cannot_help", "policy_exception", "complaint", "other"]


class HandoffArgs(_Args):
    reason: HandoffReason = Field(description="Why a human is needed.")
    summary: str = Field(
        default="", max_length=500, description="One or two sentences for the human agent: what the customer needs."
    )


def handoff_to_human(
    reason: str, summary: str = "", *, scope: Annotated[CustomerScope, InjectedToolArg]
) -> dict[str, Any]:
    args = {"reason": reason, "summary": summary}

    def body(txn: firestore.Transaction, aid: str) -> dict[str, Any]:
        handoff_id = f"H-{aid[:12].upper()}"
        txn.create(
            scope.customer_ref.collection(HANDOFFS).document(handoff_id),
            {"reason": reason, "summary": summary, "session_id": scope.ctx.session_id,
             "turn_id": scope.ctx.turn_id, "state": "waiting", "created_at": firestore.SERVER_TIMESTAMP},
        )  # fmt: skip
        return {"status": "handed_off", "handoff_id": handoff_id, "reason": reason}

    done = scope.run_action("handoff_to_human", _key("handoff_to_human"), args, body)
    return {**done.result, "replayed": True} if done.replayed else done.result


# ---------------------------------------------------------------------------
# The tool set: each tool once, with every fact the core derives its tables from
# ---------------------------------------------------------------------------


def _spec(func: Any, args: type[BaseModel], description: str, *facts: Any, **more: Any) -> ToolSpec:
    """A tool's spec with its LangChain implementation (name, description and schema written once)."""
    tool = StructuredTool.from_function(func=func, name=func.__name__, description=description, args_schema=args)
    return ToolSpec(func.__name__, description, *facts, tool=tool, **more)


REFUND = ActionSpec(
    "refund",
    ("refund", "money back", "reimburse", "cancel", "charge back"),
    "start a refund for one of your orders when the policy allows it; ask me to and I'll go ahead",
    claims=("refund", "money back", "reimburse", "credited", "cancel", "cancelled", "cancellation"),
)
RETURN = ActionSpec(
    "return",
    ("return", "send back", "return label", "ship back", "exchange"),
    "arrange a return for one of your orders when the policy allows it; ask me to and I'll set it up",
    claims=("return", "return label", "rma", "label"),
)
ADDRESS_CHANGE = ActionSpec(
    "address_change",
    ("address", "ship to", "deliver to", "send to", "redirect"),
    "change the delivery address of an order that hasn't been dispatched; tell me the new street, "
    "city and postcode, and which order",
    claims=("address",),
)
TICKET = ActionSpec(
    "ticket",
    (
        "ticket", "open case", "log it", "log this", "log issue", "log problem", "report", "raise issue",
        "complaint", "follow up", "look into", "claim",
    ),
    "open a support ticket so the team follows this up; ask me to and tell me what happened",
    claims=("ticket",),
)  # fmt: skip
HANDOFF = ActionSpec("handoff", (), "connect you with a person", consent=False)

ORDER = {"order_id": "order"}

TOOL_SPECS: tuple[ToolSpec, ...] = (
    _spec(
        lookup_orders,
        LookupOrdersArgs,
        "Look up the customer's orders: one order by id, or the most recent ones. Returns status, items and total.",
        "reads",
        replies.orders,
        id_args=ORDER,
    ),
    _spec(
        get_shipment_status,
        ShipmentArgs,
        "Shipment status of one order: dispatched or not, carrier, tracking number, ETA, delivery date, days late.",
        "reads",
        replies.shipment,
        id_args=ORDER,
    ),
    _spec(
        check_refund_eligibility,
        EligibilityArgs,
        "Check whether an order can be refunded or returned under the shop's policy, and why. Call this before "
        "promising a refund or a return.",
        "reads",
        replies.eligibility,
        id_args=ORDER,
    ),
    _spec(
        start_refund_or_return,
        StartRefundArgs,
        "Start a refund or a return for an order when the policy allows it. Only when the customer asked for it.",
        "changes",
        replies.action,
        actions=(REFUND, RETURN),
        action_arg="kind",
        idempotency_key=IDEMPOTENCY_KEYS["start_refund_or_return"],
        pii_args=frozenset({"reason"}),
        id_args=ORDER,
        text_args=frozenset({"reason"}),
    ),
    _spec(
        change_delivery_address,
        ChangeAddressArgs,
        "Change the delivery address of an order that has not been dispatched yet.",
        "changes",
        replies.address,
        actions=(ADDRESS_CHANGE,),
        idempotency_key=IDEMPOTENCY_KEYS["change_delivery_address"],
        pii_args=frozenset({"line1", "city", "postcode"}),
        id_args=ORDER,
        span_args={"line1": "street", "city": "city", "postcode": "postcode"},
        applies={"order_id": Applies("status", ("placed",), "hasn't been dispatched yet")},
    ),
    _spec(
        search_help_articles,
        SearchArgs,
        "Search the help-centre articles (returns, refunds, shipping, delays, warranty, account, plans, payment).",
        "reads",
        replies.articles,
        pii_args=frozenset({"query"}),
        text_args=frozenset({"query"}),
    ),
    _spec(
        open_ticket,
        OpenTicketArgs,
        "Open a support ticket for something that needs follow-up by the support team.",
        "changes",
        replies.ticket,
        actions=(TICKET,),
        idempotency_key=IDEMPOTENCY_KEYS["open_ticket"],
        pii_args=frozenset({"subject", "details"}),
        id_args=ORDER,
        text_args=frozenset({"subject", "details"}),
    ),
    _spec(
        handoff_to_human,
        HandoffArgs,
        "Hand the conversation to a human agent: when the customer asks for a person, or you cannot help.",
        "changes",
        replies.handoff,
        actions=(HANDOFF,),
        idempotency_key=IDEMPOTENCY_KEYS["handoff_to_human"],
        pii_args=frozenset({"summary"}),
        text_args=frozenset({"summary"}),
        handoff=True,
    ),
)
