"""Sign-in from a real identity provider (web/identity.py, web/accounts.py, web/app.py): ID tokens minted the
way providers mint them (RS256 and ES256, a ``kid``, keys published as a JWKS over HTTP on localhost), with
an audience and a customer claim of this deployment's choosing; key rotation; the refresh bound; account
links in Firestore; and every refusal, each with its reason, over HTTP and the socket, none of which opens
a session or publishes a message. The app runs in-process (FastAPI's TestClient) on the real emulators."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from contract.binding import SESSION_BINDING_KEY_ENV
from pipeline.options import INBOUND_TOPIC
from stack.clients import firestore_client, subscriber_client
from stack.emulators import LocalStack
from tests.identity_provider import IdentityProvider, SigningKey, running
from web.accounts import AccountLinkConflict, link_account
from web.app import WebConfig, create_app
from web.identity import (
    ACCOUNT_LINKS_ENV,
    ALGORITHMS_ENV,
    AUDIENCE_ENV,
    CUSTOMER_CLAIM_ENV,
    ISSUER_ENV,
    JWKS_FILE_ENV,
    JWKS_URL_ENV,
    PUBLIC_KEY_FILE_ENV,
    Identity,
    IdentityRefused,
    IdentityUnavailable,
    SigningKeys,
    jwks_url_loader,
)
from web.store import UnknownSession

# This deployment's choices: a provider's client id as the audience, the customer id in a namespaced claim.
AUDIENCE = "shop-web-7f3a9c"
CLAIM = "https://shop.example/customer_id"
BINDING = "b" * 32


def provider_env(provider: IdentityProvider, **extra: str) -> dict[str, str]:
    return {
        JWKS_URL_ENV: provider.jwks_url,
        AUDIENCE_ENV: AUDIENCE,
        ISSUER_ENV: provider.issuer,
        CUSTOMER_CLAIM_ENV: CLAIM,
        SESSION_BINDING_KEY_ENV: BINDING,
        **extra,
    }


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    with running(SigningKey.new("rsa-2026-01", "RS256"), SigningKey.new("ec-2026-01", "ES256")) as idp:
        yield idp


@pytest.fixture(scope="module")
def inbound(seeded_stack: LocalStack) -> Iterator[str]:
    """A subscription of our own on the inbound topic: what the frontend published, as the pipeline would see it."""
    sub = subscriber_client()
    path = sub.subscription_path(seeded_stack.project, f"identity-test-{uuid.uuid4().hex[:8]}")
    sub.create_subscription(name=path, topic=sub.topic_path(seeded_stack.project, INBOUND_TOPIC))
    try:
        yield path
    finally:
        sub.delete_subscription(subscription=path)
        sub.close()


def published(subscription: str, until_text: str, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Every message on ``subscription`` until one with ``until_text`` arrived (acked); then one more empty pull."""
    sub = subscriber_client()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            response = sub.pull(subscription=subscription, max_messages=50, timeout=5)
            if response.received_messages:
                sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
            seen += [json.loads(m.message.data) for m in response.received_messages]
            if any(m["text"] == until_text for m in seen):
                time.sleep(0.5)
                late = sub.pull(subscription=subscription, max_messages=50, timeout=2).received_messages
                seen += [json.loads(m.message.data) for m in late]
                return seen
    finally:
        sub.close()
    raise AssertionError(f"{until_text!r} never arrived; saw {seen}")


