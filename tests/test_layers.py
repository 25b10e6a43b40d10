"""The import layers hold: import-linter's contracts in .importlinter pass, and cover every package.

Layers import one way only (contract -> tools -> agents -> pipeline -> stack -> {evals, web, deploy,
bench}) and no package's modules import each other in a circle. ``lint-imports`` checks the whole
source tree, lazy imports inside functions included, so a shortcut upward fails here and in ``make test``.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
NOT_LAYERED = {"tests"}  # tests may import anything


def _config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser


def _listed(value: str) -> set[str]:
    return {name.strip() for line in value.splitlines() for name in line.split("|") if name.strip()}


def test_import_contracts_are_kept() -> None:
    out = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(CONFIG)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout


def test_every_package_is_in_the_layers() -> None:
    packages = {
        p.name for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.py")) and p.name not in NOT_LAYERED
    }  # fmt: skip
    config = _config()
    assert _listed(config["importlinter"]["root_packages"]) == packages
    assert _listed(config["importlinter:contract:layers"]["layers"]) == packages
