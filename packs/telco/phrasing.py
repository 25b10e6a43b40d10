"""The telco's own phrasings for the consent gate and the guardrails (``tools.phrasing.Phrasing``).

Its records (invoices) and its actions' words come from its id formats and ``ActionSpec``s; these are
the rest: "order a replacement SIM" opens a request, and asking for its contract's fees to go, or for
data for nothing, is asking to bend its policy.
"""

from __future__ import annotations

from tools.phrasing import Phrasing

_S = r"[^.?!\n]"  # within one sentence
_DATA = r"(?:\d+\s*gb(?: of)?\s+)?(?:data(?: packs?| add-?ons?)?|gb|top[- ]?ups?)"
_FOR_NOTHING = r"(?:for free|free of charge|at no (?:extra )?(?:cost|charge)|without (?:paying|charge|being charged))"

PHRASING = Phrasing(
    request_verbs=("order",),  # "order me a replacement SIM"
    exceptions=(
        # "waive the early termination fee", "drop the exit fee"
        rf"\b(?:waive|drop|scrap|skip|remove|cancel|forget|wipe)\b{_S}{{0,30}}\b(?:early[- ]termination|exit|"
        rf"leaving|cancellation|termination) (?:fees?|charges?)\b",
        # "let me leave my contract early without paying"
        rf"\b(?:leave|cancel|end|terminate|break|exit)\b{_S}{{0,40}}\b(?:contract|plan)\b{_S}{{0,40}}"
        rf"\b(?:without (?:paying|a fee|the fee|any fees?|charges?|being charged)|for free)\b",
        # "give me a free data pack", "add 10 GB for free"
        rf"\b(?:give|add|throw in|let me have|i want|i need|can i have|can i get)\b{_S}{{0,25}}"
        rf"\b(?:free|complimentary)\s+(?:extra\s+)?{_DATA}\b",
        rf"\b{_DATA}\b{_S}{{0,30}}\b{_FOR_NOTHING}\b",
    ),
)