@pytest.fixture(scope="module")
def app_client(seeded_stack: LocalStack, provider: IdentityProvider) -> Iterator[TestClient]:
    identity = Identity.from_env(provider_env(provider))
    with TestClient(create_app(WebConfig(project=seeded_stack.project, identity=identity))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def socket_refusal(c: TestClient, session: str, token: str) -> tuple[int, str]:
    """Connect, try to send anyway, and return the close code and reason."""
    url = f"/ws?session_id={session}&token={token}"
    with pytest.raises(WebSocketDisconnect) as closed, c.websocket_connect(url) as ws:
        ws.send_json({"type": "send", "message_id": f"m-{uuid.uuid4().hex[:8]}", "text": f"refused {session}"})
        ws.receive_json()
    return closed.value.code, closed.value.reason


# -- accepted: tokens as providers mint them ---------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("kid", ["rsa-2026-01", "ec-2026-01"], ids=["RS256", "ES256"])
def test_a_providers_token_is_accepted_in_the_session_request_and_on_the_socket(
    app_client: TestClient, provider: IdentityProvider, inbound: str, kid: str
) -> None:
    token = provider.id_token(kid, AUDIENCE, sub="auth0|64f1c2", **{CLAIM: "C0021"})
    r = app_client.post("/api/sessions", headers=bearer(token))
    assert r.status_code == 201, r.text
    assert r.json()["customer_id"] == "C0021"
    session = r.json()["session_id"]
    text = f"hello from {kid} {uuid.uuid4().hex[:6]}"
    with app_client.websocket_connect(f"/ws?session_id={session}&token={token}") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["customer_id"] == "C0021"
        ws.send_json({"type": "send", "message_id": f"m-{uuid.uuid4().hex[:8]}", "text": text})
        assert ws.receive_json()["type"] == "message"
    sent = [m for m in published(inbound, text) if m["text"] == text]
    assert [(m["customer_id"], m["session_id"]) for m in sent] == [("C0021", session)]
    assert app_client.get(f"/api/sessions/{session}", headers=bearer(token)).status_code == 200


# -- refused: each with its reason, over HTTP and the socket; no session, no message -----------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(provider: IdentityProvider) -> str:
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "u", CLAIM: "C0022", "exp": int(time.time()) + 600}
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-2026-01"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def _hmac_with_public_key(provider: IdentityProvider, kid: str = "rsa-2026-01") -> str:
    """Algorithm confusion: HS256 with the provider's *public* key as the HMAC secret (PyJWT itself refuses to
    mint this, so it is built by hand, as an attacker would)."""
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "u", CLAIM: "C0022", "exp": int(time.time()) + 600}
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    secret = provider.keys[kid].public_pem()
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _claims(provider: IdentityProvider, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "u", CLAIM: "C0022", "iat": now, "exp": now + 600}
    claims.update(changes)
    return provider.mint("rsa-2026-01", {k: v for k, v in claims.items() if v is not None})


def _unknown_kid(provider: IdentityProvider) -> str:
    if "rsa-unpublished" not in provider.keys:
        provider.keys["rsa-unpublished"] = SigningKey.new("rsa-unpublished", "RS256")  # signs, never published
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "u", CLAIM: "C0022", "exp": now + 600}
    return provider.mint("rsa-unpublished", claims)


