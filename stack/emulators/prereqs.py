"""Prerequisites of the local stack: a JDK for the Java emulators, the emulator binaries, bqemulator's venv.

Standard library only, so ``python3 -m stack.emulators`` can check a machine before anything is installed
(``make run`` and ``.ci/run`` both do).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from stack.emulators.base import DEFAULT_STATE_DIR, FIRESTORE_EMULATOR_BIN, PUBSUB_EMULATOR_BIN
from stack.emulators.bigquery import bqemulator_bin, find_spatial_extension

MIN_JAVA_MAJOR = 11


def find_java(java: str) -> str | None:
    # The emulator launchers use $JAVA_HOME/bin/java when JAVA_HOME is set, else java from PATH.
    java_home = os.environ.get("JAVA_HOME")
    if java == "java" and java_home:
        candidate = Path(java_home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which(java)


def _java_major(java_path: str) -> int | None:
    try:
        out = subprocess.run([java_path, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def check_prerequisites(
    *,
    java: str = "java",
    pubsub_bin: Path = PUBSUB_EMULATOR_BIN,
    firestore_bin: Path = FIRESTORE_EMULATOR_BIN,
    bq_venv: Path | None = DEFAULT_STATE_DIR / "bq-venv",
    bigtable_bin: Path | None = None,
) -> list[str]:
    """Everything missing for the stack to start, one readable line each; empty when all is there.

    ``bigtable_bin`` is checked only when given (the Bigtable emulator is optional); ``bq_venv`` unless None
    (``stack up`` builds that venv itself).
    """
    problems: list[str] = []
    java_path = find_java(java)
    if java_path is None:
        where = "$JAVA_HOME/bin/java" if java == "java" and os.environ.get("JAVA_HOME") else f"{java!r} on PATH"
        problems.append(f"java not found ({where}): the Pub/Sub and Firestore emulators need a JDK {MIN_JAVA_MAJOR}+")
    else:
        major = _java_major(java_path)
        if major is None:
            problems.append(f"java at {java_path} did not report a version (java -version failed)")
        elif major < MIN_JAVA_MAJOR:
            problems.append(f"java at {java_path} is Java {major}; the emulators need Java {MIN_JAVA_MAJOR}+")
    binaries = [("Pub/Sub emulator", pubsub_bin), ("Firestore emulator", firestore_bin)]
    if bigtable_bin is not None:
        binaries.append(("Bigtable emulator", bigtable_bin))
    for label, binary in binaries:
        if not Path(binary).is_file():
            problems.append(
                f"{label} binary missing: {binary} (part of the google-cloud-cli image; no registry here installs it)"
            )
        elif not os.access(binary, os.X_OK):
            problems.append(f"{label} binary not executable: {binary}")
    if bq_venv is None:
        return problems
    if not bqemulator_bin(bq_venv).is_file():
        problems.append(
            f"BigQuery emulator missing: {bqemulator_bin(bq_venv)} "
            f"(create the venv with stack.emulators.ensure_bq_venv({str(bq_venv)!r}))"
        )
    elif find_spatial_extension(bq_venv) is None:
        problems.append(
            f"DuckDB spatial extension missing from {bq_venv} (pip install duckdb-extension-spatial==1.5.5 there); "
            "bqemulator refuses to start without it and cannot download it offline"
        )
    return problems


def check_machine() -> list[str]:
    """What this machine lacks for the stack, before anything is installed: Java and the emulator binaries."""
    return check_prerequisites(bq_venv=None)
