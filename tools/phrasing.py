"""How a business's customers and replies word its actions, where its ``ActionSpec``s and ids do not say it.

The consent gate and the guardrails read English by general rules (imperatives, third parties, promises,
requests to bend a policy) and take every noun of the business from the pack: the records from its id
kinds, the actions from their terms and claims. What is left is a handful of phrasings that only one
business uses, declared here by its pack (``Pack.phrasing``) and added to the core's own rules:

- ``request_verbs``: verbs that, opening a clause, ask for one of the pack's actions ("refund it",
  "order a new SIM"); the core knows the generic ones (cancel, open, change, ...).
- ``done_verbs``: verbs of its actions a reply commits with ("refund": "I've refunded it", "it will be
  refunded"); the core adds the past participle.
- ``promised``: what a reply may say the customer will receive ("you'll get a refund", "... a label").
- ``third_party``: regexes (over the case-folded, normalised message) that ask about another customer
  in the pack's own terms ("who else ordered this?").
- ``exceptions``: regexes that ask to bend the pack's own policy ("refund without returning it",
  "waive the early-termination fee").
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Phrasing:
    request_verbs: tuple[str, ...] = ()
    done_verbs: tuple[str, ...] = ()
    promised: tuple[str, ...] = ()
    third_party: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for word in (*self.request_verbs, *self.done_verbs, *self.promised):
            if not re.fullmatch(r"[a-z][a-z' -]*", word):
                raise ValueError(f"phrasing: {word!r} is not a lower-case word or phrase")
        for pattern in (*self.third_party, *self.exceptions):
            re.compile(pattern)  # a malformed pattern fails when the pack loads, not on a customer's turn


def participle(verb: str) -> str:
    """The regular past participle ("refund" -> "refunded", "close" -> "closed")."""
    return verb + ("d" if verb.endswith("e") else "ed")
