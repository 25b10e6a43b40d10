"""The local stack's DEMO keys: the chat page's identity key and the session binding key.

``make run`` stays one command: unless the environment already has them, the stack makes both keys
once per state directory (``demo-keys.json``, readable by its owner only), so a restarted stack still
accepts the pages' tokens and the sessions' ids. They are put into this process's environment (the
pipeline, the chat page and the terminal client inherit it) and never printed. Demo only: a deployment
keeps its keys in a secret store (docs/security.md).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path

from contract.binding import IDENTITY_KEY_ENV, SESSION_BINDING_KEY_ENV

KEYS_FILE = "demo-keys.json"


def use_demo_keys(state_dir: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set each key variable not set yet, from ``state_dir``'s key file (made if missing); returns the names set."""
    environ = os.environ if environ is None else environ
    path = state_dir / KEYS_FILE
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError):
        keys = {}
    wanted = (IDENTITY_KEY_ENV, SESSION_BINDING_KEY_ENV)
    if not all(isinstance(keys.get(name), str) for name in wanted):
        keys = {name: secrets.token_urlsafe(32) for name in wanted}
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
    applied = [name for name in wanted if not environ.get(name)]
    for name in applied:
        environ[name] = keys[name]
    return applied
