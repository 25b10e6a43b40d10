"""``python -m web --port 8080``: the chat frontend on the local stack's emulators.

Needs the emulator variables the local stack prints (``PUBSUB_EMULATOR_HOST``,
``FIRESTORE_EMULATOR_HOST``, ``GOOGLE_CLOUD_PROJECT``) and the topics it
creates (``python -m stack up`` or ``stack.resources.ensure_resources``).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from stack.clients import emulator_host
from stack.emulators import DEFAULT_PROJECT, StackError
from tools.packs import DEFAULT_PACK


class _Server(uvicorn.Server):
    """Prints the URL once bound, and ends the operator streams when asked to stop."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
                url = f"http://{shown}:{port}/"
                print(f"supportflow web: {url}  (operator view: {url}ops)", flush=True)
                return

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)  # connections, then the app's shutdown: subscriptions deleted
        # uvicorn re-raises the stop signal afterwards, so the exit status says SIGTERM/SIGINT: this line says clean.
        print("supportflow web: stopped", flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn waits for open responses before the app's shutdown: end the endless SSE ones first.
        stop_streams = getattr(self._app.state, "stop_streams", None)
        if stop_streams is not None:
            stop_streams()
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", DEFAULT_PROJECT))
    parser.add_argument(
        "--demo-login",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DEMO login: the page picks any seeded customer and this server mints its identity token "
        "(web/identity.py). --no-demo-login: tokens only from the identity provider configured by the "
        "SUPPORTFLOW_IDENTITY_* variables (docs/security.md).",
    )
    parser.add_argument(
        "--pack", default=DEFAULT_PACK, help="The business served (tools.packs): the page names it in its words."
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        emulator_host("PUBSUB_EMULATOR_HOST")  # never reach a real project by accident
    except StackError as e:
        print(f"supportflow web: {e}", file=sys.stderr)
        return 2
    from web.app import WebConfig, create_app  # imports Beam (topic names): after the checks
    from web.identity import Identity

    try:
        identity = Identity.from_env(demo_login=args.demo_login)
    except (ValueError, OSError) as e:
        print(f"supportflow web: {e}", file=sys.stderr)
        return 2

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(WebConfig(project=args.project, identity=identity, pack=args.pack))
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=3,
        ws_ping_interval=20,
    )
    _Server(config, app).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
