"""What the evals need from a pack: its customers in a trial's Firestore, and a store per trial if it has one.

A pack declares its hooks as ``Pack.evals`` (an object with the methods of ``PackEvals``). Each trial

- writes the scenario's customers to the trial's Firestore project (``seed_customers``: what the pipeline's
  enrichment reads, and for a pack whose data is Firestore's, all of it), with the trial's policy;
- knows what of another customer's data must never reach a reply (``customer_strings``).

A pack whose data lives outside Firestore adds ``StoreEvals``'s methods; each trial then

- gets a fresh copy of the pack's seeded store in a folder of its own (``prepare``) and a ``Toolbox`` whose
  MCP servers run over that copy (started on the trial's first call, closed after the trial), so trials
  never see each other's writes and the stack's own store is never touched;
- applies the scenario's overrides on the store's paths (``apply``), others go to Firestore;
- reads the store's rows of the scenario's customers as documents (``snapshot``: ``customers/<id>/...``),
  so the end-state checks, the diff and strict state score them as they score Firestore documents.

A pack's scenarios are in its folder (``Pack.root``): ``scenarios/`` (the default split) and ``heldout/``.
The core finds the hooks through the pack's declaration (``tools.packs.load_pack``), never by importing it.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tools.packs import load_pack
from tools.registry import ToolExecutor
from tools.toolbox import Toolbox, toolbox

Snapshot = dict[str, dict[str, Any]]  # absolute document path -> plain document
SPLITS: tuple[str, ...] = ("scenarios", "heldout")  # a pack's scenario folders: the dev split, the held-out one


class PackEvals(Protocol):
    def seed_customers(self, client: Any, customers: Sequence[str], policy: Any = None) -> None:
        """The customers' Firestore documents in the trial's project, under ``policy`` (the trial's; None:
        the pack's own)."""
        ...

    def customer_strings(self, customers: Sequence[str]) -> list[str]:
        """What of these customers' data must never reach another customer's reply."""
        ...


class StoreEvals(PackEvals, Protocol):
    def prepare(self, folder: Path) -> Mapping[str, Any]:
        """A fresh seeded store in ``folder``; the pack's MCP servers over it (name -> tools.mcp.McpServer)."""
        ...

    def snapshot(self, folder: Path, customers: Sequence[str]) -> Snapshot:
        """The store's rows of ``customers`` as documents under ``customers/<id>/``."""
        ...

    def apply(self, folder: Path, path: str, override: Mapping[str, Any]) -> bool:
        """An override (``{set: ...}``, ``{create: ...}`` or ``{delete: true}``) on a store path; False if not one."""
        ...


def pack_evals(pack: str) -> PackEvals:
    """The pack's eval hooks (a ``ValueError`` if it declares none)."""
    hooks = load_pack(pack).evals
    if hooks is None:
        raise ValueError(f"pack {pack!r} declares no eval hooks (Pack.evals): it cannot be evaluated offline")
    return hooks


def has_store(pack: str) -> bool:
    """Whether the pack keeps its data in a store of its own (its hooks are ``StoreEvals``)."""
    return callable(getattr(load_pack(pack).evals, "prepare", None))


def scenarios_folder(pack: str, split: str = SPLITS[0]) -> Path:
    """Where the pack keeps the scenarios of ``split`` (``scenarios``, or ``heldout``)."""
    return load_pack(pack).root / split


def reference_time(pack: str) -> datetime:
    """The pack's seed data's "now" (``Pack.reference_time``): the trials' policy clock."""
    now = load_pack(pack).reference_time
    if now is None:
        raise ValueError(f"pack {pack!r} declares no reference_time: its seed data has no fixed 'now'")
    return now


class PackStore:
    """One trial's copy of the pack's store, and a toolbox whose MCP servers run over it."""

    def __init__(self, pack: str) -> None:
        if not has_store(pack):
            raise ValueError(f"pack {pack!r} declares no store of its own (Pack.evals: StoreEvals)")
        self.hooks: StoreEvals = load_pack(pack).evals
        self.folder = Path(tempfile.mkdtemp(prefix=f"sfeval-{pack}-"))
        try:
            base = load_pack(pack)
            servers = {**base.mcp_servers, **self.hooks.prepare(self.folder)}
            self.box = Toolbox(replace(base, mcp_servers=servers))
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def executor(self, client: Any, clock: Callable[[], datetime] | None = None) -> ToolExecutor:
        return self.box.executor(client, clock=clock)

    def snapshot(self, customers: Sequence[str]) -> Snapshot:
        return self.hooks.snapshot(self.folder, customers)

    def apply(self, path: str, override: Mapping[str, Any]) -> bool:
        return self.hooks.apply(self.folder, path, override)

    def close(self) -> None:
        """Stop the trial's servers and delete its store."""
        try:
            self.box.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def tool_arguments(pack: str, tool: str) -> frozenset[str]:
    """The argument names ``tool`` of ``pack`` takes: its Python schema's, or the schema its MCP server serves."""
    spec = load_pack(pack).tools_by_name[tool]
    if spec.tool is not None:
        return frozenset(getattr(spec.tool.args_schema, "model_fields", {}) or ()) - {"scope"}
    return _served_arguments(pack).get(tool, frozenset())


@functools.lru_cache(maxsize=8)
def _served_arguments(pack: str) -> Mapping[str, frozenset[str]]:
    """Every MCP tool's arguments as its server declares them (once per process; a throwaway store if the pack
    has eval hooks, else the process's toolbox of the pack)."""
    names = [t.name for t in load_pack(pack).tools if t.mcp_server]
    if not has_store(pack):
        declarations = toolbox(pack).declarations(names)
    else:
        store = PackStore(pack)
        try:
            declarations = store.box.declarations(names)
        finally:
            store.close()
    return {d["name"]: frozenset((d.get("parameters") or {}).get("properties") or ()) for d in declarations}
