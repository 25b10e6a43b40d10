"""The FastAPI app: chat page, chat socket, session API, operator view.

Routes:

- ``GET /``: the chat page; ``GET /ops``: the operator view (static HTML + JS in ``web/static``).
- ``GET /api/config``: ``{"demo_login": bool}``, what the page needs to know before it logs in.
- ``GET /api/pack``: ``{"name", "title", "customer_example", "context": [collection, ...]}``, the running
  pack's words (``--pack``), so the page names the business it serves.
- DEMO login only: ``GET /api/customers?q=..``: seeded customers whose id starts with / name contains ``q``;
  ``POST /api/demo/login`` ``{"customer_id": "<a seeded id>"}``: an identity token for that seeded customer.
- ``POST /api/sessions`` (``Authorization: Bearer <identity token>``): a new session id, bound to the
  token's customer (``contract.binding`` when a session binding key is configured).
- ``GET /api/sessions/{session_id}`` (same header): the session's history, for its own customer only.
- ``WS /ws?session_id=..&token=..``: the chat socket (protocol below); the customer is the token's.

Identity (``web.identity``): the customer id never comes from the page, only from a verified token.
- ``GET /api/ops``: operator counts as JSON; ``GET /api/ops/stream``: the same every second, as SSE.
- ``GET /healthz``: subscriptions and whether they are pulling.

Chat socket protocol (JSON text frames):

- server -> page, first: ``{"type": "hello", "session_id", "customer_id", "events": [...], "omitted"}``
  (the session's history: messages and replies in the order the server saw them);
- then ``{"type": "message", ...}`` for each message published in the session (from any tab,
  also the sender's acknowledgement), ``{"type": "reply", ...AgentReply}`` for each reply,
  ``{"type": "delta", ...ReplyDelta}`` for each delta or retraction of a reply being written (not in the
  history: a reconnect shows the final),
  ``{"type": "rejected", "message_id", "reason"}`` when a message fails the contract or publishing;
- page -> server: ``{"type": "send", "message_id": "...", "text": "..."}``. The page chooses the
  message id, so a resend after a reconnect is idempotent (stored once, published once).

Close codes: 4400 bad request, 4401 identity token refused, with the reason (missing, invalid, expired,
naming no customer or one who is not there: the page logs in again), 4403 session of another customer,
4404 session not held here (the page then offers a new conversation), 4408 socket too slow (the page
reconnects), 1013 the identity provider's keys or the customer store unreachable (try again). HTTP: 401
with the reason, 503 for the unreachable. A refused token opens no session and publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, TypeAdapter, ValidationError

from contract.binding import BindingRefused, mint_session_id, verify_session_binding
from contract.messages import ContractError, Id, parse_inbound, utc_now
from tools.packs import DEFAULT_PACK, load_pack
from web.accounts import FirestoreAccounts
from web.customers import DEFAULT_LIMIT, CustomerDirectory
from web.hub import Listener, PubSubHub
from web.identity import Identity, IdentityRefused, IdentityUnavailable
from web.ops import OpsStats
from web.store import DEFAULT_MAX_EVENTS, DEFAULT_MAX_SESSIONS, SessionConflict, SessionStore, UnknownSession

log = logging.getLogger("web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
OPS_PUSH_INTERVAL_S = 1.0
MAX_FRAME_CHARS = 64 * 1024

_ID = TypeAdapter(Id)


@dataclass
class WebConfig:
    project: str
    identity: Identity = field(default_factory=lambda: Identity.from_env(demo_login=True))
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_events: int = DEFAULT_MAX_EVENTS
    read_names: bool = True  # read the customers' names from Firestore at startup
    pack: str = DEFAULT_PACK  # the business served: the page's words come from its declaration


class DemoLogin(BaseModel):
    customer_id: str


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def close_reason(text: str) -> str:
    """A WebSocket close reason fits in 123 bytes."""
    return text.encode()[:120].decode(errors="ignore")


def valid_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return _ID.validate_python(value)
    except ValidationError:
        return None


def create_app(config: WebConfig) -> FastAPI:
    store = SessionStore(config.max_sessions, config.max_events)
    ops = OpsStats()
    hub = PubSubHub(config.project, store, ops)
    identity = config.identity
    binding = identity.binding
    directory = CustomerDirectory(config.project)
    accounts = FirestoreAccounts(config.project, identity.policy.account_links)
    stopping = asyncio.Event()

    def load_names() -> None:
        try:
            directory.refresh()
        except Exception:  # names are decoration: the login works by id
            log.exception("could not read customer names from Firestore")

    async def verified_customer(token: str | None) -> str:
        # In a thread: the provider's keys (JWKS) and the customer store may be fetched.
        return await asyncio.to_thread(identity.customer_of, token, accounts)

    async def customer_of(token: str | None) -> str:
        try:
            return await verified_customer(token)
        except IdentityUnavailable as e:
            raise HTTPException(503, e.reason) from None
        except IdentityRefused as e:
            raise HTTPException(401, e.reason, headers={"WWW-Authenticate": "Bearer"}) from None

    async def may_join(session_id: str, customer_id: str) -> bool:
        """A bound session id (when binding keys are configured) must name this customer."""
        if binding is None:
            return True
        try:
            verify_session_binding(await asyncio.to_thread(binding.accepted), session_id, customer_id)
        except BindingRefused:
            return False
        return True

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(hub.start, loop)
        if config.read_names:
            threading.Thread(target=load_names, name="customer-names", daemon=True).start()
        app.state.stop_streams = lambda: loop.call_soon_threadsafe(stopping.set)
        try:
            yield
        finally:
            stopping.set()
            await asyncio.to_thread(hub.stop)
            accounts.close()

    app = FastAPI(title="supportflow chat", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.store, app.state.ops, app.state.hub = store, ops, hub
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # -- pages --------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/ops", include_in_schema=False)
    async def ops_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "ops.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = hub.pulling()
        body = {"ok": ok, "project": config.project, "subscriptions": hub.subscriptions}
        return JSONResponse(body, status_code=200 if ok else 503)

    # -- sessions -----------------------------------------------------------------

    @app.get("/api/config")
    async def page_config() -> dict[str, Any]:
        return {"demo_login": identity.demo_login}

    business = load_pack(config.pack)  # a missing or inconsistent pack fails the start, naming why

    @app.get("/api/pack")
    async def page_pack() -> dict[str, Any]:
        return {
            "name": business.name,
            "title": business.title,
            "customer_example": business.customer_id.example,
            "context": [c.name for c in business.context],
        }

    # -- DEMO login: seeded customers and tokens minted here (off unless --demo-login) ------------

    def require_demo() -> None:
        if not identity.demo_login:
            raise HTTPException(404, "demo login is off: tokens come from the identity provider")

    @app.get("/api/customers")
    async def customers(q: str = "", limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        require_demo()
        return await asyncio.to_thread(directory.search, q, limit)

    @app.post("/api/demo/login")
    async def demo_login(body: DemoLogin) -> dict[str, Any]:
        require_demo()
        customer_id = valid_id(body.customer_id)
        found = await asyncio.to_thread(directory.get, customer_id) if customer_id else None
        if found is None:
            raise HTTPException(404, "no seeded customer with that id")
        token = identity.mint_demo_token(found["id"])
        return {"token": token, "customer_id": found["id"], "name": found["name"], "demo": True}

    # -- sessions: the customer is the token's ---------------------------------------------------

    @app.post("/api/sessions", status_code=201)
    async def new_session(authorization: str | None = Header(default=None)) -> dict[str, Any]:  # noqa: B008
        customer_id = valid_id(await customer_of(bearer(authorization)))
        if customer_id is None:
            raise HTTPException(422, "the token's customer id is not a valid id")
        if binding is not None:
            session_id = mint_session_id([await asyncio.to_thread(binding.signing_key)], customer_id)
        else:
            session_id = f"web-{uuid.uuid4().hex[:16]}"
        store.open(session_id, customer_id)
        return {"session_id": session_id, "customer_id": customer_id, "customer_name": directory.name(customer_id)}

    @app.get("/api/sessions/{session_id}")
    async def session_history(session_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:  # noqa: B008
        customer_id = await customer_of(bearer(authorization))
        try:
            snap = store.snapshot(session_id)
        except UnknownSession:
            raise HTTPException(404, "session not held by this server") from None
        if snap.customer_id != customer_id:
            raise HTTPException(403, "session belongs to another customer")
        return {
            "session_id": snap.session_id,
            "customer_id": snap.customer_id,
            "events": snap.events,
            "omitted": snap.omitted,
        }

    # -- chat socket ----------------------------------------------------------------

    async def pump(ws: WebSocket, listener: Listener) -> None:
        """The socket's only writer: everything sent to the page goes through its queue."""
        while True:
            event = await listener.queue.get()
            if listener.overflowed:  # events were dropped: a reconnect gets the full history instead
                await ws.close(4408, "too slow; reconnect")
                return
            await ws.send_text(json.dumps(event))

    async def handle_send(frame: dict[str, Any], session_id: str, customer_id: str, listener: Listener) -> None:
        message_id = frame.get("message_id")
        if not isinstance(message_id, str) or valid_id(message_id) is None:
            listener.offer({"type": "rejected", "message_id": message_id, "reason": "message_id: invalid"})
            return
        existing = store.find_message(session_id, message_id)
        if existing is not None:  # a resend after a reconnect: already published
            listener.sent.discard(f"m:{message_id}")
            listener.offer(existing)
            return
        payload = {
            "session_id": session_id,
            "customer_id": customer_id,
            "message_id": message_id,
            "text": frame.get("text"),
            "sent_at": utc_now().isoformat(),
        }
        try:
            # The pipeline's own reader: same rules (fields, size, version) as on the other side of the topic.
            msg = parse_inbound(json.dumps(payload).encode("utf-8"))
        except ContractError as e:
            listener.offer({"type": "rejected", "message_id": message_id, "reason": e.reason})
            return
        try:
            await hub.publish(msg)
        except Exception as e:  # any publish failure is reported to the page, which may resend
            log.exception("publishing %s failed", message_id)
            listener.offer({"type": "rejected", "message_id": message_id, "reason": f"not sent: {e}"[:300]})
            return
        event = store.add_message(msg)
        if event is not None:
            hub.fanout(session_id, event)  # every tab of the session, this one included

    @app.websocket("/ws")
    async def chat_socket(ws: WebSocket) -> None:
        await ws.accept()
        session_id = valid_id(ws.query_params.get("session_id"))
        if session_id is None:
            await ws.close(4400, "session_id invalid")
            return
        try:
            customer_id = valid_id(await verified_customer(ws.query_params.get("token")))
        except IdentityUnavailable as e:
            await ws.close(1013, close_reason(e.reason))
            return
        except IdentityRefused as e:
            await ws.close(4401, close_reason(e.reason))
            return
        if customer_id is None or not await may_join(session_id, customer_id):
            await ws.close(4403, "session belongs to another customer")
            return
        try:
            # A session this process does not hold (it restarted) is opened again for the token's customer.
            customer_id = store.open(session_id, customer_id)
        except SessionConflict:
            await ws.close(4403, "session belongs to another customer")
            return
        # Listen first, then snapshot, in one step of the loop: a reply stored meanwhile is either in the
        # snapshot or queued after it; the listener's key set drops the overlap.
        listener = hub.listen(session_id)
        snap = store.attach(session_id)
        for e in snap.events:
            listener.sent.add(f"m:{e['message_id']}" if e["type"] == "message" else f"r:{e['turn_id']}")
        hello = {
            "type": "hello",
            "session_id": session_id,
            "customer_id": snap.customer_id,
            "customer_name": directory.name(snap.customer_id),
            "events": snap.events,
            "omitted": snap.omitted,
        }
        listener.queue.put_nowait(hello)
        writer = asyncio.create_task(pump(ws, listener))
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive_text())
                done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
                if writer in done:
                    receive.cancel()
                    break
                text = receive.result()
                try:
                    frame = json.loads(text) if len(text) <= MAX_FRAME_CHARS else None
                except json.JSONDecodeError:
                    frame = None
                if not isinstance(frame, dict) or frame.get("type") != "send":
                    listener.offer({"type": "rejected", "message_id": None, "reason": "unsupported frame"})
                    continue
                await handle_send(frame, session_id, snap.customer_id, listener)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the page went away (or closed mid-send)
        finally:
            writer.cancel()
            # The writer ends cancelled, or with whatever the server raised when the page was already gone.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            hub.unlisten(listener)
            store.detach(session_id)

    # -- operator view ------------------------------------------------------------------

    def ops_snapshot() -> dict[str, Any]:
        return ops.snapshot(
            {
                "sockets": hub.socket_count(),
                "sessions_held": len(store),
                "ignored_replies": store.ignored_replies,
                "duplicate_replies": store.duplicate_replies,
                "dropped_deltas": dict(hub.dropped_deltas),
                "subscriptions": hub.subscriptions,
            }
        )

    @app.get("/api/ops")
    async def ops_json() -> dict[str, Any]:
        return ops_snapshot()

    @app.get("/api/ops/stream")
    async def ops_stream(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not stopping.is_set() and not await request.is_disconnected():
                yield f"data: {json.dumps(ops_snapshot())}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=OPS_PUSH_INTERVAL_S)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app
