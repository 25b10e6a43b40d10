"""Tools served by an MCP server, run for the session's customer: one connection per worker, self-healing.

``McpServer`` is plain data (picklable): how to reach one server, over stdio (``command``) or
streamable HTTP (``url``), and its timeouts. ``McpToolSource(server)`` is what a worker holds (make it
in a DoFn's ``setup``, ``close`` it in ``teardown``; never pickle it). It owns:

- **One connection**, the official SDK's ``mcp.Client`` (a ``ClientSession`` over ``stdio_client`` or
  ``streamable_http_client``), living on a background thread that runs its own asyncio loop. The public
  methods are synchronous and thread-safe: they hand coroutines to that loop and wait with a timeout.
- **Declarations**: ``list_tools()`` gives each tool's name, description, input schema (``parameters``)
  and whether its MCP annotations say it is read-only or idempotent.
- **Execution** (``execute(ctx, call)``, a ``tools.registry.ToolExecutor``): the customer, session and
  turn travel out of band in the request's ``_meta`` (``META_CUSTOMER``, ``META_SESSION``, ``META_TURN``),
  never as arguments. An argument the tool's input schema does not declare (a model-supplied
  ``customer_id`` included) is refused before anything is sent (``invalid_args``, ``rejected_args``
  set), and the rest are validated against the input schema (``jsonschema``).
- **Failure as data**: every call has a timeout; a timed-out, failed, ``isError`` or malformed call
  (structured content that is not a JSON object, text that is not one) becomes a ``status: "error"``
  result. ``execute`` never raises.
- **Retries** only for tools annotated read-only or idempotent, and only when the connection broke (a
  timeout is not retried: its deadline is spent). **Recovery**: a call that finds the connection broken
  (the server died, the HTTP session went away) marks it so, and the next call reconnects (a new stdio
  subprocess, a new HTTP session) before it is sent. A non-idempotent call in flight when the
  connection broke is not resent: it returns an error, since it may have been carried out. Before such
  a call the connection is probed (one ``tools/list``): a stdio server's death is only noticed when
  something is sent, and a server that died while idle should cost a probe, not the customer's action.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Coroutine, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, Implementation, TextContent, Tool
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from contract.tool_calls import ToolCall
from tools.registry import STATUS_ERROR, STATUS_INVALID_ARGS, STATUS_UNKNOWN_TOOL, ToolResult
from tools.scope import ToolContext

logger = logging.getLogger(__name__)

# The request `_meta` keys that carry who a call is for (servers read them; see packs/telco/mcp_server.py).
META_CUSTOMER = "supportflow/customer_id"
META_SESSION = "supportflow/session_id"
META_TURN = "supportflow/turn_id"

CLIENT_INFO = Implementation(name="supportflow", version="0.1.0")
MAX_ATTEMPTS = 2  # for read-only or idempotent tools, when the connection broke under the first attempt
TIMEOUTS_BEFORE_RECONNECT = 3  # consecutive timeouts on one connection: treat it as hung and reopen it
_CLOSE_WAIT_S = 5.0
_MAX_ERROR_CHARS = 300

T = TypeVar("T")


@dataclass(frozen=True)
class McpServer:
    """How to reach one MCP server: ``command`` (stdio; with ``env`` and ``cwd``) or ``url`` (streamable HTTP)."""

    name: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None  # merged over the SDK's safe default environment
    cwd: str | None = None
    url: str | None = None
    call_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("McpServer.name must not be empty")
        if bool(self.command) == bool(self.url):
            raise ValueError(f"McpServer {self.name!r}: give either command (stdio) or url (streamable HTTP)")
        if self.call_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError(f"McpServer {self.name!r}: timeouts must be positive")


class _Broken(Exception):
    """The connection broke under a call (it is marked for reconnecting); safe tools may retry."""


class _TimedOut(Exception):
    """The call got no answer within ``call_timeout_s``."""


@dataclass
class _Connection:
    """One live ``mcp.Client``, held open by the task ``_hold`` until ``stop`` is set."""

    stop: asyncio.Event
    client: Client | None = None
    tools: dict[str, Tool] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    broken: bool = False
    timeouts: int = 0


@dataclass(frozen=True)
class _ToolInfo:
    tool: Tool
    read_only: bool
    idempotent: bool

    @property
    def retryable(self) -> bool:
        return self.read_only or self.idempotent


def _info(tool: Tool) -> _ToolInfo:
    ann = tool.annotations
    read_only = bool(ann and ann.read_only_hint)
    return _ToolInfo(tool, read_only, bool(ann and ann.idempotent_hint))


def _declared_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The input schema as declared to models: no ``title`` keywords (property names are kept)."""

    def clean(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, list):
            return [clean(n) for n in node]
        if not isinstance(node, dict):
            return node
        if in_properties:  # keys are property names, not keywords
            return {k: clean(v) for k, v in node.items()}
        return {
            k: clean(v, in_properties=k in ("properties", "$defs", "definitions", "patternProperties"))
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }

    out = clean(dict(schema))
    out.setdefault("type", "object")
    out.setdefault("properties", {})
    return out