REFUSALS: dict[str, tuple[Callable[[IdentityProvider], str], str]] = {
    "alg_none": (_unsigned, "algorithm 'none' is not accepted"),
    "hs256_signed_with_the_public_key": (_hmac_with_public_key, "algorithm 'HS256' is not accepted"),
    "missing_exp": (lambda p: _claims(p, exp=None), 'missing the "exp" claim'),
    "expired": (lambda p: _claims(p, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), "expired"),
    "nbf_in_the_future": (lambda p: _claims(p, nbf=int(time.time()) + 3600), "not valid yet"),
    "wrong_audience": (lambda p: _claims(p, aud="another-app"), "Audience doesn't match"),
    "wrong_issuer": (lambda p: _claims(p, iss="https://evil.example/"), "Invalid issuer"),
    "unknown_kid": (_unknown_kid, "unknown key (kid 'rsa-unpublished')"),
    "no_customer": (lambda p: _claims(p, **{CLAIM: None}), "names no customer"),
    "customer_not_there": (lambda p: _claims(p, **{CLAIM: "C9999"}), "customer who is not there"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_token_opens_no_session_and_sends_nothing(
    app_client: TestClient, provider: IdentityProvider, inbound: str, case: str
) -> None:
    make, reason = REFUSALS[case]
    token = make(provider)
    store = app_client.app.state.store  # type: ignore[attr-defined]
    held = len(store)

    r = app_client.post("/api/sessions", headers=bearer(token))
    assert (r.status_code, reason in r.json()["detail"]) == (401, True), r.text
    assert len(store) == held

    # A session that exists (a real customer's), and one nobody opened: the token is refused before either.
    good = provider.id_token("rsa-2026-01", AUDIENCE, **{CLAIM: "C0022"})
    session = app_client.post("/api/sessions", headers=bearer(good)).json()["session_id"]
    assert app_client.get(f"/api/sessions/{session}", headers=bearer(token)).status_code == 401
    for target in (session, f"web-refused-{uuid.uuid4().hex[:8]}"):
        code, why = socket_refusal(app_client, target, token)
        assert code == 4401 and reason in why, (code, why)
    with pytest.raises(UnknownSession):
        store.snapshot(target)  # the unopened one stays unopened
    assert store.snapshot(session).events == []  # nothing was sent into the real one

    # A control message after the refusals: it arrives, and nothing of the refused sockets came before it.
    control = f"control {case} {uuid.uuid4().hex[:6]}"
    with app_client.websocket_connect(f"/ws?session_id={session}&token={good}") as ws:
        ws.receive_json()
        ws.send_json({"type": "send", "message_id": f"m-{uuid.uuid4().hex[:8]}", "text": control})
        assert ws.receive_json()["type"] == "message"
    texts = [m["text"] for m in published(inbound, control)]
    assert not [t for t in texts if t.startswith("refused ")], texts
    assert control in texts


# -- keys: rotation, the refresh bound, a key file, an unreachable provider --------------------------------


@pytest.mark.e2e
def test_key_rotation_old_and_new_kids_work_until_the_old_key_is_removed(seeded_stack: LocalStack) -> None:
    with running(SigningKey.new("k-old", "RS256")) as idp:
        identity = Identity.from_env(provider_env(idp))
        keys = SigningKeys(jwks_url_loader(idp.jwks_url), idp.jwks_url, max_age_s=1.0, min_refresh_s=0.2)
        identity = dataclasses.replace(identity, verify_key=keys)

        def session_for(kid: str) -> int:
            token = idp.id_token(kid, AUDIENCE, **{CLAIM: "C0023"})
            return c.post("/api/sessions", headers=bearer(token)).status_code

        with TestClient(create_app(WebConfig(project=seeded_stack.project, identity=identity))) as c:
            assert session_for("k-old") == 201
            idp.publish(SigningKey.new("k-new", "ES256"))  # the provider publishes its next key
            time.sleep(0.25)  # past the refresh bound: the unknown kid triggers one fetch
            assert (session_for("k-new"), session_for("k-old")) == (201, 201)
            idp.retire("k-old")
            time.sleep(1.1)  # the cached set ages out
            assert (session_for("k-new"), session_for("k-old")) == (201, 401)
            token = idp.id_token("k-old", AUDIENCE, **{CLAIM: "C0023"})
            assert "unknown key" in c.post("/api/sessions", headers=bearer(token)).json()["detail"]


def test_a_flood_of_unknown_kids_fetches_the_key_set_once_per_refresh_period() -> None:
    with running(SigningKey.new("k1", "RS256")) as idp:
        identity = Identity.from_env(provider_env(idp))  # the defaults: one fetch per 30 s at most
        assert identity.customer_of(idp.id_token("k1", AUDIENCE, **{CLAIM: "C0001"})) == "C0001"
        assert idp.jwks_requests == 1
        for i in range(200):
            idp.keys[f"bogus-{i}"] = idp.keys["k1"]  # signed with a real key, under kids never published
            with pytest.raises(IdentityRefused, match="unknown key"):
                identity.customer_of(idp.mint(f"bogus-{i}", {"iss": idp.issuer, "aud": AUDIENCE, "exp": 2**40}))
        assert idp.jwks_requests == 1  # the first fetch was moments ago: the bound holds every refresh back

        keys = SigningKeys(jwks_url_loader(idp.jwks_url), idp.jwks_url, min_refresh_s=0.3)
        bounded = dataclasses.replace(identity, verify_key=keys)
        before = idp.jwks_requests
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with pytest.raises(IdentityRefused, match="unknown key"):
                bounded.customer_of(idp.mint("bogus-0", {"iss": idp.issuer, "aud": AUDIENCE, "exp": 2**40}))
        assert 2 <= idp.jwks_requests - before <= 5  # about one a 0.3 s over a second, however many tokens


def test_keys_from_a_jwks_file(tmp_path: Path) -> None:
    key = SigningKey.new("file-es", "ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key.public_jwk()]}))
    with running(key) as idp:  # only its minting is used: the keys come from the file
        env = {JWKS_FILE_ENV: str(path), AUDIENCE_ENV: AUDIENCE, ISSUER_ENV: idp.issuer, CUSTOMER_CLAIM_ENV: CLAIM}
        identity = Identity.from_env(env)
        assert identity.customer_of(idp.id_token("file-es", AUDIENCE, **{CLAIM: "C0005"})) == "C0005"
        assert idp.jwks_requests == 0


@pytest.mark.e2e
def test_an_unreachable_provider_is_a_503_and_a_1013_not_a_refusal(seeded_stack: LocalStack) -> None:
    with running(SigningKey.new("k1", "RS256")) as idp:
        env = provider_env(idp)
        token = idp.id_token("k1", AUDIENCE, **{CLAIM: "C0024"})
    identity = Identity.from_env(env)  # the provider has stopped: its URL no longer answers
    with pytest.raises(IdentityUnavailable):
        identity.customer_of(token)
    with TestClient(create_app(WebConfig(project=seeded_stack.project, identity=identity))) as c:
        r = c.post("/api/sessions", headers=bearer(token))
        assert r.status_code == 503 and "could not be fetched" in r.json()["detail"]
        code, _ = socket_refusal(c, "web-0123456789abcdef", token)
        assert code == 1013


# -- which customer: a claim of the deployment's choosing, or an account link ------------------------------


@pytest.mark.e2e
def test_account_links_map_the_providers_user_to_a_customer(seeded_stack: LocalStack) -> None:
    collection = f"identity_links_{uuid.uuid4().hex[:6]}"
    db = firestore_client(seeded_stack.project)
    with running(SigningKey.new("k1", "RS256")) as idp:
        env = provider_env(idp, **{ACCOUNT_LINKS_ENV: collection})
        del env[CUSTOMER_CLAIM_ENV]
        identity = Identity.from_env(env)
        link_account(db, collection, idp.issuer, "google-oauth2|1093", "C0031")
        link_account(db, collection, idp.issuer, "google-oauth2|1093", "C0031")  # linking again changes nothing
        with pytest.raises(AccountLinkConflict):
            link_account(db, collection, idp.issuer, "google-oauth2|1093", "C0032")
        linked = idp.id_token("k1", AUDIENCE, sub="google-oauth2|1093")
        stranger = idp.id_token("k1", AUDIENCE, sub="google-oauth2|5555")
        with TestClient(create_app(WebConfig(project=seeded_stack.project, identity=identity))) as c:
            r = c.post("/api/sessions", headers=bearer(linked))
            assert r.status_code == 201 and r.json()["customer_id"] == "C0031"
            r = c.post("/api/sessions", headers=bearer(stranger))
            assert r.status_code == 401 and r.json()["detail"] == "no customer is linked to this account"
            code, why = socket_refusal(c, "web-0123456789abcdef", stranger)
            assert (code, why) == (4401, "no customer is linked to this account")
    db.close()


# -- configuration ----------------------------------------------------------------------------------------


def test_the_default_configuration_is_todays_tokens() -> None:
    policy = Identity.from_env({"SUPPORTFLOW_IDENTITY_KEY": "s" * 40}).policy
    assert (policy.audiences, policy.customer_claim, policy.algorithms) == (("supportflow-chat",), "sub", ("HS256",))
    assert policy.issuers == () and policy.account_links is None


def test_unsafe_or_incomplete_provider_configurations_are_refused_at_start(tmp_path: Path) -> None:
    key = SigningKey.new("k", "RS256")
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.public_pem())
    url = "http://127.0.0.1:9/jwks.json"
    full = {JWKS_URL_ENV: url, AUDIENCE_ENV: AUDIENCE, ISSUER_ENV: "https://idp.example/"}
    for env, complaint in [
        ({**full, ALGORITHMS_ENV: "RS256,HS256"}, "not allowed with public keys"),
        ({PUBLIC_KEY_FILE_ENV: str(pem), ALGORITHMS_ENV: "none"}, "not allowed with public keys"),
        ({JWKS_URL_ENV: url, AUDIENCE_ENV: AUDIENCE}, "needs"),
        ({**full, JWKS_URL_ENV: "http://idp.example/jwks.json"}, "must be https"),
        ({**full, PUBLIC_KEY_FILE_ENV: str(pem)}, "one identity key source"),
        ({**full, CUSTOMER_CLAIM_ENV: CLAIM, ACCOUNT_LINKS_ENV: "links"}, "from one of them"),
        ({"SUPPORTFLOW_IDENTITY_KEY": "s" * 40, ALGORITHMS_ENV: "RS256"}, "cannot be verified with a shared secret"),
    ]:
        with pytest.raises(ValueError, match=complaint):
            Identity.from_env(env)
    # A PEM key (today's option) takes provider tokens with a chosen audience and claim too.
    with running(key) as idp:
        identity = Identity.from_env({PUBLIC_KEY_FILE_ENV: str(pem), AUDIENCE_ENV: AUDIENCE, CUSTOMER_CLAIM_ENV: CLAIM})
        assert identity.customer_of(idp.id_token("k", AUDIENCE, **{CLAIM: "C0002"})) == "C0002"
        with pytest.raises(IdentityRefused, match="'HS256' is not accepted"):
            identity.customer_of(_hmac_with_public_key(idp, "k"))
