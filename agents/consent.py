"""Did the customer ask for this action? The gate in front of every tool that changes data.

A model (or a router) may pick a data-changing tool for a message that only
*mentions* the action: "my email changed, can you read me back my phone number"
near an offer to change the address, "I need a copy of my invoice" near a ticket.
Words that occur in a message are not a request. An action runs only when this
turn asks for it, in one of two ways:

- a clause that names the action (``ActionSpec.terms``) in request form: an
  imperative ("open a ticket", "add a data pack"), or a request marker before the
  action's words ("please ...", "I want ...", "can you ..."); not negated before
  them ("I don't want a ticket"), and not a question of whether it is possible
  ("can you check if I can get a new SIM" asks for a check, not the SIM);
- a short affirmative ("yes please", "go ahead") right after the agent offered
  exactly this action ("Would you like me to open a ticket?").

A request made for someone else ("in the name of ...", "on behalf of ...",
"their account") is refused: tools act only on the session customer's own
account, and an action on it that another person asked for is not the customer's.

The rules are about how requests are phrased, in English; which words name an
action is the action's own declaration, and the pack adds its own request verbs
and the records its customers own (``Pack.phrasing``, ``Pack.record_nouns``).
Fails closed: anything it cannot read as a request is not one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from tools.actions import ActionSpec
from tools.packs import Pack, load_pack


class Consent(StrEnum):
    REQUESTED = "requested"
    NOT_REQUESTED = "not_requested"  # mentioned, asked about, negated, or not mentioned at all
    THIRD_PARTY = "third_party"  # asked for, but for another person


_CLAUSE = re.compile(r"[.;!?\n]+|,|\bbut\b|\bthen\b|\balso\b|\band\b")
_MARKERS = re.compile(
    r"\b(?:please|pls|plz|kindly|i want|i wanna|i'd like|i would like|i'd want|i wish to|i need|we need|we want|"
    r"i'd love|can you|could you|would you|will you|can u|could u|go ahead|let's|let us|i'm asking|i am asking|"
    r"i demand|i request|i'm requesting)\b"
)
# A clause that starts with one of these verbs (after a filler) is an imperative; a pack adds its own
# (``Phrasing.request_verbs``).
_FILLERS = r"^(?:(?:ok|okay|so|yes|yeah|right|now|just|then|and|please|pls|hi|hello)\s+)*"
_VERBS = (
    "cancel|start|process|open|raise|file|log|change|update|send|arrange|issue|make|"
    "put|report|correct|set|book|submit|create|initiate|begin|reimburse|give|get|add|replace|close|swap|"
    "switch|activate|top|buy|renew|upgrade|downgrade|block|freeze|terminate|sort"
)
_NEGATION = re.compile(
    r"\b(?:don't|dont|do not|didn't|did not|not|no|never|without|won't|wouldn't|shouldn't|rather not|no need to|"
    r"stop|haven't|hasn't|isn't|wasn't|aren't)\b"
)
# Asking whether something is possible, or how it works, is a question for a check or an article.
_INQUIRY = re.compile(
    r"\b(?:whether|if i can|if i could|if it's possible|if its possible|possible|eligible|eligibility|qualify|"
    r"allowed|able to|how do|how does|how can|how long|what is|what's|what are|when will|when can|policy|"
    r"check if|check whether|find out|tell me if|is there|are there|do you|does it|did you|did anyone)\b"
)
# Someone else's things; a pack adds the records its customers own (``Pack.record_nouns``: "their <records>").
_THINGS = "account|subscription|line|plan|address|card"
_THIRD_PARTY = (
    r"\b(?:on behalf of|in the name of|in (?:his|her|their) name|for someone else|someone else's|"
    r"(?:his|her|their) (?:{things})|"
    r"another (?:customer|person|person's|customer's)|other person's|"
    r"my (?:friend|wife|husband|partner|son|daughter|mother|father|mum|mom|dad|brother|sister|colleague|"
    r"neighbour|neighbor|boss|flatmate|roommate|girlfriend|boyfriend|cousin|aunt|uncle|grandmother|grandfather|"
    r"grandma|grandpa|client|tenant)'s)\b"
)
_AFFIRMATIVE = re.compile(
    r"^(?:yes|yeah|yep|yup|sure|ok|okay|please do|please|go ahead|do it|do that|sounds good|absolutely|"
    r"definitely|of course|alright|all right|correct|that's right|si|oui|ja)\b"
)
_OFFER = re.compile(r"\b(?:would you like me to|shall i|should i|do you want me to|want me to|can i)\b")
_MAX_AFFIRMATIVE_WORDS = 8


def _normal(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").replace("\u2018", "'").split())


@functools.lru_cache(maxsize=256)
def term_pattern(term: str) -> re.Pattern[str]:
    """A term's words in order, each inflected (s/es/ed/ing), with up to three other words between them."""
    words = [re.escape(w) for w in _normal(term).split()]
    gap = r"(?:\W+[\w'-]+){0,3}?\W+"
    return re.compile(r"\b" + gap.join(w + r"(?:s|es|ed|d|ing)?" for w in words) + r"\b")


