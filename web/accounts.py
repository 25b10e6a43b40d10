"""The shop's side of an identity: which customer a provider's user is, and whether that customer exists.

Read from Firestore by the chat frontend (``FirestoreAccounts``, given to ``Identity.customer_of``), and
only for tokens whose signature, expiry, audience and issuer already verified: a flood of forged tokens
costs the store nothing.

- **Customers**: ``customers/{id}`` must exist, whichever way the token names the customer.
- **Account links** (``SUPPORTFLOW_IDENTITY_ACCOUNT_LINKS=<collection>``): for providers whose tokens
  carry only their own user id. One document per provider user, ``{issuer, subject, customer_id,
  linked_at}``, its id a digest of issuer and subject (an issuer is a URL: its slashes cannot be in a
  document id). ``link_account`` writes it when the shop links a signed-in user to a customer (the
  account page of the shop, or ``python -m web.accounts link``); a link is never silently re-pointed.

Found customers and links are cached for ``CACHE_S``, customers not found for ``MISSING_CACHE_S`` (a
customer created a moment ago signs in soon after).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from google.api_core import exceptions as gexc

from web.customers import CUSTOMERS
from web.identity import ACCOUNT_LINKS_ENV, IdentityUnavailable

CACHE_S = 300.0
MISSING_CACHE_S = 5.0
CACHE_SIZE = 10_000
TIMEOUT_S = 3.0


class AccountLinkConflict(ValueError):
    """The provider's user is already linked to another customer."""


def link_id(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()


def link_account(client: Any, collection: str, issuer: str, subject: str, customer_id: str) -> None:
    """Record that the provider ``issuer``'s user ``subject`` is ``customer_id`` (idempotent; raises
    AccountLinkConflict when that user is linked to another customer: unlink first, on purpose)."""
    doc = client.collection(collection).document(link_id(issuer, subject))
    record = {"issuer": issuer, "subject": subject, "customer_id": customer_id, "linked_at": time.time()}
    try:
        doc.create(record)
    except (gexc.AlreadyExists, gexc.Conflict):
        linked = (doc.get().to_dict() or {}).get("customer_id")
        if linked != customer_id:
            raise AccountLinkConflict(f"{subject!r} of {issuer!r} is linked to another customer") from None


class FirestoreAccounts:
    """``web.identity.CustomerAccounts`` on Firestore, cached; one client, made on first use."""

    def __init__(self, project: str, links_collection: str | None = None, customers_collection: str = CUSTOMERS):
        self.project = project
        self.links_collection = links_collection
        self.customers_collection = customers_collection
        self._client: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()

    def _db(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import firestore

                self._client = firestore.Client(project=self.project)
            return self._client

    def _cached(self, key: tuple[str, str], read: Any) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            value = read()
        except (gexc.GoogleAPICallError, gexc.RetryError) as e:
            raise IdentityUnavailable(f"customer records unavailable ({e.__class__.__name__})") from None
        with self._lock:
            self._cache[key] = (now + (CACHE_S if value is not None else MISSING_CACHE_S), value)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    def exists(self, customer_id: str) -> bool:
        def read() -> str | None:
            doc = self._db().collection(self.customers_collection).document(customer_id)
            snap = doc.get(field_paths=["name"], retry=None, timeout=TIMEOUT_S)  # a mask: not the whole record
            return customer_id if snap.exists else None

        return self._cached(("customer", customer_id), read) is not None

    def linked_customer(self, issuer: str, subject: str) -> str | None:
        if not self.links_collection:
            return None
        collection = self.links_collection

        def read() -> str | None:
            doc = self._db().collection(collection).document(link_id(issuer, subject))
            value = (doc.get(retry=None, timeout=TIMEOUT_S).to_dict() or {}).get("customer_id")
            return value if isinstance(value, str) else None

        return self._cached(("link", link_id(issuer, subject)), read)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def main(argv: list[str] | None = None) -> int:
    """``python -m web.accounts link --issuer ISS --subject SUB --customer CUSTOMER_ID``: link by hand (operators)."""
    parser = argparse.ArgumentParser(prog="python -m web.accounts", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    link = sub.add_parser("link", help="link a provider's user to a customer")
    link.add_argument("--issuer", required=True, help="the provider's iss, exactly as in its tokens")
    link.add_argument("--subject", required=True, help="the user's sub in the provider's tokens")
    link.add_argument("--customer", required=True, help="the shop's customer id")
    link.add_argument("--collection", default=os.environ.get(ACCOUNT_LINKS_ENV, "identity_links"))
    link.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    args = parser.parse_args(argv)
    from google.cloud import firestore

    client = firestore.Client(project=args.project)
    try:
        if not client.collection(CUSTOMERS).document(args.customer).get(field_paths=["name"]).exists:
            print(f"no customer {args.customer}", file=sys.stderr)
            return 1
        link_account(client, args.collection, args.issuer, args.subject, args.customer)
    except AccountLinkConflict as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"linked {args.subject} of {args.issuer} to {args.customer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
