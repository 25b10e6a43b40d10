"""A local stand-in for Secret Manager's REST API, for tests of ``pipeline.secrets``.

It speaks ``GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access`` (``version`` a number
or ``latest``) well enough for the official ``google-cloud-secret-manager`` client on its REST transport,
pointed at it with ``client_options={"api_endpoint": server.url}``. Like the real service it answers with
the project *number* in the resolved version name, a base64 payload with its CRC32C, 404 NOT_FOUND for a
missing secret or version and 400 FAILED_PRECONDITION for a disabled or destroyed one, as google.rpc
Status JSON. Stdlib only (plus google-crc32c, which the client needs anyway): ``ThreadingHTTPServer``
on 127.0.0.1, a free port, a daemon thread.

The test side adds versions (``add_version``), disables them (``disable``), and reads ``requests``: the
paths the client asked for, in order.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_crc32c

_ACCESS = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/(?:locations/[^/]+/)?secrets/(?P<secret>[^/]+)/versions/(?P<version>[^/:]+):access$"
)
PROJECT_NUMBER = "731442180461"


class SecretManagerServer:
    def __init__(self) -> None:
        self.versions: dict[str, list[tuple[bytes, str]]] = {}  # secret -> [(data, state)], version n at index n-1
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="secret-manager", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_version(self, secret: str, data: bytes | str) -> int:
        """A new ENABLED version of ``secret`` (created if needed); returns its number."""
        with self._lock:
            versions = self.versions.setdefault(secret, [])
            versions.append((data.encode() if isinstance(data, str) else data, "ENABLED"))
            return len(versions)

    def disable(self, secret: str, number: int) -> None:
        with self._lock:
            data, _ = self.versions[secret][number - 1]
            self.versions[secret][number - 1] = (data, "DISABLED")

    def _access(self, project: str, secret: str, version: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            versions = self.versions.get(secret)
            if versions is None:
                return 404, _status(404, "NOT_FOUND", f"Secret [projects/{PROJECT_NUMBER}/secrets/{secret}] not found")
            if version == "latest":
                enabled = [n for n, (_, state) in enumerate(versions, 1) if state == "ENABLED"]
                if not enabled:
                    return 400, _status(400, "FAILED_PRECONDITION", "no enabled version")
                number = enabled[-1]
            elif version.isdigit() and 1 <= int(version) <= len(versions):
                number = int(version)
            else:
                return 404, _status(404, "NOT_FOUND", f"Secret Version [{version}] not found")
            data, state = versions[number - 1]
        name = f"projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{number}"
        if state != "ENABLED":
            return 400, _status(400, "FAILED_PRECONDITION", f"Secret Version [{name}] is in {state} state.")
        payload = {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))}
        return 200, {"name": name, "payload": payload}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                match = _ACCESS.match(path)
                if match is None:
                    code, body = 404, _status(404, "NOT_FOUND", f"no method at {path}")
                else:
                    code, body = server._access(match["project"], match["secret"], match["version"])
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        return Handler

    def start(self) -> SecretManagerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _status(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


@contextmanager
def running() -> Iterator[SecretManagerServer]:
    server = SecretManagerServer().start()
    try:
        yield server
    finally:
        server.stop()
