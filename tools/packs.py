"""Packs: everything one business brings, found by name, validated when it loads.

A pack is a Python package that exposes ``PACK`` (a ``Pack``): its tools (``ToolSpec``, Python
functions or tools served by its own MCP servers), its id formats, its route table and prompts, its
policy, its seed data and its scenarios. The core finds a pack by name (``load_pack``), in this order:
a folder ``NAME`` under one of the folders in ``SUPPORTFLOW_PACK_PATH`` (a company's pack kept in
its own repository), an installed distribution that registers it under the ``supportflow.packs``
entry-point group, and a folder ``packs/NAME`` of this repository (the module ``packs.NAME``).
Nothing in the core imports a particular pack; every table the core keeps about tools and ids is
derived here from the pack's declarations.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from tools.actions import ActionSpec
from tools.context_collection import ContextCollection
from tools.phrasing import Phrasing
from tools.spec import IdFormat, ToolSpec

DEFAULT_PACK = "shop"
ENTRY_POINT_GROUP = "supportflow.packs"
PACK_PATH_ENV = "SUPPORTFLOW_PACK_PATH"
CUSTOMER_KIND = "customer"


class PackError(ValueError):
    """A pack that cannot be loaded, or whose declarations contradict each other (the message names it)."""


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    tools: tuple[ToolSpec, ...]
    id_formats: tuple[IdFormat, ...]
    root: Path  # the pack's folder: routes, prompts, scenarios/ (the evals' default split) and heldout/
    # The pack's policy object (for prompts' digests and the tools' verdicts). The core only passes it on, and
    # reads ``articles_rendered()`` (the help articles it states), ``with_overrides(dict)`` (a scenario's
    # changes), ``version``, ``fingerprint`` and ``digests``.
    policy: Any = None
    # Writes the first N customers' seed data to Firestore for the local stack: seed(client, N) -> count seeded.
    seed: Callable[..., Any] | None = None
    demo_customer: str = ""  # the customer the local stack's terminal chat signs in as
    default_customers: int = 0  # how many customers the local stack seeds
    # The seed data's "now" (its dates are relative to it): the policy clock of the local stack and the evals.
    reference_time: datetime | None = None
    # The first N seed customers as built, not written: objects with ``customer_id``, ``profile`` and their
    # documents (``stack.bigtable`` writes them as rows; ``python -m stack up`` checks ``--customer`` against them).
    build_customers: Callable[..., Iterable[Any]] | None = None
    mcp_servers: Mapping[str, Any] = field(default_factory=dict)  # name -> tools.mcp.McpServer
    validate: Callable[[Pack], list[str]] | None = None  # the pack's own consistency checks (problems, or [])
    # The lists of the customer's records each turn's context carries, beside the profile (enrichment reads
    # them from Firestore or Bigtable, bounds and checks them as declared). (): the context is the profile.
    context: tuple[ContextCollection, ...] = ()
    # Actions the customer's context shows as already carried out (a reply may speak of them as done).
    context_actions: Callable[[Mapping[str, Any]], set[str]] | None = None
    # The pack's help articles, slug -> {"title", "body", ...} (``agents.retrieval`` indexes them once per
    # worker; grounded answers quote them by title). None: the pack has no articles.
    help_articles: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None
    # What the agent can help with, in the customer's words ("track a delivery"): clarifying questions name them.
    help_topics: tuple[str, ...] = ()
    # The pack's own wording of the conversational replies (keys of ``agents.conversation.TEXTS``:
    # greeting, closing, clarify, language) and of the input guardrails' refusals (``refusal_<key>``, keys of
    # ``agents.guardrails.REFUSALS``); a key it leaves out reads as the core's neutral default.
    texts: Mapping[str, str] = field(default_factory=dict)
    # The pack's own phrasings the consent gate and the guardrails add to their English rules (tools/phrasing.py).
    phrasing: Phrasing = Phrasing()
    # The customer's records in the turn's context as the prompt template's placeholders (placeholder -> text,
    # e.g. "orders" -> one line per order); the pack picks the fields (an allow-list) and bounds them. None: none.
    prompt_context: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None
    # The offline evals' hooks (evals/packworld.py, PackEvals): its customers in a trial's Firestore and what of
    # their data must not leak; a pack whose data lives outside Firestore adds a fresh store per trial, its rows
    # as documents (StoreEvals). None: the pack cannot be evaluated offline.
    evals: Any = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if self.validate is not None and not problems:
            problems = self.validate(self)
        if problems:
            raise PackError(f"pack {self.name!r} does not load:\n  - " + "\n  - ".join(problems))

    # -- derived tables -------------------------------------------------------------------------

    @functools.cached_property
    def tools_by_name(self) -> Mapping[str, ToolSpec]:
        return {t.name: t for t in self.tools}

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(self.tools_by_name)

    @functools.cached_property
    def mutating_tools(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tools if t.changes_data)

    @functools.cached_property
    def pii_args(self) -> Mapping[str, frozenset[str]]:
        return {t.name: t.pii_args for t in self.tools if t.pii_args}

    @functools.cached_property
    def handoff_tool(self) -> str:
        return next((t.name for t in self.tools if t.handoff), "")

    @functools.cached_property
    def actions(self) -> Mapping[str, ActionSpec]:
        return {a.name: a for t in self.tools for a in t.actions}

    def action_of(self, tool: str, arguments: Mapping[str, Any]) -> ActionSpec | None:
        spec = self.tools_by_name.get(tool)
        return spec.action_for(arguments) if spec else None

    @functools.cached_property
    def ids(self) -> Mapping[str, IdFormat]:
        return {f.kind: f for f in self.id_formats}

    @property
    def customer_id(self) -> IdFormat:
        return self.ids[CUSTOMER_KIND]

    @functools.cached_property
    def record_nouns(self) -> tuple[str, ...]:
        """The kinds of record a customer owns, as words ("order", "invoice"): every id kind but customer and minted."""
        return tuple(f.kind.replace("_", " ") for f in self.id_formats if f.kind != CUSTOMER_KIND and not f.minted)

    @functools.cached_property
    def any_id(self) -> re.Pattern[str]:
        """Every id kind of the pack, as one pattern (routing masks ids with it)."""
        return re.compile("|".join(f"(?:{f.regex.pattern})" for f in self.id_formats), re.IGNORECASE)


def _problems(pack: Pack) -> list[str]:
    out: list[str] = []
    names = [t.name for t in pack.tools]
    if len(set(names)) != len(names):
        out.append(f"tool names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    kinds = [f.kind for f in pack.id_formats]
    if len(set(kinds)) != len(kinds):
        out.append(f"id kinds repeat: {kinds}")
    if CUSTOMER_KIND not in kinds:
        out.append("no id format of kind 'customer' (the session's customer is bound by it)")
    actions = [a.name for t in pack.tools for a in t.actions]
    if len(set(actions)) != len(actions):
        out.append(f"two tools declare the same action: {actions}")
    collections = [c.name for c in pack.context]
    if len(set(collections)) != len(collections):
        out.append(f"context collections repeat: {collections}")
    for f in pack.id_formats:
        if f.context and f.context not in collections:
            out.append(f"id kind {f.kind!r} is found in context {f.context!r}, which the pack does not declare")
    if sum(t.handoff for t in pack.tools) > 1:
        out.append("more than one hand-off tool")
    for t in pack.tools:
        unknown = sorted(k for k in t.id_args.values() if k not in kinds)
        if unknown:
            out.append(f"tool {t.name!r} takes ids of undeclared kinds {unknown}")
        if t.mcp_server and t.mcp_server not in pack.mcp_servers:
            out.append(f"tool {t.name!r} names MCP server {t.mcp_server!r}, which the pack does not declare")
        if t.tool is not None:
            fields = set(getattr(t.tool.args_schema, "model_fields", {}) or {})
            named = {*t.pii_args, *t.id_args, *t.text_args, *t.span_args, *(t.idempotency_key or ())}
            if t.action_arg:
                named.add(t.action_arg)
            missing = sorted(named - fields)
            if missing:
                out.append(f"tool {t.name!r} declares facts about arguments it does not take: {missing}")
    return out


def _from_path(name: str) -> Any | None:
    for folder in filter(None, os.environ.get(PACK_PATH_ENV, "").split(os.pathsep)):
        init = Path(folder) / name / "__init__.py"
        if init.is_file():
            module_name = f"supportflow_pack_{name}"
            spec = importlib.util.spec_from_file_location(
                module_name, init, submodule_search_locations=[str(init.parent)]
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            return module
    return None


def _module_for(name: str) -> Any:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
        raise PackError(f"pack name {name!r} is not a valid name (lower-case letters, digits, _)")
    found = _from_path(name)
    if found is not None:
        return found
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    try:
        return importlib.import_module(f"packs.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"packs.{name}", "packs"):
            raise PackError(f"no pack named {name!r} (installed packs: {available_packs()})") from None
        raise


@functools.lru_cache(maxsize=16)
def load_pack(name: str = DEFAULT_PACK) -> Pack:
    """The pack ``name``, loaded once per process; ``PackError`` if it is missing or inconsistent."""
    module = _module_for(name)
    pack = getattr(module, "PACK", module)
    if not isinstance(pack, Pack):
        raise PackError(f"pack {name!r}: its module has no PACK of type Pack")
    if pack.name != name:
        raise PackError(f"pack {name!r} calls itself {pack.name!r}")
    return pack


def available_packs() -> list[str]:
    """Pack names: folders on ``SUPPORTFLOW_PACK_PATH``, installed entry points, the folders under ``packs/``."""
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for folder in filter(None, os.environ.get(PACK_PATH_ENV, "").split(os.pathsep)):
        if Path(folder).is_dir():
            names.update(p.name for p in Path(folder).iterdir() if (p / "__init__.py").is_file())
    try:
        root = importlib.import_module("packs")
        for folder in getattr(root, "__path__", ()):
            names.update(p.name for p in Path(folder).iterdir() if (p / "__init__.py").is_file())
    except ModuleNotFoundError:
        pass
    return sorted(names)
