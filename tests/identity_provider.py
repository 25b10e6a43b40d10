"""A local identity provider, for tests of ``web.identity``: signing keys with a ``kid``, their public halves
published as a JWKS over HTTP, and ID tokens minted the way providers mint them.

Keys are real (``cryptography``: RSA 2048 for RS256, P-256 for ES256), tokens are JWTs signed by PyJWT
with the ``kid`` header, and the JWKS is what providers serve at ``/.well-known/jwks.json`` (``kty``,
``kid``, ``use: sig``, ``alg``, the public numbers). Stdlib HTTP on 127.0.0.1, a free port, a daemon
thread. ``publish`` / ``retire`` rotate keys; ``jwks_requests`` counts fetches (the refresh bound).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class SigningKey:
    kid: str
    alg: str  # RS256 or ES256
    private: Any

    @classmethod
    def new(cls, kid: str, alg: str) -> SigningKey:
        if alg == "RS256":
            return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg == "ES256":
            return cls(kid, alg, ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(alg)

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        jwk = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class IdentityProvider:
    def __init__(self, *keys: SigningKey) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.published: list[str] = []
        self.jwks_requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="identity-provider", daemon=True)
        for key in keys:
            self.publish(key)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def issuer(self) -> str:
        return self.url + "/"  # as Auth0 writes it: the tenant's URL with its slash

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [self.keys[kid].public_jwk() for kid in self.published]}

    def publish(self, key: SigningKey) -> SigningKey:
        with self._lock:
            self.keys[key.kid] = key
            if key.kid not in self.published:
                self.published.append(key.kid)
        return key

    def retire(self, kid: str) -> None:
        with self._lock:
            self.published.remove(kid)

    def mint(self, kid: str, claims: dict[str, Any], *, alg: str | None = None) -> str:
        """An ID token signed with the key ``kid`` (published or not), ``kid`` in its header."""
        key = self.keys[kid]
        return jwt.encode(claims, key.private, algorithm=alg or key.alg, headers={"kid": kid})

    def id_token(self, kid: str, audience: str, ttl_s: float = 600, **claims: Any) -> str:
        """What a provider issues at sign-in: iss, aud, sub, iat, exp, plus ``claims``."""
        now = int(time.time())
        base = {"iss": self.issuer, "aud": audience, "sub": "user-7d1f", "iat": now, "exp": now + int(ttl_s)}
        return self.mint(kid, {**base, **claims})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with provider._lock:
                    provider.jwks_requests += 1
                raw = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        return Handler

    def start(self) -> IdentityProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running(*keys: SigningKey) -> Iterator[IdentityProvider]:
    provider = IdentityProvider(*keys).start()
    try:
        yield provider
    finally:
        provider.stop()
