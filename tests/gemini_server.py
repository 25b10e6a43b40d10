"""A local stand-in for the Gemini REST API, for tests of ``agents.backends.gemini``.

It speaks ``POST /{api_version}/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``
(server-sent events over chunked HTTP, one ``data: <GenerateContentResponse JSON>`` event per chunk, as the
real API streams: text parts a few words at a time, a function call in a chunk of its own, finish
reason and usage on the last chunk; ``stream_words`` words per chunk, ``stream_delay_s`` between
chunks) well enough for
the real ``google-genai`` client (httpx underneath) pointed at it with
``HttpOptions(base_url=server.url)``. Stdlib only: ``ThreadingHTTPServer`` on
127.0.0.1, a free port, in a daemon thread; HTTP/1.1 keep-alive with
``Content-Length`` on every response, which is what httpx's pool expects.

What it answers:
- by default, a text candidate ``"echo: <last user text>"`` with usageMetadata
  (``responder`` replaces that: a callable from the ``RecordedRequest`` to a ``Reply``);
- ``script(when, *replies)``: the next requests whose last user text contains
  ``when`` get ``replies`` in order (one each), then the responder again. That
  is the fault injection: ``Reply.rate_limited(retry_delay_s=...)`` (429 with a
  google.rpc.RetryInfo), ``Reply.error(503, ...)``, ``Reply.slow(seconds, then)``
  (a response that comes late, for client timeouts), ``Reply.malformed()``
  (200 with a body that is not JSON), ``Reply.function_call(...)``.

Every request is recorded (``requests``), headers included, so a test can assert
what the client sent: function declarations, system instruction, generation
config, the ``x-goog-api-key`` header (a test checks it arrives here, and only
here, never in logs).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GENERATE_RPCS = frozenset({"generateContent", "streamGenerateContent"})
_PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (``body`` is the parsed JSON, or None if it was not JSON)."""

    method: str
    path: str
    api_version: str
    model: str
    rpc: str
    headers: Mapping[str, str]
    body: Any
    received_at: float  # time.monotonic()

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    @property
    def contents(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("contents") or [])

    def last_user_text(self) -> str:
        """Text of the last user content that has text ('' if none)."""
        for content in reversed(self.contents):
            if content.get("role", "user") != "user":
                continue
            texts = [p["text"] for p in content.get("parts") or () if isinstance(p.get("text"), str)]
            if texts:
                return "\n".join(texts)
        return ""

    @property
    def system_text(self) -> str:
        system = (self.body or {}).get("systemInstruction") or {}
        return "\n".join(p.get("text", "") for p in system.get("parts") or ())

    @property
    def function_declarations(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tool in (self.body or {}).get("tools") or ():
            out.extend(tool.get("functionDeclarations") or ())
        return out

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict((self.body or {}).get("generationConfig") or {})


@dataclass(frozen=True)
class Reply:
    """What the server sends back: a status, a body (JSON value or raw bytes), headers, after ``delay_s``."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    @staticmethod
    def candidate(
        parts: list[dict[str, Any]],
        *,
        finish_reason: str = "STOP",
        prompt_tokens: int = 11,
        completion_tokens: int = 7,
        thoughts_tokens: int | None = None,
        model_version: str = "gemini-fake-001",
    ) -> Reply:
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": completion_tokens,
            "totalTokenCount": prompt_tokens + completion_tokens + (thoughts_tokens or 0),
        }
        if thoughts_tokens is not None:
            usage["thoughtsTokenCount"] = thoughts_tokens
        return Reply(
            body={
                "candidates": [
                    {"content": {"role": "model", "parts": parts}, "finishReason": finish_reason, "index": 0}
                ],
                "usageMetadata": usage,
                "modelVersion": model_version,
                "responseId": f"resp-{time.monotonic_ns()}",
            }
        )

    @staticmethod
    def text(text: str, **kwargs: Any) -> Reply:
        return Reply.candidate([{"text": text}], **kwargs)

    @staticmethod
    def function_call(name: str, args: dict[str, Any], *, call_id: str | None = None, text: str = "") -> Reply:
        call: dict[str, Any] = {"name": name, "args": args}
        if call_id is not None:
            call["id"] = call_id
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        parts.append({"functionCall": call})
        return Reply.candidate(parts)

    @staticmethod
    def error(
        status: int,
        message: str = "",
        *,
        status_name: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        names = {
            400: "INVALID_ARGUMENT",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED",
            500: "INTERNAL",
            503: "UNAVAILABLE",
            504: "DEADLINE_EXCEEDED",
        }
        error: dict[str, Any] = {
            "code": status,
            "message": message or f"fake error {status}",
            "status": status_name or names.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return Reply(status=status, body={"error": error}, headers=dict(headers or {}))

    @staticmethod
    def rate_limited(retry_delay_s: float | None = None, *, retry_after: str | None = None) -> Reply:
        """429 RESOURCE_EXHAUSTED, with a google.rpc.RetryInfo ``retryDelay`` and/or a ``Retry-After`` header."""
        details = []
        if retry_delay_s is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay_s:g}s"})
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Reply.error(429, "Resource has been exhausted (e.g. check quota).", details=details, headers=headers)

    @staticmethod
    def unavailable() -> Reply:
        return Reply.error(503, "The model is overloaded. Please try again later.")

    @staticmethod
    def malformed() -> Reply:
        return Reply(status=200, body=b'{"candidates": [{"content": ')

    @staticmethod
    def slow(seconds: float, then: Reply | None = None) -> Reply:
        base = then or Reply.text("late answer")
        return Reply(status=base.status, body=base.body, headers=base.headers, delay_s=seconds)


Responder = Callable[[RecordedRequest], Reply]


def echo(request: RecordedRequest) -> Reply:
    """The default responder: ``"echo: <last user text>"``."""
    return Reply.text(f"echo: {request.last_user_text()}")


class GeminiServer:
    """The fake API. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, responder: Responder = echo) -> None:
        self.responder = responder
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: list[tuple[str, list[Reply]]] = []
        self._stopping = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0  # most generateContent requests being answered at once
        self.stream_words = 3  # words of text per streamed chunk
        self.stream_delay_s = 0.03  # pause between streamed chunks
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> GeminiServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="gemini-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts slow replies short
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GeminiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``HttpOptions(base_url=...)`` (the client appends ``v1beta/models/...``)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    # -- scripting and inspection -----------------------------------------
    def script(self, when: str, *replies: Reply) -> None:
        """The next ``len(replies)`` requests whose last user text contains ``when`` get these replies, in order."""
        with self._lock:
            self._scripts.append((when, list(replies)))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, needle: str) -> list[RecordedRequest]:
        """Recorded generateContent requests whose last user text contains ``needle``."""
        return [r for r in self.requests if needle in r.last_user_text()]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
            self.max_in_flight = 0

    # -- called from handler threads --------------------------------------
    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            if request.rpc in GENERATE_RPCS:
                text = request.last_user_text()
                for when, queue in self._scripts:
                    if queue and when in text:
                        return queue.pop(0)
        if request.rpc not in GENERATE_RPCS:
            return Reply.error(404, f"method {request.rpc} not implemented by the fake", status_name="NOT_FOUND")
        if not isinstance(request.body, dict):
            return Reply.error(400, "Invalid JSON payload received.")
        return self.responder(request)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    owner: GeminiServer
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: requests are recorded instead

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        match = _PATH.match(self.path.split("?", 1)[0])
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method="POST",
            path=self.path,
            api_version=match["version"] if match else "",
            model=match["model"] if match else "",
            rpc=match["method"] if match else "",
            headers=dict(self.headers.items()),
            body=body,
            received_at=time.monotonic(),
        )
        self.owner._enter()
        try:
            if match is None:
                reply = Reply.error(404, f"no such path {self.path}", status_name="NOT_FOUND")
            else:
                reply = self.owner._reply_for(recorded)
            if reply.delay_s:
                self.owner._sleep(reply.delay_s)
        finally:
            self.owner._leave()
        if recorded.rpc == "streamGenerateContent" and reply.status == 200 and isinstance(reply.body, dict):
            self._send_stream(reply)
        else:
            self._send(reply)

    def _send_stream(self, reply: Reply) -> None:
        """The reply as server-sent events, chunked: the text a few words per event, then the rest."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            for i, chunk in enumerate(stream_chunks(reply.body, self.owner.stream_words)):
                if i:
                    self.owner._sleep(self.owner.stream_delay_s)
                event = f"data: {json.dumps(chunk)}\r\n\r\n".encode()
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, reply: Reply) -> None:
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body or {}).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to do


def iter_texts(requests: list[RecordedRequest]) -> Iterator[str]:
    """Last user text of each request, in arrival order (for readable assertions)."""
    for request in requests:
        yield request.last_user_text()


def stream_chunks(body: dict[str, Any], words: int) -> Iterator[dict[str, Any]]:
    """A whole GenerateContentResponse body cut into the chunks a streaming call returns."""
    candidates = body.get("candidates") or []
    if not candidates:
        yield body
        return
    cand = candidates[0]
    parts = (cand.get("content") or {}).get("parts") or []
    pieces: list[dict[str, Any]] = []
    for part in parts:
        text = part.get("text")
        if isinstance(text, str) and not part.get("thought"):
            tokens = re.findall(r"\S+\s*|\s+", text)
            pieces.extend({"text": "".join(tokens[i : i + words])} for i in range(0, len(tokens), max(1, words)))
        else:
            pieces.append(part)
    pieces = pieces or [{"text": ""}]
    meta = {k: v for k, v in body.items() if k not in ("candidates", "usageMetadata")}
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        chunk_cand: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}, "index": 0}
        if last and cand.get("finishReason"):
            chunk_cand["finishReason"] = cand["finishReason"]
        chunk = {"candidates": [chunk_cand], **meta}
        if last and "usageMetadata" in body:
            chunk["usageMetadata"] = body["usageMetadata"]
        yield chunk
