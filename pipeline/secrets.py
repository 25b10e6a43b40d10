"""Secrets read where they are used, never carried in a job's options: Secret Manager for workers and the frontend.

Anyone who can view a Dataflow job can read its options, so a key given there is no secret. The options
name a secret *version* instead (``--session_binding_secret``), and each process reads the value itself:
a worker in ``CheckSessionOwner.setup()``, the chat frontend when it starts. The client is the official
``google-cloud-secret-manager`` on its REST transport; ``--secret_manager_endpoint`` points it at a local
server in tests (tests/secret_manager_server.py). The local stack keeps its local key
(``--session_binding_key`` from ``SUPPORTFLOW_SESSION_BINDING_KEY``, stack/keys.py).

Rotation, when the version is ``latest`` (``BindingKeys``):

- Readers re-read the secret every ``REFRESH_S`` and accept the keys of the latest version *and* of the
  version before it (when it can still be read: a disabled or destroyed version cannot).
- The frontend signs new session ids with the latest version's key only once it has known that version
  for ``REFRESH_S``: by then every worker has re-read the secret, so no worker meets a key it lacks.
- So rotating is ``gcloud secrets versions add`` with the new key; the old key stays accepted until its
  version is disabled or another version is added. Disable it after the session lifetime
  (``contract.binding.DEFAULT_TTL_S``, 12 h), when no session id signed with it is still valid.

A pinned version (``versions/7``) is read alone; its value may still list several keys, comma-separated.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contract.binding import SESSION_BINDING_KEY_ENV, parse_keys
from pipeline.options import env_variable

log = logging.getLogger(__name__)

REFRESH_S = 300.0  # how stale a reader's keys may get; also the frontend's wait before signing with a new key
RETRY_S = 30.0  # after a failed re-read: the last keys stay in use, the next try waits this long
TIMEOUT_S = 10.0

SECRET_ENV = env_variable("session_binding_secret")
ENDPOINT_ENV = env_variable("secret_manager_endpoint")

_VERSION = re.compile(r"^(?P<secret>.+/secrets/[^/]+)/versions/(?P<version>latest|\d+)$")


class SecretUnavailable(RuntimeError):
    """The secret could not be read (missing, disabled, no permission, unreachable, corrupted)."""


@dataclass(frozen=True)
class SecretVersion:
    name: str  # as the service resolved it: .../versions/<number>, also when ``latest`` was asked for
    data: bytes = b""

    def __repr__(self) -> str:  # never the value, in a log or a traceback
        return f"SecretVersion({self.name!r}, {len(self.data)} bytes)"

    @property
    def number(self) -> int:
        return int(self.name.rsplit("/", 1)[1])


class SecretReader:
    """Reads secret versions with the official client (REST), checking each payload's CRC32C."""

    def __init__(self, endpoint: str | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._client: Any = None

    def _client_or_new(self) -> Any:
        if self._client is None:
            from google.cloud import secretmanager

            kwargs: dict[str, Any] = {"transport": "rest"}
            if self.endpoint:
                from google.api_core.client_options import ClientOptions

                kwargs["client_options"] = ClientOptions(api_endpoint=self.endpoint)
                if self.endpoint.startswith("http://"):  # a local server (Settings refuses those on Dataflow)
                    from google.auth.credentials import AnonymousCredentials

                    kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
            self._client = secretmanager.SecretManagerServiceClient(**kwargs)
        return self._client

    def access(self, name: str) -> SecretVersion:
        """The version ``name``'s value; raises ``google.api_core.exceptions.GoogleAPICallError``."""
        import google_crc32c

        response = self._client_or_new().access_secret_version(name=name, timeout=self.timeout_s)
        data = bytes(response.payload.data)
        if "data_crc32c" in response.payload and google_crc32c.value(data) != response.payload.data_crc32c:
            raise SecretUnavailable(f"{name}: payload corrupted in transit (CRC32C mismatch)")
        return SecretVersion(response.name, data)

    def close(self) -> None:
        if self._client is not None:
            self._client.transport.close()
            self._client = None


def read_versions(reader: SecretReader, name: str) -> list[SecretVersion]:
    """Newest first: the version ``name``, and for ``.../versions/latest`` the one before it if it can be read."""
    from google.api_core import exceptions as gexc

    match = _VERSION.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a secret version (projects/P/secrets/S/versions/latest or N)")
    try:
        newest = reader.access(name)
    except gexc.GoogleAPICallError as e:
        raise SecretUnavailable(f"{name}: {e.__class__.__name__}: {e.message}") from None
    versions = [newest]
    if match["version"] == "latest" and newest.number > 1:
        # Destroyed or disabled: the rotation is over. Over REST, FAILED_PRECONDITION arrives as a plain 400.
        with contextlib.suppress(gexc.NotFound, gexc.BadRequest):
            versions.append(reader.access(f"{match['secret']}/versions/{newest.number - 1}"))
    return versions


class BindingKeys:
    """One process's session binding keys (``contract.binding``): fixed ones, or those of a secret version.

    ``accepted()``: every key a session id may be signed with, newest first. ``signing_key()``: the key
    to sign new ids with. Both re-read the secret when it is ``REFRESH_S`` old (a failed read keeps the
    last keys). Thread-safe: the frontend verifies in worker threads.
    """

    def __init__(
        self,
        fixed: Sequence[bytes] = (),
        *,
        secret: str | None = None,
        reader: SecretReader | None = None,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bool(fixed) == bool(secret):
            raise ValueError("binding keys come either from configuration or from a secret, one of them")
        self.secret = secret
        self._fixed = tuple(fixed)
        self._reader = reader or SecretReader()
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: list[tuple[str, tuple[bytes, ...]]] = []  # newest first
        self._first_seen: dict[str, float] = {}
        self._next_read = 0.0
        if secret:
            self._read(raise_errors=True)  # at setup: a worker without its key must not start

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BindingKeys | None:
        """The frontend's keys: ``SUPPORTFLOW_SESSION_BINDING_SECRET`` (with ``_SECRET_MANAGER_ENDPOINT``) or
        ``SUPPORTFLOW_SESSION_BINDING_KEY``, the same variables the pipeline's options are read from."""
        secret, fixed = environ.get(SECRET_ENV), parse_keys(environ.get(SESSION_BINDING_KEY_ENV))
        if secret and fixed:
            raise ValueError(f"set {SECRET_ENV} or {SESSION_BINDING_KEY_ENV}, not both")
        if secret:
            return cls(secret=secret, reader=SecretReader(environ.get(ENDPOINT_ENV) or None))
        return cls(fixed) if fixed else None

    def _read(self, *, raise_errors: bool = False) -> None:
        assert self.secret is not None
        now = self._clock()
        try:
            versions = read_versions(self._reader, self.secret)
            parsed = [(v.name, parse_keys(v.data.decode("utf-8"))) for v in versions]
            if not parsed[0][1]:
                raise ValueError(f"{versions[0].name} holds no key")
        except (SecretUnavailable, ValueError, UnicodeDecodeError) as e:  # ValueError: a key too short, or none
            if raise_errors:
                raise SecretUnavailable(f"session binding keys: {e}") from None
            log.warning("session binding keys not re-read (%s): keeping the last ones", e)
            self._next_read = now + RETRY_S
            return
        for name, _ in parsed:
            self._first_seen.setdefault(name, now)
        self._versions = [(name, keys) for name, keys in parsed if keys]
        self._next_read = now + self._refresh_s

    def _current(self) -> list[tuple[str, tuple[bytes, ...]]]:
        if self.secret is None:
            return [("fixed", self._fixed)]
        with self._lock:
            if self._clock() >= self._next_read:
                self._read()
            return list(self._versions)

    def accepted(self) -> tuple[bytes, ...]:
        keys: list[bytes] = []
        for _, version_keys in self._current():
            keys.extend(k for k in version_keys if k not in keys)
        return tuple(keys)

    def signing_key(self) -> bytes:
        versions = self._current()
        name, keys = versions[0]
        if len(versions) > 1 and self._clock() - self._first_seen.get(name, 0.0) < self._refresh_s:
            return versions[1][1][0]  # a worker may not know the newest key yet
        return keys[0]

    def close(self) -> None:
        self._reader.close()

    def __repr__(self) -> str:
        return f"BindingKeys(secret={self.secret!r})" if self.secret else f"BindingKeys({len(self._fixed)} fixed)"
