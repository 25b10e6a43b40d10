"""Google's Bigtable emulator (a Go binary, google-cloud-cli); seeding is ``stack.bigtable``."""

from __future__ import annotations

from pathlib import Path

from stack.emulators.base import BIGTABLE, BIGTABLE_EMULATOR_BIN, HOST
from stack.emulators.processes import Emulator


def bigtable_emulator(port: int, log_dir: Path, binary: Path = BIGTABLE_EMULATOR_BIN) -> Emulator:
    """Google's Bigtable emulator (``cbtemulator``): in-memory, no instances to create, tables made on demand."""
    return Emulator(
        name=BIGTABLE,
        argv=[str(binary), "-host", HOST, "-port", str(port)],
        port=port,
        log_path=log_dir / f"{BIGTABLE}.log",
        # A Go gRPC server that serves as soon as it listens: the TCP check of wait_ready is the real probe.
        probe=lambda: True,
    )
