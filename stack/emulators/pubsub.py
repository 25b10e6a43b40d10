"""Google's Pub/Sub emulator (Java, google-cloud-cli).

Its log used to fill with ``java.lang.NoSuchMethodError: io.grpc.InternalStatus.asRuntimeException``
stack traces, mostly at shutdown. They are harmless: the emulator's jar (0.8.20) bundles two gRPC
versions that disagree, and its Netty handler throws while closing a stream that a *client* cancelled
(every subscriber's streaming pull is cancelled when it closes: the terminal chat, the web page, tests).
The stream is closed anyway and the emulator keeps serving; stopping the emulator itself (SIGTERM) never
produces one. So that one logger is raised to SEVERE through a java.util.logging file; the rest of the
log stays as it was (measured: 2 traces per cancelled stream before, none after, other lines unchanged).
"""

from __future__ import annotations

import os
from pathlib import Path

from stack.emulators.base import HOST, PUBSUB, PUBSUB_EMULATOR_BIN
from stack.emulators.processes import Emulator, http_get

# The JDK's default logging set-up, plus the one quieted logger.
_LOGGING_PROPERTIES = """\
handlers=java.util.logging.ConsoleHandler
.level=INFO
java.util.logging.ConsoleHandler.level=INFO
java.util.logging.ConsoleHandler.formatter=java.util.logging.SimpleFormatter
# NoSuchMethodError traces on client-cancelled streams (see stack/emulators/pubsub.py): harmless.
io.grpc.netty.NettyServerHandler.level=SEVERE
"""


def logging_config(log_dir: Path) -> Path:
    path = log_dir / "pubsub-logging.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_LOGGING_PROPERTIES)
    return path


def pubsub_emulator(port: int, log_dir: Path, project: str, binary: Path = PUBSUB_EMULATOR_BIN) -> Emulator:
    base = f"http://{HOST}:{port}"
    # The launcher passes $CLOUD_PUBSUB_EMULATOR_OPTS to java; keep whatever the user already put there.
    logging = f"-Djava.util.logging.config.file={logging_config(log_dir)}"
    opts = f"{os.environ.get('CLOUD_PUBSUB_EMULATOR_OPTS', '')} {logging}"
    # The emulator serves REST on its gRPC port too: listing topics is a real API call, and cheap.
    return Emulator(
        name=PUBSUB,
        argv=[str(binary), f"--host={HOST}", f"--port={port}"],
        port=port,
        log_path=log_dir / f"{PUBSUB}.log",
        probe=lambda: http_get(f"{base}/v1/projects/{project}/topics")[0] == 200,
        env={"CLOUD_PUBSUB_EMULATOR_OPTS": opts.strip()},
    )
