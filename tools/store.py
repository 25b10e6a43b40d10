"""Customer data access, scoped to one customer by construction.

Every read starts from ``customers/{customer_id}``, and the customer id comes
from the session (never from the model), so a turn can only ever see its own
customer's documents. Seed data and layout: ``stack/seed.py``.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

# Bound what one turn pulls in: the prompt is small and the store is on the hot path.
MAX_ORDERS = 8
MAX_TICKETS = 5

TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.TooManyRequests,
)


class CustomerNotFound(LookupError):
    pass


def _plain(value: Any) -> Any:
    """Firestore values -> JSON-friendly values (timestamps become ISO strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class CustomerStore:
    def __init__(self, client: firestore.Client, timeout_s: float = 2.0) -> None:
        self._db = client
        self._timeout = timeout_s

    @retry(
        retry=retry_if_exception_type(TRANSIENT),
        wait=wait_exponential_jitter(initial=0.05, max=1.0),
        stop=stop_after_attempt(4),
        reraise=True,
    )
    def load_context(self, customer_id: str) -> dict[str, Any]:
        """The customer's profile, recent orders and open tickets, or CustomerNotFound."""
        ref = self._db.collection("customers").document(customer_id)
        snap = ref.get(timeout=self._timeout)
        if not snap.exists:
            raise CustomerNotFound(customer_id)
        orders = (
            ref.collection("orders")
            .order_by("placed_at", direction=firestore.Query.DESCENDING)
            .limit(MAX_ORDERS)
            .stream(timeout=self._timeout)
        )
        tickets = ref.collection("tickets").limit(MAX_TICKETS).stream(timeout=self._timeout)
        return {
            "customer_id": customer_id,
            "profile": _plain(snap.to_dict() or {}),
            "orders": [{"order_id": o.id, **_plain(o.to_dict() or {})} for o in orders],
            "tickets": [{"ticket_id": t.id, **_plain(t.to_dict() or {})} for t in tickets],
        }
