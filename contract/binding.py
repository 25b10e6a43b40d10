"""Session ids that carry their own proof of owner: the frontend's binding of a session to one customer.

A bound session id is ``b1.<nonce>.<expires>.<tag>``, where ``tag`` is an HMAC-SHA256 over the nonce,
the expiry and the customer id, under a key that only the frontend (which mints) and the pipeline
(which verifies) hold. The session id is already on every inbound message and in every ordering key,
so the binding needs no new field in the contract and no change to any consumer; 63 characters, well
inside ``contract.messages.Id``.

What the pipeline learns from a verified id, without any store: this session was issued by the
frontend to *this* customer, and not longer than its lifetime ago. So a message claiming another
customer in that session, an id made up or altered without the key, one made with another key and
one past its expiry are each refused with their own reason (``BindingRefused.reason``), also after the
pipeline lost all its state. Verifying is stdlib ``hmac`` (constant-time compare): a JWT would not fit
an id's 128 characters with the customer inside, and the identity token at the frontend is the JWT.

Keys: one or more (rotation: mint with the first, accept any), at least ``MIN_KEY_BYTES`` long. They come
from configuration (the local stack) or, deployed, from a Secret Manager version that the frontend and the
workers read themselves (``pipeline.secrets.BindingKeys``, which also rotates them): never in job options.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

# Where the keys come from (the environment of the frontend and the pipeline; pipeline/options.py maps
# SUPPORTFLOW_SESSION_BINDING_KEY onto --session_binding_key). The identity key is the frontend's only.
SESSION_BINDING_KEY_ENV = "SUPPORTFLOW_SESSION_BINDING_KEY"
IDENTITY_KEY_ENV = "SUPPORTFLOW_IDENTITY_KEY"

PREFIX = "b1"
TAG_CHARS = 32  # 192 bits of the HMAC, base64url
MIN_KEY_BYTES = 16
DEFAULT_TTL_S = 12 * 3600


class BindingRefused(ValueError):
    """A session id that does not prove the message's customer owns the session; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_keys(value: str | Sequence[str] | None) -> tuple[bytes, ...]:
    """Keys from configuration: a comma-separated string or a list; empty means "no binding configured"."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    keys = tuple(k.strip().encode("utf-8") for k in items if k.strip())
    short = [k for k in keys if len(k) < MIN_KEY_BYTES]
    if short:
        raise ValueError(f"a session binding key must be at least {MIN_KEY_BYTES} bytes ({len(short)} too short)")
    return keys


def _tag(key: bytes, nonce: str, expires: int, customer_id: str) -> str:
    mac = hmac.new(key, f"{PREFIX}|{nonce}|{expires}|{customer_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii")[:TAG_CHARS]


def mint_session_id(
    keys: Sequence[bytes], customer_id: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None
) -> str:
    """A new session id bound to ``customer_id``, valid ``ttl_s`` from ``now`` (signed with the first key)."""
    if not keys:
        raise ValueError("no session binding key configured")
    nonce = secrets.token_hex(8)
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{PREFIX}.{nonce}.{expires}.{_tag(keys[0], nonce, expires, customer_id)}"


def verify_session_binding(keys: Sequence[bytes], session_id: str, customer_id: str, now: float | None = None) -> None:
    """Raise ``BindingRefused`` unless ``session_id`` was minted for ``customer_id`` with one of ``keys``
    and has not expired. The tag is checked before the expiry, so an altered expiry reads as forged."""
    parts = session_id.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise BindingRefused("session id carries no binding (not issued by the frontend)")
    _, nonce, expires_text, tag = parts
    if not expires_text.isdigit() or len(tag) != TAG_CHARS:
        raise BindingRefused("session binding malformed")
    expires = int(expires_text)
    if not any(hmac.compare_digest(_tag(k, nonce, expires, customer_id), tag) for k in keys):
        raise BindingRefused(
            "session binding does not verify for this customer (issued to another customer, or forged)"
        )
    if (time.time() if now is None else now) >= expires:
        raise BindingRefused("session binding expired")