@dataclass(frozen=True)
class _Rules:
    """The request rules with one pack's words in them (compiled once per pack)."""

    imperative: re.Pattern[str]
    third_party: re.Pattern[str]


@functools.lru_cache(maxsize=16)
def _rules(verbs: tuple[str, ...], records: tuple[str, ...]) -> _Rules:
    own_verbs = "".join(f"|{re.escape(v)}" for v in verbs)
    things = _THINGS + "".join(f"|{re.escape(r)}|{re.escape(r)}s" for r in records)
    return _Rules(
        re.compile(rf"{_FILLERS}(?:{_VERBS}{own_verbs})\b"),
        re.compile(_THIRD_PARTY.replace("{things}", things)),
    )


def _rules_of(pack: Pack) -> _Rules:
    return _rules(pack.phrasing.request_verbs, pack.record_nouns)


@dataclass(frozen=True)
class _Hit:
    clause: str
    start: int  # where the action's words begin in the clause


def _hits(text: str, action: ActionSpec) -> list[_Hit]:
    out = []
    for clause in (c.strip() for c in _CLAUSE.split(_normal(text))):
        if not clause:
            continue
        starts = [m.start() for t in action.terms for m in term_pattern(t).finditer(clause)]
        if starts:
            out.append(_Hit(clause, min(starts)))
    return out


def _asks(hit: _Hit, rules: _Rules) -> bool:
    before = hit.clause[: hit.start]
    if _NEGATION.search(before) or _INQUIRY.search(hit.clause):
        return False
    return bool(_MARKERS.search(hit.clause) or rules.imperative.match(hit.clause))


def _confirms_offer(text: str, action: ActionSpec, previous_agent_text: str) -> bool:
    said = _normal(text)
    if not _AFFIRMATIVE.match(said) or len(said.split()) > _MAX_AFFIRMATIVE_WORDS or _NEGATION.search(said):
        return False
    # The offer is the agent's last question: "... Would you like me to open a ticket?"
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", _normal(previous_agent_text)) if s]
    offer = sentences[-1] if sentences else ""
    return bool(_OFFER.search(offer)) and any(term_pattern(t).search(offer) for t in action.terms)


def judge(text: str, action: ActionSpec, previous_agent_text: str = "", pack: Pack | None = None) -> Consent:
    """Whether ``text`` (this turn's customer words) asks for ``action`` on the customer's own account.

    ``pack``: the business whose action it is (its request verbs and record nouns); default: the default pack.
    """
    if not action.consent:
        return Consent.REQUESTED
    rules = _rules_of(pack or load_pack())
    requested = any(_asks(h, rules) for h in _hits(text, action))
    if not (requested or _confirms_offer(text, action, previous_agent_text)):
        return Consent.NOT_REQUESTED
    if rules.third_party.search(_normal(text)):
        return Consent.THIRD_PARTY
    return Consent.REQUESTED
