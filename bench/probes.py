"""Probes of the machine and of a process under test: what a bench report records besides its figures."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime


def children_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process's live descendants (a pack's MCP server, say), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    family, grew = {pid}, True
    while grew:
        kids = {child for child, parent in parents.items() if parent in family and child not in family}
        family |= kids
        grew = bool(kids)
    return sum(proc_cpu_s(p) or 0.0 for p in family - {pid})


def proc_peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    import apache_beam

    return {
        "nproc": sh("nproc"),
        "cpu_model": cpu_model,
        "free_m": sh("free -m"),
        "loadavg": sh("cat /proc/loadavg"),
        "python": platform.python_version(),
        "apache_beam": apache_beam.__version__,
        "platform": platform.platform(),
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def report_head(module: str, argv: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """The opening of a bench report: the command that made it, when, on what machine, with what settings."""
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", module, *argv]),
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "settings": settings,
    }
