"""The telco customers' profiles in Firestore: what the chat frontend and the enrichment stage read.

The business data (plans, invoices, SIMs, outages) lives in the pack's MCP server's own store
(``packs.telco.data``); Firestore holds only who each customer is, so the frontend can sign them in
and every turn carries their name and plan.
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from packs.telco import data

PROFILES = "customers"


def profile(account: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": account["name"],
        "email": account["email"],
        "plan": account["plan_name"],
        "address": {"line1": account["address"], "postcode": account["postcode"], "country": "GB"},
        "locale": "en-GB",
    }


def seed_firestore(client: firestore.Client, customers: int = data.DEFAULT_ACCOUNTS) -> int:
    """Write the first ``customers`` accounts' profiles (idempotent: a rerun rewrites the same documents)."""
    accounts = data.build_seed(customers).accounts
    batch = client.batch()
    for account in accounts:
        batch.set(client.collection(PROFILES).document(account["account_id"]), profile(account))
    batch.commit(timeout=60)
    return len(accounts)
