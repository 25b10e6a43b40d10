"""What a pack declares about one tool and one kind of id: every fact the core needs, in one place.

A ``ToolSpec`` carries a tool's implementation (a LangChain tool, or the name of the pack's MCP
server that serves it) together with the facts the core derives its tables from: whether it reads
or changes data, the action it carries out (the consent gate and the promise guardrail read it),
the arguments that identify a replay, the arguments eval rows must mask, the id kind each id
argument takes (narrowing and the guardrails read the pack's format for it), the arguments filled
from the customer's own words, and how its result reads to a customer when the model does not
write the reply. The core never keeps a table keyed by a tool's name: it asks the spec.

An ``IdFormat`` is one kind of identifier of the business (customer, order, invoice, ...): the
guardrails refuse another customer's ids by it, narrowing offers the customer's own, and routing
masks them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.tools import BaseTool

from tools.actions import ActionSpec

Effect = Literal["reads", "changes"]
SpanKind = Literal["street", "city", "postcode"]
Render = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Applies:
    """The records an action can apply to: those whose ``field`` holds one of ``values`` (e.g. status placed).

    When a customer asks for the action without saying which record, and several are theirs, the agent
    picks the only one it applies to and says so (``says`` completes "it is the only one that ..."), or asks
    which one is meant (``agents.steps``).
    """

    field: str
    values: tuple[Any, ...]
    says: str

    def holds(self, record: Mapping[str, Any]) -> bool:
        return record.get(self.field) in self.values


@dataclass(frozen=True)
class IdFormat:
    """One kind of id. ``owner_group``: the regex group holding the owning customer's id (0: none)."""

    kind: str
    pattern: str
    example: str
    owner_group: int = 0
    minted: bool = False  # minted by the tools (a reference): it must come from this session's own results
    # Where the customer's own ids of this kind are in the turn's context: the list ``context`` of records,
    # each with its id in ``field``; ``words`` are dotted paths whose words name a record ("the jacket").
    context: str = ""
    field: str = ""
    words: tuple[str, ...] = ()
    # How the tools read an id of this kind as typed (e.g. "#x-1 " -> "X-1"); the evals compare arguments by it.
    normalize: Callable[[str], str] | None = None

    def __post_init__(self) -> None:
        compiled = re.compile(self.pattern)
        if not self.regex.fullmatch(self.example):
            raise ValueError(f"id kind {self.kind!r}: example {self.example!r} does not match {self.pattern!r}")
        if self.owner_group > compiled.groups:
            raise ValueError(f"id kind {self.kind!r}: owner_group {self.owner_group} but the pattern has fewer")

    def records(self, context: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...]:
        """The customer's own records of this kind in ``context`` (as the context orders them)."""
        rows = (context or {}).get(self.context) if self.context else None
        if not isinstance(rows, list | tuple):
            return ()
        return tuple(r for r in rows if isinstance(r, Mapping) and r.get(self.field))

    def naming_words(self, record: Mapping[str, Any]) -> list[str]:
        """The texts at ``words`` in ``record`` (lists are walked), e.g. its items' names."""
        out: list[str] = []
        for path in self.words:
            nodes: list[Any] = [record]
            for key in path.split("."):
                nodes = [
                    x
                    for n in nodes
                    for x in (n if isinstance(n, list | tuple) else [n])
                    if isinstance(x, Mapping)
                    for x in [x.get(key)]
                    if x is not None
                ]
            out.extend(str(x) for n in nodes for x in (n if isinstance(n, list | tuple) else [n]))
        return out

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(rf"(?<![\w-])(?:{self.pattern})(?![\w-])", re.IGNORECASE)


@dataclass(frozen=True)
class ToolSpec:
    """One tool of a pack, with all of its facts."""

    name: str
    description: str
    effect: Effect
    render: Render  # its result as a few plain sentences (rendered replies), from the result's own fields
    tool: BaseTool | None = None  # the Python implementation; None when ``mcp_server`` serves it
    mcp_server: str = ""  # the name of the pack's MCP server that serves it
    actions: tuple[ActionSpec, ...] = ()  # for a tool that changes data: the action (or one per ``action_arg``)
    action_arg: str = ""  # the argument whose value names which of ``actions`` a call carries out
    # The arguments that identify one action (a replay hits the same record): declared for every tool that
    # changes data (``()``: one action per turn), never for a read.
    idempotency_key: tuple[str, ...] | None = None
    pii_args: frozenset[str] = frozenset()  # masked in eval rows
    id_args: Mapping[str, str] = field(default_factory=dict)  # argument -> id kind (IdFormat.kind)
    text_args: frozenset[str] = frozenset()  # free text that small models fill with the customer's own words
    span_args: Mapping[str, SpanKind] = field(default_factory=dict)  # address fields taken from spans of the text
    handoff: bool = False  # hands the conversation to a person (the turn ends as a hand-off)
    applies: Mapping[str, Applies] = field(default_factory=dict)  # id argument -> the records its action applies to

    def __post_init__(self) -> None:
        if (self.tool is None) == (not self.mcp_server):
            raise ValueError(f"tool {self.name!r}: give exactly one of tool= or mcp_server=")
        if self.tool is not None and self.tool.name != self.name:
            raise ValueError(f"tool {self.name!r}: its implementation is named {self.tool.name!r}")
        if self.effect not in ("reads", "changes"):
            raise ValueError(f"tool {self.name!r}: effect must be 'reads' or 'changes', got {self.effect!r}")
        if self.effect == "changes" and (not self.actions or self.idempotency_key is None):
            raise ValueError(f"tool {self.name!r} changes data: declare its action and its idempotency key")
        if self.effect == "reads" and (self.actions or self.idempotency_key is not None):
            raise ValueError(f"tool {self.name!r} only reads: it has no action and no idempotency key")
        unmasked = sorted({*self.text_args, *self.span_args} - self.pii_args)
        if unmasked:
            raise ValueError(f"tool {self.name!r}: the customer's own words in {unmasked} must be pii_args too")
        if sorted(self.applies) != sorted(a for a in self.applies if a in self.id_args):
            raise ValueError(f"tool {self.name!r}: applies names arguments that are not id arguments")
        if len(self.actions) > 1 and not self.action_arg:
            raise ValueError(f"tool {self.name!r}: several actions need action_arg to choose between them")

    @property
    def changes_data(self) -> bool:
        return self.effect == "changes"

    def action_for(self, arguments: Mapping[str, Any]) -> ActionSpec | None:
        """The action a call with ``arguments`` carries out (None for a read)."""
        if not self.actions:
            return None
        if self.action_arg:
            value = arguments.get(self.action_arg)
            for action in self.actions:
                if action.name == value:
                    return action
        return self.actions[0]
