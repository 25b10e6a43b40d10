"""Emulator processes: launch in an own process group, wait until ready, stop the whole group, reap orphans.

Each emulator runs in its own process group (the Firestore launcher is a bash script that forks java, so
killing one pid would leak the JVM), on a free port, logging to one file. A pid file per emulator lets the
next start reap emulators orphaned by a killed run (a SIGKILLed pytest never runs atexit).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stack.emulators.base import HOST, StackError

# Log lines that mean "someone else has the port" (Java/netty, uvicorn, grpc).
_BIND_FAILURES = ("Address already in use", "address already in use", "Failed to bind")

# Marks our children's environment so stale-process reaping can tell them from anything else.
_RUN_MARKER_VAR = "SUPPORTFLOW_STACK_RUN"


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


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
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
            reaped.append(str(info.get("name", pid_file.stem)))
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
        # Named by owner too: two stacks sharing a state dir (a second `make run`) keep a pid file each.
        return self.run_dir / f"{self.name}-{os.getpid()}.json" if self.run_dir else None

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
            info = {
                "name": self.name,
                "pgid": self.proc.pid,
                "owner": os.getpid(),
                "marker": marker,
                "port": self.port,
                "argv": self.argv,
            }
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
