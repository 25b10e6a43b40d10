"""PII rule for eval rows: customer ids are keyed hashes, text never leaves the turn.

The key comes from ``SUPPORTFLOW_EVAL_HASH_KEY``; the local stack uses a
fixed development key so local rows are joinable across runs. In
production set a secret key so hashes cannot be reversed by enumerating ids.
"""

from __future__ import annotations

import hashlib
import hmac
import os

_DEV_KEY = "supportflow-local-dev-key"


def customer_hash(customer_id: str) -> str:
    key = os.environ.get("SUPPORTFLOW_EVAL_HASH_KEY", _DEV_KEY).encode()
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]
