"""The shop's hooks for the offline evals (``evals/packworld.py`` reads them through ``PACK.evals``).

The shop's data is Firestore's own, so a trial's world is the scenario's customers as the stack seeds
them (``packs.shop.seed.build_customer``: the same deterministic data) and the help articles of the
trial's policy; the harness snapshots and diffs those documents itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.cloud import firestore

from packs.shop.records import ORDERS, TICKETS
from packs.shop.seed import build_customer, help_articles
from tools.scope import CUSTOMERS, HELP_ARTICLES

_WRITE_CHUNK = 400


def customer_index(customer_id: str) -> int:
    """``C0042`` -> 42: the seed builds customer N from (seed, N) alone."""
    return int(customer_id[1:])


class ShopEvals:
    """``PackEvals`` for the shop: its seeded customers and articles in the trial's Firestore project."""

    # The shop's scenario categories, in the order the reports list them (before the shared ones).
    categories = ("orders", "shipping", "returns", "refunds", "address", "account")

    def seed_customers(self, client: firestore.Client, customers: Sequence[str], policy: Any = None) -> None:
        """The customers' profiles, orders and tickets, and the help articles rendered from ``policy`` (the
        trial's, as the agent's; None: the shipped one)."""
        writes: list[tuple[firestore.DocumentReference, dict[str, Any]]] = []
        for cid in customers:
            seed = build_customer(customer_index(cid))
            ref = client.collection(CUSTOMERS).document(cid)
            writes.append((ref, seed.profile))
            writes += [(ref.collection(ORDERS).document(oid), doc) for oid, doc in seed.orders.items()]
            writes += [(ref.collection(TICKETS).document(tid), doc) for tid, doc in seed.tickets.items()]
        articles = help_articles(policy)
        writes += [(client.collection(HELP_ARTICLES).document(slug), a) for slug, a in articles.items()]
        for i in range(0, len(writes), _WRITE_CHUNK):
            batch = client.batch()
            for ref, data in writes[i : i + _WRITE_CHUNK]:
                batch.set(ref, data)
            batch.commit()

    def customer_strings(self, customers: Sequence[str]) -> list[str]:
        """What must never reach another customer's reply: ids, e-mails, phones, order and tracking numbers."""
        out: list[str] = []
        for cid in customers:
            seed = build_customer(customer_index(cid))
            out += [cid, str(seed.profile.get("email", "")), str(seed.profile.get("phone", ""))]
            out += list(seed.orders)
            out += [str((o.get("shipping") or {}).get("tracking_id") or "") for o in seed.orders.values()]
        return out
