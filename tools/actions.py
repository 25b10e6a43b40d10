"""What each data-changing action is, as the customer would ask for it.

A tool that changes data runs only when the customer's own words ask for that
action (``agents.consent``). What counts as asking is declared here, per action,
as data: the words and phrases that name the action, and the sentence the agent
offers it with when the customer only mentioned it. Nothing else in the core
knows an action's words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionSpec:
    """One kind of data-changing action (``AgentState.actions`` records these names)."""

    name: str  # e.g. "refund"; the eval rows' action kind
    terms: tuple[str, ...]  # words or phrases that name the action in a request ("money back")
    offer: str  # what the agent can do, completing "I can ..." ("start a refund for an order")
    consent: bool = True  # False: always allowed when the model calls it (a hand-off to a person)
    # Words that, in a reply that commits to something, claim this action (the promise guardrail reads them:
    # a claim no tool call of the turn backs is an unbacked promise). Default: ``terms``.
    claims: tuple[str, ...] = ()

    @property
    def claim_words(self) -> tuple[str, ...]:
        return self.claims or self.terms

    def __post_init__(self) -> None:
        if self.consent and not self.terms:
            raise ValueError(f"action {self.name!r}: an action that needs the customer's request must name its terms")
