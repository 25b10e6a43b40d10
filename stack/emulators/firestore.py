"""Google's Firestore emulator (a bash launcher that forks java, google-cloud-cli)."""

from __future__ import annotations

from pathlib import Path

from stack.emulators.base import FIRESTORE, FIRESTORE_EMULATOR_BIN, HOST
from stack.emulators.processes import Emulator, http_get


def firestore_emulator(port: int, log_dir: Path, project: str, binary: Path = FIRESTORE_EMULATOR_BIN) -> Emulator:
    base = f"http://{HOST}:{port}"

    def probe() -> bool:
        # "/" answers "Ok" as soon as the server is up; the document list proves the API is serving.
        return http_get(f"{base}/")[0] == 200 and (
            http_get(f"{base}/v1/projects/{project}/databases/(default)/documents/_stack_probe")[0] == 200
        )

    return Emulator(
        name=FIRESTORE,
        argv=[str(binary), f"--host={HOST}", f"--port={port}"],
        port=port,
        log_path=log_dir / f"{FIRESTORE}.log",
        probe=probe,
    )
