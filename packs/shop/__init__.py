"""The demo shop: an outdoor-gear web shop (orders, shipping, refunds, returns, tickets) on Firestore.

The first pack, and the default. Its tools are Python functions over the customer's documents in
Firestore (``packs.shop.tools``), its policy is ``tools/policies.yaml``, and its routes and prompts
are the ``support_*`` versions under ``prompts/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packs.shop.tools import TOOL_SPECS
from tools.packs import Pack
from tools.policies import default_policy
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


_POLICY = default_policy()

PACK = Pack(
    name="shop",
    title="Outdoor-gear web shop (demo)",
    tools=TOOL_SPECS,
    id_formats=(
        IdFormat("customer", CUSTOMER, "C0001"),
        IdFormat(
            "order", rf"O-({CUSTOMER})-\d+", "O-C0001-01", owner_group=1,
            context="orders", field="order_id", words=("items.name",),
        ),  # fmt: skip
        IdFormat("ticket", rf"T-({CUSTOMER})-\d+", "T-C0001-01", owner_group=1),
        # References the tools mint (refunds, returns, tickets, hand-offs): they must come from this session.
        IdFormat("reference", r"(?:RMA|R|H|T)-[0-9A-F]{10,16}", "R-0123456789AB", minted=True),
    ),
    root=Path(__file__).parent,
    routes_version="support_tools_v2",
    policy=_POLICY,
    context_actions=_done_in_context,
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
    },
)
