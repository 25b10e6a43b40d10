"""A pack's tools in one worker process: declarations for the models, and one executor for every call.

A pack's tools are Python functions (run by ``tools.registry.FirestoreToolExecutor``) or tools served
by the pack's MCP servers (``tools.mcp.McpToolSource``). The ``Toolbox`` of a pack holds one MCP
connection per server for the whole worker process, opened on first use and closed when the process
exits (``close_all``): every DoFn of the worker shares it, as Beam shares a model.

When a server's tools are first listed, they are checked against the pack's declarations: a tool the
pack declares but the server does not serve, or whose MCP annotations contradict its declared effect
(read-only but declared as changing data, or the reverse), is a ``PackError`` naming it.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from google.cloud import firestore

from contract.tool_calls import ToolCall
from tools.mcp import McpToolSource
from tools.packs import DEFAULT_PACK, Pack, PackError, load_pack
from tools.registry import (
    STATUS_UNKNOWN_TOOL,
    FirestoreToolExecutor,
    ToolExecutor,
    ToolResult,
    openai_function,
)
from tools.scope import ToolContext


class Toolbox:
    """The tools of one pack for this process (thread-safe)."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self._lock = threading.Lock()
        self._sources: dict[str, McpToolSource] = {}
        self._listed: dict[str, dict[str, Any]] = {}  # MCP tool name -> declaration as served

    def _source(self, server: str) -> McpToolSource:
        with self._lock:
            source = self._sources.get(server)
            if source is None:
                source = McpToolSource(self.pack.mcp_servers[server]).start()
                self._sources[server] = source
        return source

    def _mcp_declaration(self, name: str) -> dict[str, Any]:
        with self._lock:
            known = self._listed.get(name)
        if known is not None:
            return known
        spec = self.pack.tools_by_name[name]
        served = {t["name"]: t for t in self._source(spec.mcp_server).list_tools()}
        problems = []
        for declared in (t for t in self.pack.tools if t.mcp_server == spec.mcp_server):
            tool = served.get(declared.name)
            if tool is None:
                problems.append(f"MCP server {spec.mcp_server!r} does not serve {declared.name!r}")
            elif tool["read_only"] == declared.changes_data:
                said = "read-only" if tool["read_only"] else "as changing data"
                problems.append(f"{declared.name!r} is annotated {said} by its server, declared {declared.effect!r}")
        if problems:
            raise PackError(f"pack {self.pack.name!r}: " + "; ".join(problems))
        with self._lock:
            for declared in (t for t in self.pack.tools if t.mcp_server == spec.mcp_server):
                tool = served[declared.name]
                self._listed[declared.name] = {
                    "name": declared.name,
                    "description": tool["description"] or declared.description,
                    "parameters": tool["parameters"],
                }
            return self._listed[name]

    def declarations(self, names: Iterable[str] | None = None) -> tuple[dict[str, Any], ...]:
        """The declarations for ``names`` (default: all the pack's tools), fresh dicts each call."""
        chosen = tuple(names) if names is not None else self.pack.tool_names
        unknown = [n for n in chosen if n not in self.pack.tools_by_name]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; pack {self.pack.name!r} has {list(self.pack.tool_names)}")
        out = []
        for name in chosen:
            spec = self.pack.tools_by_name[name]
            out.append(openai_function(spec.tool) if spec.tool is not None else self._mcp_declaration(name))
        return tuple(json.loads(json.dumps(d)) for d in out)

    def executor(self, db: firestore.Client | None, *, clock: Callable[[], datetime] | None = None) -> ToolExecutor:
        python = [s.tool for s in self.pack.tools if s.tool is not None]
        local = (
            FirestoreToolExecutor(db, tools=python, pack=self.pack, clock=clock) if python and db is not None else None
        )
        return PackExecutor(self, local)

    def execute_mcp(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        spec = self.pack.tools_by_name[call.name]
        return self._source(spec.mcp_server).execute(ctx, call)

    def close(self) -> None:
        with self._lock:
            sources, self._sources = list(self._sources.values()), {}
            self._listed.clear()
        for source in sources:
            source.close()


class PackExecutor:
    """Runs one call of any of the pack's tools: Python tools over Firestore, MCP tools on their server."""

    def __init__(self, box: Toolbox, local: FirestoreToolExecutor | None) -> None:
        self._box, self._local = box, local

    def execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        spec = self._box.pack.tools_by_name.get(call.name)
        if spec is not None and spec.mcp_server:
            return self._box.execute_mcp(ctx, call)
        if self._local is None:
            content = {"status": STATUS_UNKNOWN_TOOL, "errors": [f"no tool named {call.name[:60]!r}"]}
            return ToolResult(call.id, call.name, STATUS_UNKNOWN_TOOL, content)
        return self._local.execute(ctx, call)


_BOXES: dict[str, Toolbox] = {}
_BOXES_LOCK = threading.Lock()


def toolbox(pack: str = DEFAULT_PACK) -> Toolbox:
    """This process's toolbox of ``pack`` (one MCP connection per server per worker process)."""
    with _BOXES_LOCK:
        box = _BOXES.get(pack)
        if box is None:
            box = _BOXES[pack] = Toolbox(load_pack(pack))
        return box


def tool_declarations(names: Iterable[str] | None = None, pack: str = DEFAULT_PACK) -> tuple[dict[str, Any], ...]:
    """The pack's declarations for ``names`` (``ModelRequest.tools``), Python and MCP tools alike."""
    return toolbox(pack).declarations(names)


def make_executor(
    project: str, *, pack: str = DEFAULT_PACK, clock: Callable[[], datetime] | None = None
) -> ToolExecutor:
    """An executor of the pack's tools on a new Firestore client for ``project`` (honours the emulator env)."""
    box = toolbox(pack)
    needs_store = any(s.tool is not None for s in box.pack.tools)
    return box.executor(firestore.Client(project=project) if needs_store else None, clock=clock)


@atexit.register
def close_all() -> None:
    """Close every toolbox's MCP connections (stdio servers stop with them)."""
    with _BOXES_LOCK:
        boxes = list(_BOXES.values())
        _BOXES.clear()
    for box in boxes:
        box.close()
