"""bqemulator (PyPI, DuckDB-backed BigQuery REST API) in a virtual environment of its own, and its launch.

Its own venv because bqemulator pins DuckDB (and friends) that must never have to agree with Beam's.
It downloads DuckDB's spatial extension at boot, which fails offline: the wheel's copy is linked into
the place DuckDB looks first.
"""

from __future__ import annotations

import fcntl
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from stack.emulators.base import BIGQUERY, HOST, StackError
from stack.emulators.processes import Emulator, http_get

BQ_VENV_REQUIREMENTS = ("bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy")


def bq_venv_python(bq_venv: Path) -> Path:
    return bq_venv / "bin" / "python"


def bqemulator_bin(bq_venv: Path) -> Path:
    return bq_venv / "bin" / "bqemulator"


def find_spatial_extension(bq_venv: Path) -> Path | None:
    """``spatial.duckdb_extension`` shipped by the duckdb-extension-spatial wheel in the bq venv."""
    pattern = "lib/python3*/site-packages/duckdb_extension_spatial/extensions/v*/spatial.duckdb_extension"
    hits = sorted(bq_venv.glob(pattern))
    return hits[-1] if hits else None


def _bq_venv_complete(path: Path) -> bool:
    return bqemulator_bin(path).is_file() and find_spatial_extension(path) is not None


def ensure_bq_venv(path: Path | str, python: str = "python3", announce: Callable[[str], None] | None = None) -> Path:
    """Create bqemulator's own virtual environment at ``path`` unless it is already complete.

    A separate venv because bqemulator pins DuckDB (and friends) that must never
    have to agree with Beam's dependency set. A lock file beside it serialises
    builders: a second process (another test session, a second ``make run``) waits
    for the first one's build instead of running pip into the same directory.
    ``announce`` gets one line before a build starts (``stack up`` prints it).
    """
    path = Path(path)
    if _bq_venv_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if _bq_venv_complete(path):
            return path  # built by whoever held the lock before us
        if announce is not None:
            announce(f"building the BigQuery emulator's environment in {path} (first run only, about a minute)")
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


def bigquery_emulator(port: int, grpc_port: int, log_dir: Path, project: str, bq_venv: Path, home: Path) -> Emulator:
    install_spatial_extension(bq_venv, home)
    base = f"http://{HOST}:{port}"

    def probe() -> bool:
        status, body = http_get(f"{base}/readyz")
        if status != 200 or '"ok"' not in body:
            return False
        return http_get(f"{base}/bigquery/v2/projects/{project}/datasets")[0] == 200

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
