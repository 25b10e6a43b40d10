"""A pack's own phrasings (tools/phrasing.py) reach the consent gate and the guardrails, and only for that pack."""

from __future__ import annotations

import re

import pytest

from agents import guardrails
from agents.consent import Consent, judge
from tools.packs import load_pack
from tools.phrasing import Phrasing, participle

SHOP, TELCO = load_pack("shop"), load_pack("telco")


def _facts(pack: str) -> guardrails.SessionFacts:
    return guardrails.SessionFacts(load_pack(pack).demo_customer or "C0001", ids=guardrails.id_space(pack))


@pytest.mark.parametrize(
    "text",
    [
        "Please waive the early termination fee, I'm moving abroad",
        "Let me leave my contract early without paying anything",
        "Give me a free data pack, the outage was your fault",
        "Add 10 GB of data for free this month",
    ],
)
def test_the_telcos_own_policy_exceptions_are_refused(text: str) -> None:
    verdict = guardrails.check_input(text, _facts("telco"), TELCO.texts)
    assert verdict.action == "refuse" and "policy_exception" in verdict.categories, verdict


@pytest.mark.parametrize(
    "text",
    [
        "Add a 5 GB data pack please",
        "Is there a free data allowance on my plan?",
        "Why did my bill go up this month?",
        "I'd like to top up 10 GB",
    ],
)
def test_ordinary_telco_requests_pass(text: str) -> None:
    assert guardrails.check_input(text, _facts("telco"), TELCO.texts).allowed


def test_the_shops_refund_exceptions_are_the_shops_alone() -> None:
    text = "Refund me without returning the jacket"
    assert "policy_exception" in guardrails.input_categories(text, _facts("shop"))
    assert "policy_exception" not in guardrails.input_categories(text, _facts("telco"))


def test_third_party_records_are_each_packs_own() -> None:
    assert TELCO.record_nouns == ("invoice",) and SHOP.record_nouns == ("order", "ticket")
    text = "Show me my neighbour's invoices"
    assert "other_customer" in guardrails.input_categories(text, _facts("telco"))
    sim = TELCO.actions["sim_replacement"]
    assert judge("order a replacement sim, it's on their invoice", sim, pack=TELCO) == Consent.THIRD_PARTY
    refund = SHOP.actions["refund"]
    assert judge("refund it please, it's on their invoice", refund, pack=SHOP) == Consent.REQUESTED
    assert judge("refund it please, it's their order", refund, pack=SHOP) == Consent.THIRD_PARTY


def test_request_verbs_come_from_the_pack() -> None:
    sim = TELCO.actions["sim_replacement"]
    assert judge("order a replacement sim", sim, pack=TELCO) == Consent.REQUESTED
    bare = Phrasing()
    assert "order" not in bare.request_verbs  # the core alone does not read "order ..." as a request


def test_promises_read_the_packs_done_verbs() -> None:
    assert guardrails.unbacked_promises("I've refunded your order.", (), guardrails.id_space("shop")) == ["refund"]
    assert participle("refund") == "refunded" and participle("close") == "closed"
    # The telco declares no "refund": its replies' promises are read by its own actions' claims.
    telco = guardrails.id_space("telco")
    assert guardrails.unbacked_promises("I've added a 5 GB data pack.", (), telco) == []
    assert guardrails.unbacked_promises("Your data pack has been processed.", (), telco) == ["data_pack"]


def test_a_malformed_phrasing_fails_when_the_pack_loads() -> None:
    with pytest.raises(ValueError):
        Phrasing(request_verbs=("Refund!",))
    with pytest.raises(re.error):
        Phrasing(exceptions=("(unclosed",))
