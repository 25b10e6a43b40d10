"""``LocalStack``: the emulators together, on free ports, as one context manager."""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from stack.emulators.base import (
    BIGQUERY,
    BIGTABLE,
    BIGTABLE_EMULATOR_BIN,
    DEFAULT_PROJECT,
    DEFAULT_STATE_DIR,
    EMULATOR_NAMES,
    FIRESTORE,
    FIRESTORE_EMULATOR_BIN,
    HOST,
    PUBSUB,
    PUBSUB_EMULATOR_BIN,
    StackError,
)
from stack.emulators.bigquery import bigquery_emulator
from stack.emulators.bigtable import bigtable_emulator
from stack.emulators.firestore import firestore_emulator
from stack.emulators.prereqs import check_prerequisites, find_java
from stack.emulators.processes import Emulator, free_port, port_free, reap_stale
from stack.emulators.pubsub import pubsub_emulator


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
        log_dir: Path | str | None = None,
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
        # A second stack on the same state dir passes a log dir of its own (stack up does: logs/<pid>/).
        self.log_dir = Path(log_dir).resolve() if log_dir else self.state_dir / "logs"
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
            java_path = Path(find_java(self.java) or self.java).resolve()
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
