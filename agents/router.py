"""The router of a routed turn: which route of the pack's table (``agents.route_table``) the customer's words take.

Routing is a step of its own with its own question and answer, so it is a component the constrained
protocol calls, not a shape of request and response the loop has to recognise: the router builds the
routing request (``request``: a ``RouteQuery`` the backend answers by ranking the routes over the
model's own embeddings, ``agents.embedding_router``), reads the ranking back as a ``RouteDecision``
(the route, and whether its nearest example was near enough to act on), says which follow-up a
route declares after its tool's result (``follow_up``), and when a message reads as another language
that an English model's embeddings cannot route (``reads``).

A prompt version without a routes file has no router (``router_for`` gives None): the model chooses
the tool itself under the step protocol's constraint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents import conversation
from agents.model_io import ChatMessage, ModelRequest, ToolCall
from agents.route_table import FollowUp, Route, RouteTable, load_routes


class UnknownRoute(ValueError):
    """The backend ranked a label that is no route of the table."""


@dataclass(frozen=True)
class RouteDecision:
    """Where the router sends a turn: the best-ranked route, and whether it scored high enough to act on."""

    route: Route
    score: float
    confident: bool  # at or above the table's min_score; below it the agent asks what the customer needs


@dataclass(frozen=True)
class Router:
    table: RouteTable

    def reads(self, text: str, known: Iterable[str] = ()) -> bool:
        """False when too many of the words are unknown to the routes and ``known`` (the pack's articles' words)."""
        limit = self.table.max_foreign
        return limit >= 1 or conversation.foreign_share(text, self.table.vocabulary | frozenset(known)) < limit

    def request(self, text: str, parts: tuple[str, ...] = ()) -> ModelRequest:
        """The routing step: the backend ranks the routes for ``text`` (and its ``parts``) instead of generating."""
        query = self.table.query(text, parts)
        return ModelRequest(messages=(ChatMessage("user", text),), max_tokens=1, route=query)

    def decide(self, ranked: Sequence[tuple[str, float]]) -> RouteDecision:
        """The decision of the backend's ranking (best first); raises ``UnknownRoute`` for a label not in the table."""
        label, score = ranked[0]
        route = self.table.routes.get(label)
        if route is None:
            raise UnknownRoute(label)
        return RouteDecision(route, score, score >= self.table.min_score)

    def several(
        self,
        parts: Sequence[str],
        rankings: Sequence[Sequence[tuple[str, float]]],
        most: int,
        can_answer: Callable[[str, Route], bool] = lambda _part, _route: True,
    ) -> tuple[tuple[str, Route], ...]:
        """The requests to answer one by one: (part, route) for each part routed confidently to a route that answers
        it (``can_answer``: e.g. an article route only when an article matches the part).

        A part must route clearly: confident, and ahead of every other tool's routes by the table's
        ``part_margin`` (a statement such as "I changed my mind" sits between routes). Parts that land on the
        same call (the same tool and preset arguments) are one request, the first part's. Returns () unless
        two to ``most`` requests remain (or the backend ranked no parts): the message is then one request,
        routed whole.
        """
        if len(rankings) != len(parts):
            return ()
        chosen: dict[str, tuple[str, Route]] = {}
        for part, ranked in zip(parts, rankings, strict=True):
            decision = self.decide(ranked)
            if self._clear(decision, ranked) and decision.route.answers and can_answer(part, decision.route):
                call = json.dumps([decision.route.tool, dict(decision.route.args)], sort_keys=True, default=str)
                chosen.setdefault(call, (part, decision.route))
        return tuple(chosen.values()) if 2 <= len(chosen) <= most else ()

    def _clear(self, decision: RouteDecision, ranked: Sequence[tuple[str, float]]) -> bool:
        """Confident, and ahead of every route of another tool by the table's ``part_margin`` (one clear request)."""
        others = [
            s
            for label, s in ranked
            if label in self.table.routes and self.table.routes[label].tool != decision.route.tool
        ]
        return decision.confident and decision.score - max(others, default=float("-inf")) >= self.table.part_margin

    def follow_up(self, route_name: str, call: ToolCall, content: Mapping[str, Any]) -> FollowUp | None:
        """The follow-up route ``route_name`` declares after its own tool's result ``content``, if that result asks."""
        route = self.table.routes.get(route_name)
        follow = route.then if route is not None else None
        if follow is None or call.name != route.tool or not follow.applies(content):
            return None
        return follow


def router_for(version: str, pack: str) -> Router | None:
    """The router of prompt ``version`` for ``pack``, or None when the pack has no routes for it."""
    table = load_routes(version, pack)
    return Router(table) if table is not None else None
