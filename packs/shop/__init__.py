"""The demo shop: an outdoor-gear web shop (orders, shipping, refunds, returns, tickets) on Firestore.

The first pack, and the default. Its tools are Python functions over the customer's documents in
Firestore (``packs.shop.tools``, the layout in ``packs.shop.records``), its policy is ``policies.yaml``
(loaded by ``packs.shop.policy``; the rules are ``packs.shop.eligibility``), its seed data
``packs.shop.seed``, its scenarios ``scenarios/`` (held out: ``heldout/``), and its routes and prompts
are the ``support_*`` versions under ``routes/`` and ``prompts/`` here (its orders and tickets rendered
into the prompt by ``packs.shop.prompting``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from packs.shop import eligibility as rules
from packs.shop import seed
from packs.shop.evals import ShopEvals
from packs.shop.phrasing import PHRASING
from packs.shop.policy import default_policy
from packs.shop.prompting import prompt_context
from packs.shop.records import normalize_order_id
from packs.shop.tools import TOOL_SPECS
from tools.context_collection import ContextCollection
from tools.packs import Pack
from tools.spec import IdFormat

CUSTOMER = r"C\d{4,}"


def _done_in_context(context: Mapping[str, Any]) -> set[str]:
    """Refunds and returns the customer's orders already show (a reply may say they happened)."""
    done: set[str] = set()
    for order in context.get("orders") or ():
        if isinstance(order, Mapping):
            if order.get("status") in ("refunded", "cancelled") or order.get("refund"):
                done.add("refund")
            if order.get("status") == "returned" or order.get("return"):
                done.add("return")
    return done


def _verdicts_agree_with_the_article(pack: Pack) -> list[str]:
    """The refund tool's verdict agrees with the refunds article's three cases for every status and age.

    Orders are made up here, around the policy's own thresholds (a day inside and a day outside each
    window), so a policy edit that splits the article from the tool fails the pack's load, naming the case.
    """
    p, now, out = pack.policy, datetime(2026, 11, 20, tzinfo=UTC), []
    window, late = p.returns.window_days, p.delays.refund_after_days_late
    for status in ("placed", "shipped", "delayed", "delivered", "returned", "refunded", "cancelled"):
        for days in (1, late - 1, late + 1, window - 1, window + 1, 3 * window):
            order = {
                "status": status,
                "placed_at": now - timedelta(days=days + 3),
                "delivered_at": now - timedelta(days=days) if status in ("delivered", "returned", "refunded") else None,
                "shipping": {"eta": now - timedelta(days=days)},
            }
            tool = rules.eligibility("refund", order, now, None, p).eligible
            article = rules.is_refundable(order, now, p) and status not in ("delivered",)
            if tool != article:
                out.append(f"a {status} order at {days} days: the refund tool says {tool}, the article {article}")
    return out


def _seed(client: Any, customers: int) -> int:
    return seed.seed_firestore(client, customers).customers


_POLICY = default_policy()

# The customer's recent orders and tickets (customers/{id}/orders, .../tickets): the fields the prompt, the
# guardrails and the policy digests read, with their types.
CONTEXT = (
    ContextCollection(
        "orders",
        id_field="order_id",
        newest_first="placed_at",
        max_kept=8,
        fields={
            "status": "str",
            "items": "records:name",
            "total": "number",
            "currency": "str",
            "placed_at": "timestamp",
            "delivered_at": "timestamp?",
            "shipping": "mapping?",
            "refundable": "bool?",
        },
    ),
    ContextCollection(
        "tickets",
        id_field="ticket_id",
        newest_first="created_at",
        max_kept=5,
        fields={"subject": "str", "status": "str", "created_at": "timestamp", "order_id": "str?"},
    ),
)

PACK = Pack(
    name="shop",
    title="Outdoor-gear web shop (demo)",
    tools=TOOL_SPECS,
    id_formats=(
        IdFormat("customer", CUSTOMER, "C0001"),
        IdFormat(
            "order",
            rf"O-({CUSTOMER})-\d+",
            "O-C0001-01",
            owner_group=1,
            context="orders",
            field="order_id",
            words=("items.name",),
            normalize=normalize_order_id,
        ),  # fmt: skip
        IdFormat("ticket", rf"T-({CUSTOMER})-\d+", "T-C0001-01", owner_group=1),
        # References the tools mint (refunds, returns, tickets, hand-offs): they must come from this session.
        IdFormat("reference", r"(?:RMA|R|H|T)-[0-9A-F]{10,16}", "R-0123456789AB", minted=True),
    ),
    root=Path(__file__).parent,
    context=CONTEXT,
    policy=_POLICY,
    seed=_seed,
    demo_customer=seed.customer_id(1),
    default_customers=seed.DEFAULT_CUSTOMERS,
    reference_time=seed.REFERENCE_TIME,
    build_customers=seed.build_customers,
    evals=ShopEvals(),
    context_actions=_done_in_context,
    validate=_verdicts_agree_with_the_article,
    help_articles=_POLICY.articles_rendered,
    help_topics=(
        "where your order is",
        "what you ordered",
        "refunds and returns",
        "changing a delivery address",
        "damaged or faulty items",
        "our shipping, warranty and account policies",
        "connecting you with a person",
    ),
    texts={
        "greeting": "Hello! I'm the shop's support assistant.",
        "closing": "You're welcome! Glad I could help. If anything else comes up with your orders, just write here.",
        "refusal_other_customer": "I can only help with your own account and orders, so I can't look up or share "
        "anyone else's information. Is there anything about your own orders I can help with?",
        "refusal_instructions": "I can't share or change how I'm set up, but I'm happy to help with your orders, "
        "returns, refunds or account.",
        "refusal_policy": "I'm not able to make exceptions to our policies. I can check what your order is eligible "
        "for, or connect you with a human agent who can review your case.",
    },
    phrasing=PHRASING,
    prompt_context=prompt_context,
)
