"""Routes of a prompt version: example requests per tool, as a pack's versioned data (``<pack>/routes/<version>.yaml``).

A version with a routes file routes each turn by nearest neighbour over the
model's own embeddings (``agents.embedding_router``); a version without one lets the
model choose the tool itself under the step protocol's constraint.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from agents.embedding_router import content_words
from agents.model_io import RouteQuery
from tools.packs import DEFAULT_PACK, load_pack

REPLY_ROUTE_TOOL = "reply"  # a route that answers without a tool: the pack's text `say`, or (no `say`) model text
ANSWER_ROUTE_TOOL = "answer"  # a route answered by a passage of the pack's help articles (agents.retrieval)
SAY_KEYS = frozenset({"greeting", "closing", "clarify", "language"})  # agents.conversation.TEXTS
DEFAULT_PART_MARGIN = 0.01
_NUMBER = re.compile(r"\b\d[\w-]*\b")
_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?]\s))\s*[a-z]")


def routing_text(text: str, ids: re.Pattern[str]) -> str:
    """``text`` as routing sees it: the pack's ids replaced by "it", other numbers by "#", whitespace collapsed.

    Argument values say nothing about the intent and pull a small model's embedding towards each
    other (two requests naming ids look alike): route on the request with them masked.
    """
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isupper() for c in letters) > len(letters) / 2:
        text = text.lower()  # shouting reads as the same request ("WHERE IS MY PARCEL")
    # Chat is often typed without capitals; a small model's embedding of "where is my order?" lands nearer
    # another route than "Where is my order?" does, so each sentence starts with a capital, as the examples do.
    text = _SENTENCE_START.sub(lambda m: m.group(0).upper(), text)
    return " ".join(_NUMBER.sub("#", ids.sub("it", text)).split())


@dataclass(frozen=True)
class FollowUp:
    """A tool that runs after the route's tool when that result matches ``when`` (e.g. act after a check)."""

    tool: str
    when: tuple[tuple[str, Any], ...]
    args_from: tuple[str, ...]

    def applies(self, content: Mapping[str, Any]) -> bool:
        return all(content.get(key) == value for key, value in self.when)


@dataclass(frozen=True)
class Route:
    name: str
    tool: str  # a support tool, or REPLY_ROUTE_TOOL
    args: tuple[tuple[str, Any], ...] = ()
    then: FollowUp | None = None
    examples: tuple[str, ...] = ()
    say: str = ""  # a reply route's conversational text (agents.conversation): greeting, closing, clarify

    @property
    def answers(self) -> bool:
        """True for a route that answers a request (a tool, or a help article), not a conversational reply."""
        return self.tool != REPLY_ROUTE_TOOL


@dataclass(frozen=True)
class RouteTable:
    version: str
    k: int
    routes: Mapping[str, Route]
    lexical_weight: float = 0.0
    pack: str = DEFAULT_PACK
    # Below this similarity of the nearest example the turn is not routed: the agent asks what the customer
    # needs (a clarifying question naming what it can help with). 0: always route.
    min_score: float = 0.0
    # Above this share of words unknown to the pack's data the message reads as another language. 1: never.
    max_foreign: float = 1.0
    # A part of a message of several requests (agents.requests) counts as one only when its best route leads every
    # route of another tool by this much: a fragment between two routes is no clear request. Set on the dev split.
    part_margin: float = DEFAULT_PART_MARGIN

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every content word of the route examples (with the pack's articles, what counts as known words)."""
        return frozenset(w for r in self.routes.values() for e in r.examples for w in content_words(e))

    def query(self, text: str, parts: tuple[str, ...] = ()) -> RouteQuery:
        """The routing query of ``text``, ranking its ``parts`` (the requests it may hold) in the same call."""
        ids = load_pack(self.pack).any_id
        examples = tuple((r.name, routing_text(e, ids)) for r in self.routes.values() for e in r.examples)
        return RouteQuery(
            text=routing_text(text, ids),
            examples=examples,
            k=self.k,
            lexical_weight=self.lexical_weight,
            parts=tuple(routing_text(p, ids) for p in parts),
        )


def _route(raw: Mapping[str, Any], version: str, tools: tuple[str, ...]) -> Route:
    tool = str(raw["tool"])
    say = str(raw.get("say") or "")
    if say and (tool != REPLY_ROUTE_TOOL or say not in SAY_KEYS):
        raise ValueError(f"{version}.routes.yaml: route {raw.get('name')!r}: say is one of {sorted(SAY_KEYS)}")
    if tool not in (REPLY_ROUTE_TOOL, ANSWER_ROUTE_TOOL) and tool not in tools:
        raise ValueError(f"{version}.routes.yaml: route {raw.get('name')!r} names unknown tool {tool!r}")
    then = raw.get("then")
    follow = None
    if then:
        if then["tool"] not in tools:
            raise ValueError(f"{version}.routes.yaml: follow-up tool {then['tool']!r} is unknown")
        follow = FollowUp(then["tool"], tuple(dict(then.get("when") or {}).items()), tuple(then.get("args_from") or ()))
    examples = tuple(str(e) for e in raw.get("examples") or ())
    if not examples:
        raise ValueError(f"{version}.routes.yaml: route {raw.get('name')!r} has no examples")
    return Route(str(raw["name"]), tool, tuple(dict(raw.get("args") or {}).items()), follow, examples, say)


@functools.lru_cache(maxsize=16)
def load_routes(version: str, pack: str = DEFAULT_PACK) -> RouteTable | None:
    """The pack's route table for prompt ``version``, or None when the pack routes no such version."""
    found = load_pack(pack)
    path = found.root / "routes" / f"{version}.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    routes = [_route(r, version, found.tool_names) for r in data.get("routes") or ()]
    names = [r.name for r in routes]
    if len(set(names)) != len(names):
        raise ValueError(f"{version}.routes.yaml: route names repeat")
    return RouteTable(
        version=version,
        k=int(data.get("k", 3)),
        routes={r.name: r for r in routes},
        lexical_weight=float(data.get("lexical_weight", 0.0)),
        pack=pack,
        min_score=float(data.get("min_score", 0.0)),
        max_foreign=float(data.get("max_foreign", 1.0)),
        part_margin=float(data.get("part_margin", DEFAULT_PART_MARGIN)),
    )
