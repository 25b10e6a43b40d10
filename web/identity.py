"""The chat frontend's identity boundary: who the customer is comes from a signed token, never from the page.

Every session request and chat socket carries an identity token (a JWT, verified with PyJWT): its
``sub`` is the customer id, ``aud`` must be ``AUDIENCE``, ``exp`` is required, and ``iss`` is checked
when an issuer is configured. The server binds each session it issues to that customer
(``contract.binding`` when a session binding key is configured), so a session id, however it leaked,
is worth nothing to another customer: the socket refuses it (4403) and the pipeline refuses its messages.

Keys come from configuration (environment), never from code:

- ``SUPPORTFLOW_IDENTITY_KEY``: a shared secret (HS256), e.g. for a login service of your own;
- ``SUPPORTFLOW_IDENTITY_PUBLIC_KEY_FILE``: a PEM public key (RS256/ES256) of an identity provider;
- ``SUPPORTFLOW_IDENTITY_ISSUER`` (optional): the ``iss`` every token must carry;
- ``SUPPORTFLOW_SESSION_BINDING_KEY``: the key session ids are bound with (the pipeline's option of
  the same name verifies them).

DEMO login (local stack only, ``python -m web --demo-login``): the server mints tokens itself, with
the shared secret (a random one per process if none is configured), for any seeded customer. It is
labelled as such on the page; a real deployment turns it off and gets tokens from its identity provider.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

from contract.binding import IDENTITY_KEY_ENV, SESSION_BINDING_KEY_ENV, parse_keys

AUDIENCE = "supportflow-chat"
DEMO_ISSUER = "supportflow-demo-login"
DEMO_TOKEN_TTL_S = 8 * 3600
LEEWAY_S = 30
SECRET_ALGORITHMS = ["HS256"]
PUBLIC_KEY_ALGORITHMS = ["RS256", "ES256"]
MIN_SECRET_BYTES = 32  # PyJWT warns below this for HS256

KEY_ENV = IDENTITY_KEY_ENV
PUBLIC_KEY_FILE_ENV = "SUPPORTFLOW_IDENTITY_PUBLIC_KEY_FILE"
ISSUER_ENV = "SUPPORTFLOW_IDENTITY_ISSUER"
BINDING_KEY_ENV = SESSION_BINDING_KEY_ENV


class IdentityRefused(ValueError):
    """A token that proves no customer; ``reason`` says why (it is shown to the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """Verifies identity tokens and, with a shared secret and ``demo_login``, mints them."""

    verify_key: str | bytes
    algorithms: tuple[str, ...]
    issuer: str | None = None
    demo_login: bool = False
    binding_keys: tuple[bytes, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, demo_login: bool = False) -> Identity:
        """Keys from the environment. Raises ValueError when none is configured and no demo login is asked for."""
        env = os.environ if environ is None else environ
        issuer = env.get(ISSUER_ENV) or None
        binding = parse_keys(env.get(BINDING_KEY_ENV))
        pem_file = env.get(PUBLIC_KEY_FILE_ENV)
        if pem_file:
            if demo_login:
                raise ValueError(f"{PUBLIC_KEY_FILE_ENV} is set: tokens come from the identity provider, no demo login")
            return cls(Path(pem_file).read_text(), tuple(PUBLIC_KEY_ALGORITHMS), issuer, False, binding)
        secret = env.get(KEY_ENV)
        if secret and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"{KEY_ENV} must be at least {MIN_SECRET_BYTES} bytes")
        if not secret:
            if not demo_login:
                raise ValueError(f"no identity key: set {KEY_ENV} or {PUBLIC_KEY_FILE_ENV} (or run with --demo-login)")
            secret = secrets.token_urlsafe(32)  # demo only: tokens die with this process
        return cls(secret, tuple(SECRET_ALGORITHMS), issuer or (DEMO_ISSUER if demo_login else None), demo_login,
                   binding)  # fmt: skip

    def customer_of(self, token: str | None) -> str:
        """The verified customer id of ``token``; raises IdentityRefused."""
        if not token:
            raise IdentityRefused("no identity token")
        try:
            claims = jwt.decode(
                token,
                self.verify_key,
                algorithms=list(self.algorithms),
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise IdentityRefused("identity token expired") from None
        except jwt.InvalidTokenError as e:
            raise IdentityRefused(f"identity token invalid: {e}") from None
        return str(claims["sub"])

    def mint_demo_token(self, customer_id: str, ttl_s: float = DEMO_TOKEN_TTL_S, now: float | None = None) -> str:
        """DEMO login only: a token for ``customer_id`` signed with the shared secret."""
        if not self.demo_login or self.algorithms != tuple(SECRET_ALGORITHMS):
            raise IdentityRefused("demo login is off")
        issued = int(time.time() if now is None else now)
        claims = {"sub": customer_id, "aud": AUDIENCE, "iat": issued, "exp": issued + int(ttl_s), "demo": True}
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self.verify_key, algorithm="HS256")