def _error(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call.id, call.name, STATUS_ERROR, {"status": STATUS_ERROR, "errors": [message]})


def _text_of(result: CallToolResult) -> str:
    return "".join(b.text for b in result.content if isinstance(b, TextContent))


class McpToolSource:
    """The tools of one MCP server, over one connection per worker. See the module docstring."""

    def __init__(self, server: McpServer, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.server = server
        self._max_attempts = max(1, max_attempts)
        self._lifecycle = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: _Connection | None = None  # touched only on the loop's thread
        self._conn_lock: asyncio.Lock | None = None
        self._validators: dict[tuple[str, str], Validator] = {}
        self._validators_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> McpToolSource:
        """Start the loop thread and connect; raises ``ConnectionError`` if the server cannot be reached."""
        with self._lifecycle:
            if self._loop is not None:
                return self
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"mcp-{self.server.name}", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            self._conn_lock = self._run(self._make_lock(), 5.0)
        try:
            self._run(self._ensure(), self.server.connect_timeout_s + _CLOSE_WAIT_S)
        except Exception as exc:
            self.close()
            raise ConnectionError(f"MCP server {self.server.name!r} is unreachable: {exc!r}"[:500]) from exc
        return self

    def close(self) -> None:
        """Close the connection (stopping a stdio server) and the loop thread. Safe to call twice."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            with suppress(Exception):
                self._run(self._disconnect(), _CLOSE_WAIT_S * 2)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_CLOSE_WAIT_S)
            if not thread.is_alive():
                loop.close()
            self._loop, self._thread, self._conn_lock = None, None, None

    def __enter__(self) -> McpToolSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public, synchronous -------------------------------------------------

    def list_tools(self) -> tuple[dict[str, Any], ...]:
        """Each tool as ``{"name", "description", "parameters", "read_only", "idempotent"}`` (reconnects if needed).

        Raises ``ConnectionError`` when the server cannot be reached.
        """
        try:
            infos = self._run(self._tool_infos(), self.server.connect_timeout_s + _CLOSE_WAIT_S)
        except Exception as exc:
            raise ConnectionError(f"MCP server {self.server.name!r} is unreachable: {exc!r}"[:500]) from exc
        return tuple(
            {
                "name": i.tool.name,
                "description": i.tool.description or "",
                "parameters": _declared_schema(i.tool.input_schema),
                "read_only": i.read_only,
                "idempotent": i.idempotent,
            }
            for i in infos.values()
        )

    def execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        """Run ``call`` for the customer of ``ctx``. Never raises: failures are ``status: "error"`` results."""
        start = time.perf_counter()
        try:
            result = self._execute(ctx, call)
        except Exception as exc:  # noqa: BLE001 - the contract: a tool failure is a result, never a crashed bundle
            logger.exception("MCP tool %s on %s failed unexpectedly", call.name, self.server.name)
            result = _error(call, f"the {self.server.name} service failed: {type(exc).__name__}")
        ms = (time.perf_counter() - start) * 1000.0
        logger.debug("MCP tool %s for turn %s: %s in %.1f ms", call.name, ctx.turn_id, result.status, ms)
        return ToolResult(
            result.call_id, result.name, result.status, result.content, ms, result.replayed, result.rejected_args
        )

    # -- execution -----------------------------------------------------------

    def _execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        wait = self.server.connect_timeout_s + _CLOSE_WAIT_S
        try:
            infos = self._run(self._tool_infos(), wait)
        except Exception as exc:  # noqa: BLE001 - unreachable server: an error result
            logger.warning("MCP server %s unreachable: %r", self.server.name, exc)
            return _error(call, f"the {self.server.name} service is unavailable right now; try again later")
        info = infos.get(call.name)
        if info is None:
            content = {"status": STATUS_UNKNOWN_TOOL, "errors": [f"no tool named {call.name[:60]!r}"]}
            return ToolResult(call.id, call.name, STATUS_UNKNOWN_TOOL, content)
        args, refused = self._prepare(info.tool, call)
        if refused is not None:
            return refused
        meta = {META_CUSTOMER: ctx.customer_id, META_SESSION: ctx.session_id, META_TURN: ctx.turn_id}
        attempts = self._max_attempts if info.retryable else 1
        # Each attempt may reconnect and then wait its call timeout; a call that is never resent is probed first.
        call_s, connect_s = self.server.call_timeout_s, self.server.connect_timeout_s
        budget = attempts * (call_s + connect_s) + (call_s if attempts == 1 else 0.0) + _CLOSE_WAIT_S
        try:
            raw = self._run(self._call(call.name, args, meta, attempts), budget)
        except (_TimedOut, concurrent.futures.TimeoutError):
            return _error(call, f"the {self.server.name} service did not answer in time; try again later")
        except _Broken:
            return _error(call, f"the {self.server.name} service is unavailable right now; try again later")
        except MCPError as exc:
            return _error(call, f"the tool failed: {exc.message[:_MAX_ERROR_CHARS]}")
        except (ValidationError, RuntimeError) as exc:
            logger.warning("MCP tool %s on %s: answer not accepted: %r", call.name, self.server.name, exc)
            return _error(call, "the tool gave a malformed result")
        return self._result(call, raw)

    def _prepare(self, tool: Tool, call: ToolCall) -> tuple[dict[str, Any], ToolResult | None]:
        """(arguments, None) or ({}, an ``invalid_args`` result): unknown names refused, the rest schema-checked."""

        def invalid(errors: list[str], rejected: tuple[str, ...] = ()) -> tuple[dict[str, Any], ToolResult]:
            content = {"status": STATUS_INVALID_ARGS, "errors": errors}
            return {}, ToolResult(call.id, call.name, STATUS_INVALID_ARGS, content, rejected_args=rejected)

        try:
            raw = call.parsed_arguments()
        except ValueError as exc:
            return invalid([f"arguments are not a JSON object: {str(exc)[:80]}"])
        props = tool.input_schema.get("properties")
        fields = sorted(props) if isinstance(props, Mapping) else []
        extra = tuple(sorted(k for k in raw if k not in fields))
        if extra:
            return invalid(
                [f"unknown argument {k!r}; this tool only takes {fields}" for k in extra[:5]]
                + ["tools act only for the customer of this conversation"],
                extra,
            )
        errors = sorted(self._validator(tool).iter_errors(raw), key=lambda e: list(e.absolute_path))
        if errors:
            return invalid(
                [f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message[:160]}" for e in errors][:5]
            )
        return raw, None

    def _validator(self, tool: Tool) -> Validator:
        key = (tool.name, json.dumps(tool.input_schema, sort_keys=True))
        with self._validators_lock:
            validator = self._validators.get(key)
            if validator is None:
                cls = validator_for(tool.input_schema)
                validator = self._validators[key] = cls(tool.input_schema)
            return validator

    def _result(self, call: ToolCall, raw: CallToolResult) -> ToolResult:
        """The tool's JSON object as the result; an ``isError`` or malformed answer as an error result."""
        if raw.is_error:
            text = _text_of(raw).strip() or "no details"
            return _error(call, f"the tool failed: {text[:_MAX_ERROR_CHARS]}")
        content: Any = raw.structured_content
        if content is None:
            try:
                content = json.loads(_text_of(raw))
            except ValueError:
                content = None
        if not isinstance(content, dict):
            logger.warning("MCP tool %s on %s gave a malformed result", call.name, self.server.name)
            return _error(call, "the tool gave a malformed result")
        status = content.get("status")
        if not isinstance(status, str) or not status:
            status = "ok"
            content = {"status": status, **content}
        return ToolResult(call.id, call.name, status, content, replayed=bool(content.get("replayed")))

    # -- on the loop -----------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop thread and wait up to ``timeout`` seconds (cancelling it after)."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError(f"McpToolSource({self.server.name!r}) is not started")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    @staticmethod
    async def _make_lock() -> asyncio.Lock:
        return asyncio.Lock()

    async def _tool_infos(self) -> dict[str, _ToolInfo]:
        conn = await self._ensure()
        return {name: _info(tool) for name, tool in conn.tools.items()}

    async def _call(self, name: str, args: dict[str, Any], meta: dict[str, str], attempts: int) -> CallToolResult:
        if attempts == 1:
            await self._probe()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Broken),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(initial=0.05, max=0.5),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call_once(name, args, meta)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True raises the last error

    async def _call_once(self, name: str, args: dict[str, Any], meta: dict[str, str]) -> CallToolResult:
        try:
            conn = await self._ensure()
        except Exception as exc:
            raise _Broken(repr(exc)) from exc
        assert conn.client is not None
        timeout = self.server.call_timeout_s
        try:
            # The SDK's own read timeout answers first; wait_for is the backstop for a transport that hangs.
            result = await asyncio.wait_for(
                conn.client.call_tool(name, args, read_timeout_seconds=timeout, meta=meta), timeout + 1.0
            )
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise self._timed_out(conn) from exc
            if exc.code == CONNECTION_CLOSED:
                conn.broken = True
                raise _Broken(exc.message) from exc
            raise  # the server answered with a protocol error: the connection is fine
        except TimeoutError as exc:
            raise self._timed_out(conn) from exc
        except (ValidationError, RuntimeError):
            raise  # an answer the SDK could not accept: the connection is fine
        except Exception as exc:
            logger.warning("MCP connection to %s broke during %s: %r", self.server.name, name, exc)
            conn.broken = True
            raise _Broken(repr(exc)) from exc
        conn.timeouts = 0
        return result

    async def _probe(self) -> None:
        """One ``tools/list`` round trip, so a connection that died while idle is reopened before a call that
        must not be repeated is sent on it (a stdio server's exit is only noticed when something is sent)."""
        try:
            conn = await self._ensure()
        except Exception as exc:
            raise _Broken(repr(exc)) from exc
        assert conn.client is not None
        try:
            await asyncio.wait_for(conn.client.list_tools(), self.server.call_timeout_s)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                conn.broken = True
        except TimeoutError:
            pass  # a slow server, not a dead one: the call's own timeout decides
        except Exception:  # noqa: BLE001 - the transport failed: reopen it
            conn.broken = True

    def _timed_out(self, conn: _Connection) -> _TimedOut:
        conn.timeouts += 1
        if conn.timeouts >= TIMEOUTS_BEFORE_RECONNECT:
            logger.warning("MCP server %s timed out %d times in a row; reconnecting", self.server.name, conn.timeouts)
            conn.broken = True
        return _TimedOut()

    async def _ensure(self) -> _Connection:
        """The live connection, (re)opened when there is none or it broke."""
        assert self._conn_lock is not None
        async with self._conn_lock:
            conn = self._conn
            if conn is not None and not conn.broken and conn.task is not None and not conn.task.done():
                return conn
            if conn is not None:
                logger.info("MCP server %s: reconnecting", self.server.name)
                self._conn = None
                await self._drop(conn)
            self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Connection:
        conn = _Connection(stop=asyncio.Event())
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.task = asyncio.create_task(self._hold(conn, ready), name=f"mcp-{self.server.name}-connection")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.server.connect_timeout_s)
        except BaseException:
            await self._drop(conn)
            raise
        return conn

    async def _hold(self, conn: _Connection, ready: asyncio.Future[None]) -> None:
        """Open the client, list the tools, and keep the connection until ``conn.stop`` (or it fails)."""
        try:
            async with Client(self._transport(), cache=None, client_info=CLIENT_INFO) as client:
                tools: dict[str, Tool] = {}
                cursor: str | None = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.update({t.name: t for t in page.tools})
                    cursor = page.next_cursor
                    if not cursor:
                        break
                conn.client, conn.tools = client, tools
                ready.set_result(None)
                await conn.stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the opener, or logged: the connection is over
            if not ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    ready.cancel()
                else:
                    ready.set_exception(exc)
            elif not conn.stop.is_set():
                logger.warning("MCP connection to %s ended: %r", self.server.name, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            conn.broken = True

    def _transport(self) -> Any:
        if self.server.url:
            return streamable_http_client(self.server.url)
        params = StdioServerParameters(
            command=self.server.command[0],
            args=list(self.server.command[1:]),
            env=dict(self.server.env) if self.server.env else None,
            cwd=self.server.cwd,
        )
        return stdio_client(params)

    async def _drop(self, conn: _Connection) -> None:
        """Close one connection: let its holder exit (closing the client), cancel it if it will not."""
        conn.stop.set()
        task = conn.task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=_CLOSE_WAIT_S)
        if not done:
            logger.warning("MCP connection to %s did not close in time; cancelling it", self.server.name)
            task.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_WAIT_S)

    async def _disconnect(self) -> None:
        assert self._conn_lock is not None
        async with self._conn_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._drop(conn)
