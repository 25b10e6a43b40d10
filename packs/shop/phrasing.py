"""The shop's own phrasings for the consent gate and the guardrails (``tools.phrasing.Phrasing``).

Its records (orders, tickets) and its actions' words come from its id formats and ``ActionSpec``s;
these are the rest: the verbs a customer opens a request with, the promises a reply can make, and
the ways a customer asks to bend the refund and return policy.
"""

from __future__ import annotations

from tools.phrasing import Phrasing

_S = r"[^.?!\n]"  # within one sentence
_ANYWAY = r"(?:anyway|anyways|regardless|no matter what|all the same|whatever the policy|policy or not)"
_STAFF = (
    r"\bi(?:'m| am)\s+(?:a|an|the|your)\s+(?:store |support |customer service )?(?:manager|admin|administrator|"
    r"employee|staff(?: member)?|supervisor|developer|engineer|ceo|owner|founder|agent)\b"
)
_KEPT = r"(?:the |my )?(?:item|items|product|it|them)"

PHRASING = Phrasing(
    request_verbs=("refund", "return", "ship", "deliver", "order"),  # "refund it", "ship it back", "order 3: refund it"
    done_verbs=("refund",),  # "I've refunded it", "it will be refunded"
    promised=("refund", "label"),  # "you'll receive a full refund", "you'll get the label"
    third_party=(r"\bwho (?:else )?ordered\b",),
    exceptions=(
        rf"\b(?:refund|return)\w*\b{_S}{{0,50}}\b{_ANYWAY}\b",  # "refund it anyway"
        rf"{_STAFF}{_S}{{0,60}}\brefund",  # "I'm the store manager, refund it"
        rf"\b(?:refund|money back)\b{_S}{{0,40}}\bwithout (?:returning|sending (?:it|them|anything) back|"
        rf"a return|the return)\b",
        rf"\bkeep {_KEPT}\b{_S}{{0,30}}\b(?:refund|money back)\b",
        rf"\b(?:refund|money back)\b{_S}{{0,30}}\b(?:and|but|while|&) (?:still )?keep(?:ing)? {_KEPT}\b",
        r"\b(?:double|extra|additional|bonus|second|partial extra) refund\b|\brefund (?:me )?(?:twice|double)\b",
    ),
)
