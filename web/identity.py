"""The chat frontend's identity boundary: who the customer is comes from a signed token, never from the page.

Every session request and chat socket carries an identity token (a JWT, verified with PyJWT). The
server binds each session it issues to the token's customer (``contract.binding`` when a session binding
key is configured), so a session id, however it leaked, is worth nothing to another customer: the socket
refuses it (4403) and the pipeline refuses its messages.

What a token must be is configured per deployment, from the environment (``Identity.from_env``); unset,
it is what it always was: ``aud`` = ``supportflow-chat``, the customer id in ``sub``.

- **Keys**, one source: ``SUPPORTFLOW_IDENTITY_KEY`` (a shared secret, HS256, for a login service of your
  own); ``_PUBLIC_KEY_FILE`` (one PEM public key); ``_JWKS_URL`` or ``_JWKS_FILE`` (an identity provider's
  published key set, chosen by the token's ``kid``; ``SigningKeys`` below).
- ``SUPPORTFLOW_IDENTITY_AUDIENCE`` / ``_ISSUER``: the accepted ``aud`` / ``iss`` values, comma-separated
  (both required with a JWKS: a provider signs tokens for every app it serves).
- ``SUPPORTFLOW_IDENTITY_ALGORITHMS``: the accepted ``alg`` values (default HS256 with a secret, RS256 and
  ES256 with public keys). Never ``none``, and never HS* with public keys: a token HMAC'd with the public
  key (algorithm confusion) would verify.
- Which customer: ``SUPPORTFLOW_IDENTITY_CUSTOMER_CLAIM`` (default ``sub``) names the claim that holds the
  customer id; or ``SUPPORTFLOW_IDENTITY_ACCOUNT_LINKS`` names a Firestore collection mapping the
  provider's user (``iss`` + ``sub``) to a customer, written when an account is linked (``web.accounts``).
  Either way the customer must exist (``customers/{id}``).
- ``SUPPORTFLOW_SESSION_BINDING_KEY``, or ``SUPPORTFLOW_SESSION_BINDING_SECRET`` (a Secret Manager version,
  with rotation): the key session ids are bound with (``pipeline.secrets.BindingKeys``), the pipeline's
  options of the same names verify them.

Every refusal has a reason (``IdentityRefused.reason``), sent to the caller: 401 / socket close 4401. A
provider or a store that cannot be reached is ``IdentityUnavailable``: 503 / 1013, try again. A refused
token opens no session and publishes nothing: nothing about it reaches the pipeline.

DEMO login (local stack only, ``python -m web --demo-login``): the server mints tokens itself, with
the shared secret (a random one per process if none is configured), for any seeded customer. It is
labelled as such on the page; a real deployment turns it off and gets tokens from its identity provider.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import jwt
from jwt import PyJWK, PyJWKClient
from pydantic import TypeAdapter, ValidationError

from contract.binding import IDENTITY_KEY_ENV
from contract.messages import Id
from pipeline.secrets import BindingKeys

log = logging.getLogger("web")

AUDIENCE = "supportflow-chat"  # the default audience: tokens shaped for this frontend
CUSTOMER_CLAIM = "sub"
DEMO_ISSUER = "supportflow-demo-login"
DEMO_TOKEN_TTL_S = 8 * 3600
LEEWAY_S = 30
MIN_SECRET_BYTES = 32  # PyJWT warns below this for HS256

SECRET_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_SECRET_ALGORITHMS = ("HS256",)
DEFAULT_PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
_KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}  # alg prefix -> the JWK kty it needs

# The JWKS cache: keys are kept JWKS_MAX_AGE_S, and the set is fetched at most once per JWKS_MIN_REFRESH_S,
# however many tokens with unknown kids arrive: a flood of bad tokens costs the provider one request a period.
JWKS_MAX_AGE_S = 300.0
JWKS_MIN_REFRESH_S = 30.0
JWKS_TIMEOUT_S = 5.0

KEY_ENV = IDENTITY_KEY_ENV
PUBLIC_KEY_FILE_ENV = "SUPPORTFLOW_IDENTITY_PUBLIC_KEY_FILE"
JWKS_URL_ENV = "SUPPORTFLOW_IDENTITY_JWKS_URL"
JWKS_FILE_ENV = "SUPPORTFLOW_IDENTITY_JWKS_FILE"
ISSUER_ENV = "SUPPORTFLOW_IDENTITY_ISSUER"
AUDIENCE_ENV = "SUPPORTFLOW_IDENTITY_AUDIENCE"
ALGORITHMS_ENV = "SUPPORTFLOW_IDENTITY_ALGORITHMS"
CUSTOMER_CLAIM_ENV = "SUPPORTFLOW_IDENTITY_CUSTOMER_CLAIM"
ACCOUNT_LINKS_ENV = "SUPPORTFLOW_IDENTITY_ACCOUNT_LINKS"
KEY_SOURCES = (KEY_ENV, PUBLIC_KEY_FILE_ENV, JWKS_URL_ENV, JWKS_FILE_ENV)

_ID = TypeAdapter(Id)  # the contract's id: what the session and the inbound message will carry


class IdentityRefused(ValueError):
    """A token that proves no customer; ``reason`` says why (it is shown to the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityUnavailable(IdentityRefused):
    """The token could not be checked now (the provider's keys or the customer store unreachable): retry."""


class CustomerAccounts(Protocol):
    """The shop's side of an identity (``web.accounts``); raises IdentityUnavailable when it cannot tell."""

    def linked_customer(self, issuer: str, subject: str) -> str | None: ...

    def exists(self, customer_id: str) -> bool: ...


# -- signing keys from a JWKS ------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    jwk: PyJWK  # parsed by PyJWT
    alg: str | None  # the alg the key set declares for it, if any


def signing_keys(jwks: Any) -> dict[str, SigningKey]:
    """A JWKS document's signing keys by kid; keys PyJWT cannot use are skipped. Symmetric (``oct``) keys
    are dropped: a published key is public, and a public HMAC key signs anything."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS (a JSON object with a keys list)")
    out: dict[str, SigningKey] = {}
    for raw in keys:
        if not isinstance(raw, dict) or raw.get("kty") not in _KEY_TYPE.values() or raw.get("use") not in ("sig", None):
            continue
        kid, alg = raw.get("kid"), raw.get("alg")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            out[kid] = SigningKey(PyJWK(raw), alg if isinstance(alg, str) else None)
        except jwt.PyJWTError:
            continue
    if not out:  # a provider never publishes no keys: a broken response, the last good set stays
        raise ValueError("no usable signing key in the JWKS")
    return out


def jwks_url_loader(url: str, timeout_s: float = JWKS_TIMEOUT_S) -> Callable[[], dict[str, SigningKey]]:
    """Fetched with PyJWT's ``PyJWKClient`` (no redirects, http(s) only), its own cache off: ``SigningKeys``
    decides when to fetch."""
    client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
    return lambda: signing_keys(client.fetch_data())


def jwks_file_loader(path: Path) -> Callable[[], dict[str, SigningKey]]:
    return lambda: signing_keys(json.loads(path.read_text()))


class SigningKeys:
    """A JWKS, cached by kid. Re-fetched when ``max_age_s`` old or when a token names an unknown kid, but
    never more than once per ``min_refresh_s`` (failed fetches count too); a failed fetch keeps the last set."""

    def __init__(
        self,
        load: Callable[[], dict[str, SigningKey]],
        source: str,
        *,
        max_age_s: float = JWKS_MAX_AGE_S,
        min_refresh_s: float = JWKS_MIN_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._load, self._max_age_s, self._min_refresh_s, self._clock = load, max_age_s, min_refresh_s, clock
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = self._tried_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, kid: str) -> SigningKey:
        with self._lock:
            now = self._clock()
            if now - self._loaded_at >= self._max_age_s:
                self._refresh(now)
            key = self._keys.get(kid)
            if key is None:
                self._refresh(now)  # a rotation: the provider published a new key
                key = self._keys.get(kid)
            loaded = self._loaded_at > float("-inf")
        if key is not None:
            return key
        if not loaded:
            raise IdentityUnavailable("the identity provider's signing keys could not be fetched")
        raise IdentityRefused(f"identity token signed with an unknown key (kid {kid[:40]!r})")

    def _refresh(self, now: float) -> None:
        if now - self._tried_at < self._min_refresh_s:
            return
        self._tried_at = now
        try:
            keys = self._load()
        except (jwt.PyJWTError, OSError, ValueError) as e:
            log.warning("signing keys from %s not fetched (%s): keeping the last ones", self.source, e)
            return
        self._keys, self._loaded_at = keys, now


# -- the policy ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenPolicy:
    """What a token must be, per deployment. The defaults are this frontend's own tokens."""

    algorithms: tuple[str, ...] = DEFAULT_SECRET_ALGORITHMS
    audiences: tuple[str, ...] = (AUDIENCE,)
    issuers: tuple[str, ...] = ()
    customer_claim: str = CUSTOMER_CLAIM
    account_links: str | None = None  # a Firestore collection: provider user -> customer


@dataclass(frozen=True)
class Identity:
    """Verifies identity tokens and, with a shared secret and ``demo_login``, mints them."""

    verify_key: str | bytes | SigningKeys  # a shared secret, a PEM public key, or a provider's JWKS
    policy: TokenPolicy = TokenPolicy()
    demo_login: bool = False
    binding: BindingKeys | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, demo_login: bool = False) -> Identity:
        """The deployment's identity configuration (module docstring). Raises ValueError when it is
        incomplete or unsafe, or when no key is configured and no demo login is asked for."""
        env = os.environ if environ is None else environ
        given = [name for name in KEY_SOURCES if env.get(name)]
        if len(given) > 1:
            raise ValueError(f"one identity key source, not {len(given)}: {', '.join(given)}")
        source = given[0] if given else KEY_ENV
        algorithms = _listed(env.get(ALGORITHMS_ENV))
        audiences = _listed(env.get(AUDIENCE_ENV))
        issuers = _listed(env.get(ISSUER_ENV))
        claim = (env.get(CUSTOMER_CLAIM_ENV) or "").strip()
        links = (env.get(ACCOUNT_LINKS_ENV) or "").strip() or None
        if claim and links:
            raise ValueError(f"{CUSTOMER_CLAIM_ENV} and {ACCOUNT_LINKS_ENV}: the customer comes from one of them")
        binding = BindingKeys.from_env(env)
        verify_key: str | bytes | SigningKeys
        if source == KEY_ENV:
            unsafe = [a for a in algorithms if a not in SECRET_ALGORITHMS]
            if unsafe:
                raise ValueError(f"{ALGORITHMS_ENV}: {unsafe} cannot be verified with a shared secret")
            secret = env.get(KEY_ENV)
            if secret and len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"{KEY_ENV} must be at least {MIN_SECRET_BYTES} bytes")
            if not secret:
                if not demo_login:
                    raise ValueError(f"no identity key: set one of {', '.join(KEY_SOURCES)} (or run with --demo-login)")
                secret = secrets.token_urlsafe(32)  # demo only: tokens die with this process
            if demo_login and links:
                raise ValueError(f"{ACCOUNT_LINKS_ENV} is set: the demo login mints tokens naming customers directly")
            verify_key = secret
            algorithms = algorithms or DEFAULT_SECRET_ALGORITHMS
            issuers = issuers or ((DEMO_ISSUER,) if demo_login else ())
        else:
            if demo_login:
                raise ValueError(f"{source} is set: tokens come from the identity provider, no demo login")
            unsafe = [a for a in algorithms if a not in PUBLIC_KEY_ALGORITHMS]
            if unsafe:
                raise ValueError(
                    f"{ALGORITHMS_ENV}: {unsafe} not allowed with public keys "
                    "(HS*: a token HMAC'd with the public key would verify; none: unsigned)"
                )
            algorithms = algorithms or DEFAULT_PUBLIC_KEY_ALGORITHMS
            if source == PUBLIC_KEY_FILE_ENV:
                verify_key = Path(env[source]).read_text()
            else:
                if not (audiences and issuers):
                    raise ValueError(
                        f"{source} needs {AUDIENCE_ENV} and {ISSUER_ENV}: a provider signs tokens for every "
                        "app it serves, so only its issuer and your app's audience tell yours apart"
                    )
                verify_key = _jwks(source, env[source])
        policy = TokenPolicy(
            algorithms=tuple(algorithms),
            audiences=tuple(audiences) or (AUDIENCE,),
            issuers=tuple(issuers),
            customer_claim=claim or CUSTOMER_CLAIM,
            account_links=links,
        )
        return cls(verify_key, policy, demo_login, binding)

    # -- verifying ---------------------------------------------------------------------------------

    def verify(self, token: str | None) -> dict[str, Any]:
        """The claims of a token that is signed, current and meant for this deployment; raises IdentityRefused."""
        if not token:
            raise IdentityRefused("no identity token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise IdentityRefused("identity token invalid: not a JWT") from None
        alg = header.get("alg")
        if alg not in self.policy.algorithms:  # alg none, and HS* against public keys, end here
            raise IdentityRefused(f"identity token refused: algorithm {str(alg)[:16]!r} is not accepted")
        key = self._key(header, alg)
        require = ["exp", "aud", *(["iss"] if self.policy.issuers else [])]
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(self.policy.audiences),
                issuer=list(self.policy.issuers) or None,
                leeway=LEEWAY_S,
                options={"require": require},
            )
        except jwt.ExpiredSignatureError:
            raise IdentityRefused("identity token expired") from None
        except jwt.ImmatureSignatureError:
            raise IdentityRefused("identity token not valid yet (nbf or iat in the future)") from None
        except (jwt.PyJWTError, ValueError, TypeError) as e:  # a key that does not fit the alg raises plain errors
            raise IdentityRefused(f"identity token invalid: {e}"[:200]) from None

    def _key(self, header: dict[str, Any], alg: str) -> Any:
        if not isinstance(self.verify_key, SigningKeys):
            return self.verify_key
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise IdentityRefused("identity token names no signing key (kid)")
        key = self.verify_key.get(kid)
        if key.jwk.key_type != _KEY_TYPE.get(alg[:2]) or (key.alg and key.alg != alg):
            raise IdentityRefused(f"identity token refused: algorithm {alg!r} does not fit its key {kid[:40]!r}")
        return key.jwk.key

    def customer_of(self, token: str | None, accounts: CustomerAccounts | None = None) -> str:
        """The verified customer id of ``token``; raises IdentityRefused. With ``accounts`` (the app always
        gives them) the customer must exist, and account links can be looked up."""
        claims = self.verify(token)
        if self.policy.account_links:
            if accounts is None:
                raise IdentityUnavailable("account links need the customer store")
            subject = claims.get("sub")
            if not isinstance(subject, str) or not subject:
                raise IdentityRefused("identity token names no user (sub)")
            customer = accounts.linked_customer(str(claims.get("iss") or ""), subject)
            if customer is None:
                raise IdentityRefused("no customer is linked to this account")
        else:
            customer = claims.get(self.policy.customer_claim)
            if not isinstance(customer, str) or not customer.strip():
                raise IdentityRefused(f"identity token names no customer (claim {self.policy.customer_claim[:60]!r})")
        try:
            customer = _ID.validate_python(customer)
        except ValidationError:
            raise IdentityRefused("identity token's customer id is not a valid id") from None
        if accounts is not None and not accounts.exists(customer):
            raise IdentityRefused("identity token names a customer who is not there")
        return customer

    # -- DEMO login ----------------------------------------------------------------------------------

    def mint_demo_token(self, customer_id: str, ttl_s: float = DEMO_TOKEN_TTL_S, now: float | None = None) -> str:
        """DEMO login only: a token for ``customer_id`` signed with the shared secret."""
        if not self.demo_login or isinstance(self.verify_key, SigningKeys) or self.policy.algorithms[0] != "HS256":
            raise IdentityRefused("demo login is off")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": customer_id,
            self.policy.customer_claim: customer_id,
            "aud": self.policy.audiences[0],
            "iat": issued,
            "exp": issued + int(ttl_s),
            "demo": True,
        }
        if self.policy.issuers:
            claims["iss"] = self.policy.issuers[0]
        return jwt.encode(claims, self.verify_key, algorithm="HS256")


def _listed(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _jwks(source: str, value: str) -> SigningKeys:
    if source == JWKS_FILE_ENV:
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{JWKS_FILE_ENV}={value}: no such file")
        return SigningKeys(jwks_file_loader(path), value)
    url = urlparse(value)
    loopback = url.hostname in ("localhost",) or _is_loopback(url.hostname or "")
    if url.scheme != "https" and not (url.scheme == "http" and loopback):
        raise ValueError(f"{JWKS_URL_ENV} must be https (plain http only on this machine): keys must not be tampered")
    return SigningKeys(jwks_url_loader(value), value)


def _is_loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
