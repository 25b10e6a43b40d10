"""The local stack: Google's Pub/Sub and Firestore emulators plus bqemulator, on 127.0.0.1
(and Google's Bigtable emulator with ``LocalStack(bigtable=True)``; seeding: ``stack.bigtable``).

Real emulators, no fakes. Each runs as a child process in its own process
group (the Firestore launcher is a bash script that forks java, so killing
one pid would leak the JVM), on a free port, logging to
``<state_dir>/logs/<name>.log``. A pid file per emulator lets the next start
reap emulators orphaned by a killed run (a SIGKILLed pytest never runs atexit).

Layout of ``state_dir`` (default: ``<repo>/.stack``)::

    bq-venv/    bqemulator's own virtual environment (its DuckDB pins never meet Beam's)
    bq-home/    HOME of the bqemulator process: DuckDB's extension dir lives under it
    logs/       one log per emulator, rewritten at each start
    run/        pid files of running emulators
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
DEFAULT_PROJECT = "supportflow-local"  # same value as pipeline.options.DEFAULT_PROJECT, without importing Beam
HOST = "127.0.0.1"

# The emulator jars come with the machine image (google-cloud-cli); no registry here can reinstall them.
GCLOUD_PLATFORM_DIR = Path("/usr/lib/google-cloud-sdk/platform")
PUBSUB_EMULATOR_BIN = GCLOUD_PLATFORM_DIR / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
FIRESTORE_EMULATOR_BIN = GCLOUD_PLATFORM_DIR / "cloud-firestore-emulator" / "cloud_firestore_emulator"
# A Go binary (no JVM): starts in well under a second. Only started with LocalStack(bigtable=True).
BIGTABLE_EMULATOR_BIN = GCLOUD_PLATFORM_DIR / "bigtable-emulator" / "cbtemulator"

BQ_VENV_REQUIREMENTS = ("bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy")
MIN_JAVA_MAJOR = 11

PUBSUB, FIRESTORE, BIGQUERY, BIGTABLE = "pubsub", "firestore", "bigquery", "bigtable"
EMULATOR_NAMES = (PUBSUB, FIRESTORE, BIGQUERY)  # always started; BIGTABLE on request

# Log lines that mean "someone else has the port" (Java/netty, uvicorn, grpc).
_BIND_FAILURES = ("Address already in use", "address already in use", "Failed to bind")

# Marks our children's environment so stale-process reaping can tell them from anything else.
_RUN_MARKER_VAR = "SUPPORTFLOW_STACK_RUN"


class StackError(RuntimeError):
    """The local stack cannot start or misbehaved; the message says what is missing or wrong."""


# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------


def _java_path(java: str) -> str | None:
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


def bq_venv_python(bq_venv: Path) -> Path:
    return bq_venv / "bin" / "python"


def bqemulator_bin(bq_venv: Path) -> Path:
    return bq_venv / "bin" / "bqemulator"


def find_spatial_extension(bq_venv: Path) -> Path | None:
    """``spatial.duckdb_extension`` shipped by the duckdb-extension-spatial wheel in the bq venv."""
    pattern = "lib/python3*/site-packages/duckdb_extension_spatial/extensions/v*/spatial.duckdb_extension"
    hits = sorted(bq_venv.glob(pattern))
    return hits[-1] if hits else None


def check_prerequisites(
    *,
    java: str = "java",
    pubsub_bin: Path = PUBSUB_EMULATOR_BIN,
    firestore_bin: Path = FIRESTORE_EMULATOR_BIN,
    bq_venv: Path = DEFAULT_STATE_DIR / "bq-venv",
    bigtable_bin: Path | None = None,
) -> list[str]:
    """Everything missing for the stack to start, one readable line each; empty when all is there.

    ``bigtable_bin`` is checked only when given (the Bigtable emulator is optional).
    """
    problems: list[str] = []
    java_path = _java_path(java)
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


def ensure_bq_venv(path: Path | str, python: str = "python3") -> Path:
    """Create bqemulator's own virtual environment at ``path`` unless it is already complete.

    A separate venv because bqemulator pins DuckDB (and friends) that must never
    have to agree with Beam's dependency set.
    """
    path = Path(path)
    if bqemulator_bin(path).is_file() and find_spatial_extension(path) is not None:
        return path
    steps = [
        [python, "-m", "venv", str(path)],
        [str(bq_venv_python(path)), "-m", "pip", "install", "--quiet", *BQ_VENV_REQUIREMENTS],
    ]
    for cmd in steps:
        if cmd[0] == python and bq_venv_python(path).is_file():
            continue  # venv exists, only the packages are missing
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise StackError(f"cannot create the bq venv: {cmd[0]} not found") from e
        except subprocess.CalledProcessError as e:
            tail = (e.stderr or e.stdout or "").strip()[-2000:]
            raise StackError(f"creating the bq venv failed: {' '.join(cmd)}\n{tail}") from e
    return path


def _duckdb_platform() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{sys.platform.replace('darwin', 'osx')}_{arch}"


def install_spatial_extension(bq_venv: Path, duckdb_home: Path) -> Path:
    """Put the bundled spatial extension where DuckDB looks (``$HOME/.duckdb/extensions/<ver>/<platform>/``).

    bqemulator runs ``INSTALL spatial`` at boot, which downloads unless the file
    is already there; it has no setting for DuckDB's extension directory, so the
    stack runs it with HOME pointing at ``duckdb_home`` instead of the user's home.
    """
    src = find_spatial_extension(bq_venv)
    if src is None:
        raise StackError(f"DuckDB spatial extension missing from {bq_venv} (duckdb-extension-spatial not installed)")
    version = src.parent.name  # e.g. "v1.5.5": the wheel lays files out by DuckDB version
    dest = duckdb_home / ".duckdb" / "extensions" / version / _duckdb_platform() / src.name
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:  # is_file() follows the link
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)  # also clears a dangling link to a deleted venv
    try:
        dest.symlink_to(src)  # the file is ~80 MB: link, don't copy, for every throwaway state_dir
    except OSError:
        shutil.copy2(src, dest)
    return dest


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A port the kernel just handed out for bind(0); tiny race window until the emulator binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers do: TIME_WAIT leftovers of our own health checks must not count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (OSError, ValueError):
        return 0, ""


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``, from Linux's /proc."""
    members: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the ")" closing comm (which may contain spaces): state, ppid, pgrp, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _carries_marker(pid: int, marker: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{_RUN_MARKER_VAR}={marker}".encode() in environ


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _group_alive(pgid: int) -> bool:
    # killpg(0) also "succeeds" for a group of unreaped zombies, so prefer /proc where there is one.
    if Path("/proc/self/stat").exists():
        return bool(_group_members(pgid))
    return _kill_group(pgid, 0)


def _await_group(pgid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait for every member of an already-signalled group; SIGKILL what is left after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (proc is None or proc.poll() is not None) and not _group_alive(pgid):
            return
        time.sleep(0.05)
    _kill_group(pgid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def _terminate_group(pgid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the whole group, wait for every member, SIGKILL what is left after ``timeout_s``."""
    _kill_group(pgid, signal.SIGTERM)
    _await_group(pgid, timeout_s, proc)


def reap_stale(run_dir: Path) -> list[str]:
    """Kill emulators left running by a stack whose owning process died; returns their names.

    Only groups whose members carry the run marker written in the pid file are
    touched, so a recycled pid never gets a stray signal.
    """
    reaped: list[str] = []
    for pid_file in sorted(run_dir.glob("*.json")):
        try:
            info = json.loads(pid_file.read_text())
            pgid, owner, marker = int(info["pgid"]), int(info["owner"]), str(info["marker"])
        except (OSError, ValueError, KeyError, TypeError):
            pid_file.unlink(missing_ok=True)
            continue
        if owner != os.getpid() and _pid_alive(owner):
            continue  # another live stack owns it (same state_dir, other process)
        if any(_carries_marker(pid, marker) for pid in _group_members(pgid)):
            _terminate_group(pgid, timeout_s=5)
            reaped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return reaped


@dataclass
class Emulator:
    """One emulator process: launch, wait until it answers, stop (whole process group)."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    probe: Callable[[], bool]  # True once the emulator answers a real API call
    env: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float | None = None
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _started_at: float = field(default=0.0, init=False, repr=False)
    _terminated: bool = field(default=False, init=False, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid_file(self) -> Path | None:
        return self.run_dir / f"{self.name}.json" if self.run_dir else None

    def launch(self) -> None:
        if self.proc is not None:
            raise StackError(f"{self.name} emulator already launched")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self._log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log.flush()
        marker = uuid.uuid4().hex
        env = {**os.environ, **self.env, _RUN_MARKER_VAR: marker}
        self._started_at = time.monotonic()
        try:
            # Own session = own process group: stop() signals the group, reaching the JVM behind any launcher script.
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            self._close_log()
            raise StackError(f"cannot launch the {self.name} emulator ({self.argv[0]}): {e}") from e
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            info = {"pgid": self.proc.pid, "owner": os.getpid(), "marker": marker, "port": self.port, "argv": self.argv}
            self.pid_file.write_text(json.dumps(info))

    def wait_ready(self, timeout_s: float) -> float:
        """Block until the probe passes; returns seconds since launch. Fails fast if the process dies."""
        if self.proc is None:
            raise StackError(f"{self.name} emulator was never launched")
        deadline = self._started_at + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise StackError(f"{self.name} emulator exited with code {code} before it was ready\n{self.log_tail()}")
            if self._log_says_bind_failed():
                # The Pub/Sub JVM stays alive after a BindException: without this we would wait out the timeout.
                raise StackError(f"{self.name} emulator could not bind {HOST}:{self.port}\n{self.log_tail()}")
            if _tcp_open(HOST, self.port) and self.probe():
                self.ready_s = time.monotonic() - self._started_at
                return self.ready_s
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} emulator not ready on {HOST}:{self.port} after {timeout_s:.0f}s\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def terminate(self) -> None:
        """SIGTERM the process group without waiting (stop() waits)."""
        if self.proc is not None and not self._terminated:
            _kill_group(self.proc.pid, signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            self.terminate()
            _await_group(self.proc.pid, timeout_s, self.proc)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        self._close_log()
        self.proc = None  # stopped: launch() may start it again (fault tests restart Firestore)
        self._terminated = False

    def _log_says_bind_failed(self) -> bool:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return any(p in text for p in _BIND_FAILURES)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def pubsub_emulator(port: int, log_dir: Path, project: str, binary: Path = PUBSUB_EMULATOR_BIN) -> Emulator:
    base = f"http://{HOST}:{port}"
    # The emulator serves REST on its gRPC port too: listing topics is a real API call, and cheap.
    return Emulator(
        name=PUBSUB,
        argv=[str(binary), f"--host={HOST}", f"--port={port}"],
        port=port,
        log_path=log_dir / f"{PUBSUB}.log",
        probe=lambda: _http_get(f"{base}/v1/projects/{project}/topics")[0] == 200,
    )


def firestore_emulator(port: int, log_dir: Path, project: str, binary: Path = FIRESTORE_EMULATOR_BIN) -> Emulator:
    base = f"http://{HOST}:{port}"

    def probe() -> bool:
        # "/" answers "Ok" as soon as the server is up; the document list proves the API is serving.
        return _http_get(f"{base}/")[0] == 200 and (
            _http_get(f"{base}/v1/projects/{project}/databases/(default)/documents/_stack_probe")[0] == 200
        )

    return Emulator(
        name=FIRESTORE,
        argv=[str(binary), f"--host={HOST}", f"--port={port}"],
        port=port,
        log_path=log_dir / f"{FIRESTORE}.log",
        probe=probe,
    )


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


def bigquery_emulator(port: int, grpc_port: int, log_dir: Path, project: str, bq_venv: Path, home: Path) -> Emulator:
    install_spatial_extension(bq_venv, home)
    base = f"http://{HOST}:{port}"

    def probe() -> bool:
        status, body = _http_get(f"{base}/readyz")
        if status != 200 or '"ok"' not in body:
            return False
        return _http_get(f"{base}/bigquery/v2/projects/{project}/datasets")[0] == 200

    return Emulator(
        name=BIGQUERY,
        argv=[
            str(bqemulator_bin(bq_venv)),
            "start",
            "--rest-host",
            HOST,
            "--rest-port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--project",
            project,
        ],
        port=port,
        log_path=log_dir / f"{BIGQUERY}.log",
        probe=probe,
        env={
            "HOME": str(home),  # DuckDB's extension dir is $HOME/.duckdb/extensions: keep it out of the real home
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",  # else boot tries to download DuckDB's avro extension
            "PYTHONUNBUFFERED": "1",
        },
    )


# ---------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------


class LocalStack:
    """Pub/Sub, Firestore and BigQuery emulators (plus Bigtable with ``bigtable=True``) on free ports;
    a context manager.

    >>> with LocalStack() as stack:
    ...     stack.apply_env()  # PUBSUB_EMULATOR_HOST & co. for the client libraries
    """

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        bq_venv: Path | str | None = None,
        java: str = "java",
        pubsub_bin: Path | str = PUBSUB_EMULATOR_BIN,
        firestore_bin: Path | str = FIRESTORE_EMULATOR_BIN,
        ports: Mapping[str, int] | None = None,
        ready_timeout_s: float = 90.0,
        bigtable: bool = False,
        bigtable_bin: Path | str = BIGTABLE_EMULATOR_BIN,
    ) -> None:
        self.project = project
        self.bigtable = bigtable
        self.bigtable_bin = Path(bigtable_bin)
        self.state_dir = Path(state_dir).resolve()
        self.bq_venv = Path(bq_venv).resolve() if bq_venv else self.state_dir / "bq-venv"
        self.java = java
        self.pubsub_bin = Path(pubsub_bin)
        self.firestore_bin = Path(firestore_bin)
        self.ports: dict[str, int] = dict(ports or {})
        self._fixed_ports = frozenset(self.ports)
        self.ready_timeout_s = ready_timeout_s
        self.log_dir = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.emulators: dict[str, Emulator] = {}
        self.startup_s: float | None = None
        self._saved_env: dict[str, str | None] | None = None
        self._environ: MutableMapping[str, str] | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Self:
        if self.emulators:
            raise StackError("stack already started")
        problems = check_prerequisites(
            java=self.java,
            pubsub_bin=self.pubsub_bin,
            firestore_bin=self.firestore_bin,
            bq_venv=self.bq_venv,
            bigtable_bin=self.bigtable_bin if self.bigtable else None,
        )
        if problems:
            raise StackError("local stack cannot start:\n  - " + "\n  - ".join(problems))
        reap_stale(self.run_dir)
        t0 = time.monotonic()
        for name in (*EMULATOR_NAMES, "bigquery_grpc", *((BIGTABLE,) if self.bigtable else ())):
            while name not in self.ports or list(self.ports.values()).count(self.ports[name]) > 1:
                if name in self.ports and name in self._fixed_ports:
                    raise StackError(f"port {self.ports[name]} given to more than one emulator: {self.ports}")
                self.ports[name] = free_port()  # distinct: two bind(0) calls may hand out the same port
        busy = [f"{name}={port}" for name, port in self.ports.items() if not port_free(port)]
        if busy:
            raise StackError(f"ports already in use on {HOST}: {', '.join(busy)}")
        emulators = [
            pubsub_emulator(self.ports[PUBSUB], self.log_dir, self.project, self.pubsub_bin),
            firestore_emulator(self.ports[FIRESTORE], self.log_dir, self.project, self.firestore_bin),
            bigquery_emulator(
                self.ports[BIGQUERY],
                self.ports["bigquery_grpc"],
                self.log_dir,
                self.project,
                self.bq_venv,
                self.state_dir / "bq-home",
            ),
        ]
        if self.bigtable:
            emulators.append(bigtable_emulator(self.ports[BIGTABLE], self.log_dir, self.bigtable_bin))
        if self.java != "java":
            # An explicit java: the Firestore launcher honours $JAVA, the Pub/Sub one $JAVA_HOME.
            java_path = Path(_java_path(self.java) or self.java).resolve()
            emulators[0].env["JAVA_HOME"] = str(java_path.parent.parent)
            emulators[1].env["JAVA"] = str(java_path)
        for emu in emulators:
            emu.run_dir = self.run_dir  # pid files: the next start reaps what a SIGKILLed owner left behind
        atexit.register(self.stop)  # normal interpreter exit; reap_stale covers SIGKILLed owners
        try:
            # Launching is instant; the 2-4 s each takes to boot overlap while we wait in parallel.
            for emu in emulators:
                self.emulators[emu.name] = emu
                emu.launch()
            with ThreadPoolExecutor(max_workers=len(emulators)) as pool:
                futures = {e.name: pool.submit(e.wait_ready, self.ready_timeout_s) for e in emulators}
                errors = [str(f.exception()) for f in futures.values() if f.exception() is not None]
            if errors:
                raise StackError("local stack failed to start:\n" + "\n\n".join(errors))
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every emulator (whole process groups, in parallel) and restore env applied by apply_env."""
        atexit.unregister(self.stop)
        self.restore_env()
        # Signal all, then wait for each: the JVMs shut down in parallel, and no threads are needed
        # (this also runs from atexit, where ThreadPoolExecutor refuses new work).
        for emu in self.emulators.values():
            emu.terminate()
        for emu in self.emulators.values():
            emu.stop()
        self.emulators.clear()
        # Auto-chosen ports are picked afresh by the next start(); fixed ones stay.
        self.ports = {k: v for k, v in self.ports.items() if k in self._fixed_ports}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints & environment ----------------------------------------------

    def _port(self, name: str) -> int:
        if name not in self.emulators:
            raise StackError("stack not started")
        return self.emulators[name].port

    @property
    def pubsub_host(self) -> str:
        return f"{HOST}:{self._port(PUBSUB)}"

    @property
    def firestore_host(self) -> str:
        return f"{HOST}:{self._port(FIRESTORE)}"

    @property
    def bigquery_endpoint(self) -> str:
        return f"http://{HOST}:{self._port(BIGQUERY)}"

    @property
    def bigtable_host(self) -> str:
        return f"{HOST}:{self._port(BIGTABLE)}"

    @property
    def env(self) -> dict[str, str]:
        """What the client libraries (and the pipeline) need to talk to this stack."""
        env = {
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "BIGQUERY_EMULATOR_HOST": self.bigquery_endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }
        if BIGTABLE in self.emulators:
            env["BIGTABLE_EMULATOR_HOST"] = self.bigtable_host
        return env

    def apply_env(self, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
        """Set ``env`` into ``environ`` (default ``os.environ``); stop() or restore_env() puts back the old values."""
        target: MutableMapping[str, str] = os.environ if environ is None else environ
        values = self.env
        if self._saved_env is None:
            self._saved_env = {k: target.get(k) for k in values}
            self._environ = target
        target.update(values)
        return values

    def restore_env(self) -> None:
        if self._saved_env is None or self._environ is None:
            return
        for key, old in self._saved_env.items():
            if old is None:
                self._environ.pop(key, None)
            else:
                self._environ[key] = old
        self._saved_env = self._environ = None

    def describe(self) -> dict[str, Any]:
        """Ports, pids, log paths and boot times: handy in failure messages and bench notes."""
        return {
            name: {"port": e.port, "pid": e.proc.pid if e.proc else None, "log": str(e.log_path), "ready_s": e.ready_s}
            for name, e in self.emulators.items()
        } | {"startup_s": self.startup_s}

    def __repr__(self) -> str:
        state = "running" if self.emulators else "stopped"
        return f"LocalStack(project={self.project!r}, state_dir={str(self.state_dir)!r}, {state})"
