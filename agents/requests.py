"""Several requests in one message: where a message clearly holds more than one, and the state of answering them.

A customer often asks two things at once ("my parcel is late and I also want to send the boots back").
Routed as one text, the message lands on one route and the other request goes unanswered. ``split``
cuts a message at language-level clause boundaries (a second sentence or line, "; ", "also" and
"plus" opening a clause, "and" before a new subject, an auxiliary or a question word), so the router can
rank each part as well as the whole (``agents.router``). When two parts route confidently to different
tools, the constrained protocol runs each through its own route, with ``Requests`` recording where it
is: the parts, their routes, which one runs, where its tool results begin, and the replies so far.

Each part's chain reads only its own words (``focused``): its ids narrow its arguments, and the consent
gate asks whether this part requested the action (a part that only mentions one gets an offer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from agents.embedding_router import content_words
from contract.turn import EnrichedTurn

MAX_PARTS = 3  # a message cut into more pieces is a story, not a list of requests: routed whole
MIN_WORDS = 2  # a piece shorter than this ("hi", "thanks") is no request of its own: it joins its neighbour

# Words that open a new clause after "and" or a comma: a subject, an auxiliary or modal, a question word, "please".
_OPENER = (
    r"(?:i|i'm|im|i'd|i've|i'll|we|we'd|we're|can|could|would|will|is|are|do|does|did|has|have|"
    r"what|where|when|why|how|which|please|pls)"
)
_BOUNDARY = re.compile(
    r"\n+"  # separate messages of one turn, or lines
    r"|(?<=[.!?;])\s+"  # a second sentence, or a clause after a semicolon
    r"|,\s*(?:and\s+)?(?=(?:also|plus)\b)|\s+and\s+(?=(?:also|plus)\b)"  # ", also ...", "... and also ..."
    rf"|,?\s+(?:and|plus)\s+(?={_OPENER}\b)|,\s+(?={_OPENER}\b)"  # "... and I want ...", "..., could I ..."
    r"|,\s+and\s+(?=my\b)",  # "..., and my jacket came ripped"
    re.IGNORECASE,
)
_LEAD = re.compile(r"^(?:(?:and|also|plus)\b[\s,]*)+", re.IGNORECASE)  # the joining words a part starts with
# A clause these open ("if it's late, ...") is a condition of the next one, not a request of its own.
_CONDITION = re.compile(r"^(?:if|once|since|because|unless|although|though|in case|as soon as)\b", re.IGNORECASE)
# Words that name nothing to act on: with the stop words, a piece of only these ("what should I do?",
# "what now?", "did that go through?") asks about the piece before it.
_VAGUE = frozenset({"should", "shall", "must", "might", "may", "now", "go", "goes", "happen", "next", "did", "through"})
# A clause that opens by pointing back ("They arrived a week ago.") says more about the one before it.
_BACK = re.compile(r"^(?:it|it's|its|they|they're|them|that|that's|this|these|those|he|she)\b", re.IGNORECASE)


def _words(text: str) -> int:
    return len(re.findall(r"[^\W_]+", text))


def _vague(piece: str) -> bool:
    return not (content_words(piece) - _VAGUE)


def split(text: str) -> tuple[str, ...]:
    """The requests ``text`` clearly holds, in order, when there are two or more; () for one (or for a story).

    A piece too short to ask anything joins its neighbour, a condition joins the clause it conditions, and
    a piece that points back ("it", "they", "that") or names nothing ("what now?") joins the one before it.
    """
    pieces: list[str] = []
    carry = ""  # a piece waiting to join the next one
    for raw in _BOUNDARY.split(text.replace("\u2019", "'")):
        piece = _LEAD.sub("", raw.strip()).strip(" ,;")
        if not piece:
            continue
        piece = f"{carry} {piece}".strip() if carry else piece
        carry = ""
        if _CONDITION.match(piece) or (_words(piece) < MIN_WORDS and not pieces):
            carry = piece
        elif pieces and (_words(piece) < MIN_WORDS or _BACK.match(piece) or _vague(piece)):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    if carry:
        pieces[-1:] = [f"{pieces[-1]} {carry}"] if pieces else [carry]
    if len(pieces) < 2 or len(pieces) > MAX_PARTS:
        return ()
    return tuple(pieces)


def focused(enriched: EnrichedTurn, text: str) -> EnrichedTurn:
    """The turn as one of its requests' chains reads it: ``text`` as the customer's words.

    The messages (their ids, hence the turn's id and the action ids) stay; only their text is this part.
    """
    turn = enriched.turn
    messages = tuple(replace(m, text=text if i == 0 else "") for i, m in enumerate(turn.messages))
    return replace(enriched, turn=replace(turn, messages=messages))


@dataclass(frozen=True)
class Requests:
    """The requests of one message being answered in turn (small and picklable: it rides in ``AgentState``)."""

    parts: tuple[str, ...]  # each request's words, in the message's order
    routes: tuple[str, ...]  # the route each part was routed to
    current: int = 0  # the part whose chain runs now
    first_result: int = 0  # how many tool results the turn had when the current part began
    replies: tuple[str, ...] = ()  # the replies of the parts answered so far

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.routes) or not self.parts:
            raise ValueError("one route per part, and at least one part")

    @property
    def part(self) -> str:
        return self.parts[self.current]

    @property
    def last(self) -> bool:
        return self.current >= len(self.parts) - 1

    def next(self, reply: str, first_result: int) -> Requests:
        """The next part's turn, keeping ``reply`` (the current part's) for the joined reply."""
        return replace(self, current=self.current + 1, first_result=first_result, replies=(*self.replies, reply))
