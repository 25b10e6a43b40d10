"""The chat frontend's identity boundary (web/identity.py, web/app.py): the customer comes from a verified
token, sessions are bound to it, and the DEMO login is the only place tokens are minted. The app runs
in-process (FastAPI's TestClient) on the real emulators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from contract.binding import PREFIX, SESSION_BINDING_KEY_ENV, mint_session_id, parse_keys
from stack.clients import firestore_client
from stack.emulators import LocalStack
from web.app import WebConfig, create_app
from web.identity import AUDIENCE, KEY_ENV, Identity, IdentityRefused

SECRET = "s" * 40
BINDING = "b" * 32


def identity(demo: bool = True, **env: str) -> Identity:
    return Identity.from_env({KEY_ENV: SECRET, **env}, demo_login=demo)


# -- tokens, no server --------------------------------------------------------------------------


def test_a_token_names_its_customer() -> None:
    idp = identity()
    assert idp.customer_of(idp.mint_demo_token("C0001")) == "C0001"


def test_an_expired_token_is_refused() -> None:
    idp = identity()
    with pytest.raises(IdentityRefused, match="expired"):
        idp.customer_of(idp.mint_demo_token("C0001", ttl_s=60, now=time.time() - 3600))


def test_a_token_signed_with_another_key_is_refused() -> None:
    claims = {"sub": "C0001", "aud": AUDIENCE, "exp": int(time.time()) + 60, "iss": "supportflow-demo-login"}
    forged = jwt.encode(claims, "x" * 40, algorithm="HS256")
    with pytest.raises(IdentityRefused, match="invalid"):
        identity().customer_of(forged)


def test_tokens_for_another_audience_or_unsigned_are_refused() -> None:
    claims = {"sub": "C0001", "exp": int(time.time()) + 60, "iss": "supportflow-demo-login"}
    with pytest.raises(IdentityRefused, match="invalid"):
        identity().customer_of(jwt.encode({**claims, "aud": "another-app"}, SECRET, algorithm="HS256"))
    with pytest.raises(IdentityRefused, match="algorithm 'none' is not accepted"):
        identity().customer_of(jwt.encode({**claims, "aud": AUDIENCE}, None, algorithm="none"))


def test_keys_come_from_configuration_and_the_demo_login_is_explicit() -> None:
    with pytest.raises(ValueError, match=KEY_ENV):
        Identity.from_env({}, demo_login=False)
    with pytest.raises(ValueError, match="at least"):
        Identity.from_env({KEY_ENV: "short"}, demo_login=False)
    real = identity(demo=False)
    with pytest.raises(IdentityRefused, match="demo login is off"):
        real.mint_demo_token("C0001")
    # Two demo servers without a configured key never accept each other's tokens.
    a, b = Identity.from_env({}, demo_login=True), Identity.from_env({}, demo_login=True)
    with pytest.raises(IdentityRefused):
        b.customer_of(a.mint_demo_token("C0001"))


# -- the app ------------------------------------------------------------------------------------


@pytest.fixture
def client(seeded_stack: LocalStack) -> Iterator[TestClient]:
    app = create_app(WebConfig(project=seeded_stack.project, identity=identity(**{SESSION_BINDING_KEY_ENV: BINDING})))
    with TestClient(app) as c:
        yield c


def login(c: TestClient, customer: str) -> str:
    r = c.post("/api/demo/login", json={"customer_id": customer})
    assert r.status_code == 200, r.text
    assert r.json()["demo"] is True
    return r.json()["token"]


def new_session(c: TestClient, token: str) -> str:
    r = c.post("/api/sessions", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def close_code(c: TestClient, session: str, token: str) -> int:
    url = f"/ws?session_id={session}&token={token}"
    with pytest.raises(WebSocketDisconnect) as closed, c.websocket_connect(url) as ws:
        ws.receive_json()
    return closed.value.code


@pytest.mark.e2e
def test_sessions_need_a_token_and_are_bound_to_its_customer(client: TestClient) -> None:
    assert client.post("/api/sessions").status_code == 401
    assert client.post("/api/sessions", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    # The body's customer id is ignored: the session is the token's customer's.
    token = login(client, "C0007")
    r = client.post("/api/sessions", json={"customer_id": "C0008"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201 and r.json()["customer_id"] == "C0007"
    session = r.json()["session_id"]
    assert session.startswith(PREFIX + ".")  # a bound session id, minted by the frontend
    with client.websocket_connect(f"/ws?session_id={session}&token={token}") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["customer_id"] == "C0007" and hello["customer_name"]
    other = login(client, "C0008")
    assert close_code(client, session, other) == 4403
    headers = {"Authorization": f"Bearer {other}"}
    assert client.get(f"/api/sessions/{session}", headers=headers).status_code == 403


@pytest.mark.e2e
def test_a_bound_session_is_refused_to_another_customer_after_a_frontend_restart(client: TestClient) -> None:
    """The store of a restarted process is empty: the binding alone says whose the session is."""
    stranger_session = mint_session_id(parse_keys(BINDING), "C0009")  # minted "before the restart"
    assert close_code(client, stranger_session, login(client, "C0010")) == 4403
    with client.websocket_connect(f"/ws?session_id={stranger_session}&token={login(client, 'C0009')}") as ws:
        assert ws.receive_json()["customer_id"] == "C0009"
    assert close_code(client, "web-0123456789abcdef", login(client, "C0010")) == 4403  # not bound at all


@pytest.mark.e2e
def test_an_expired_or_missing_token_closes_the_socket_with_4401(client: TestClient) -> None:
    token = login(client, "C0011")
    session = new_session(client, token)
    expired = identity().mint_demo_token("C0011", ttl_s=60, now=time.time() - 3600)
    assert close_code(client, session, expired) == 4401
    assert close_code(client, session, "") == 4401


@pytest.mark.e2e
def test_the_demo_picker_finds_any_seeded_customer_by_id_or_name(client: TestClient, seeded_stack: LocalStack) -> None:
    name = firestore_client(seeded_stack.project).collection("customers").document("C0042").get().get("name")
    assert client.get("/api/config").json() == {"demo_login": True}
    by_id = client.get("/api/customers", params={"q": "C0042"}).json()
    assert by_id == [{"id": "C0042", "name": name}]
    by_name = client.get("/api/customers", params={"q": name.split()[-1].lower(), "limit": 100}).json()
    assert {"id": "C0042", "name": name} in by_name
    assert client.post("/api/demo/login", json={"customer_id": "C9999"}).status_code == 404


@pytest.mark.e2e
def test_without_the_demo_login_nothing_is_minted_or_listed(seeded_stack: LocalStack) -> None:
    real = identity(demo=False)
    with TestClient(create_app(WebConfig(project=seeded_stack.project, identity=real))) as c:
        assert c.get("/api/config").json() == {"demo_login": False}
        assert c.get("/api/customers").status_code == 404
        assert c.post("/api/demo/login", json={"customer_id": "C0001"}).status_code == 404
        # A token from the identity provider (here: signed with the configured secret) works as before.
        token = jwt.encode({"sub": "C0012", "aud": AUDIENCE, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        assert c.post("/api/sessions", headers={"Authorization": f"Bearer {token}"}).json()["customer_id"] == "C0012"


def test_the_local_stack_makes_its_demo_keys_once_and_keeps_configured_ones(tmp_path: Path) -> None:
    from stack.keys import KEYS_FILE, use_demo_keys

    env: dict[str, str] = {}
    assert sorted(use_demo_keys(tmp_path, env)) == sorted([KEY_ENV, SESSION_BINDING_KEY_ENV])
    assert (tmp_path / KEYS_FILE).stat().st_mode & 0o077 == 0  # its owner's only
    again: dict[str, str] = {KEY_ENV: "configured-" + "k" * 32}
    assert use_demo_keys(tmp_path, again) == [SESSION_BINDING_KEY_ENV]  # a configured key wins
    assert (
        again[SESSION_BINDING_KEY_ENV] == env[SESSION_BINDING_KEY_ENV]
    )  # same state dir, same keys: old sessions still verify
    Identity.from_env(env, demo_login=True)  # usable as they are
