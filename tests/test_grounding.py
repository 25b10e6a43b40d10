"""The lexical grounding check (``agents.grounding``): what states nothing passes, what states something needs a source.

Most sentences are SmolLM2-135M's own (greedy, prompt version support_tools_v1, chat route, customer C0001),
measured for issue 24's streaming: the check used to read the stock closing "need further assistance, please
don't hesitate to ask" as a claim (three words no source has), while the same words elsewhere still are one.
"""

from __future__ import annotations

import pytest

from agents import grounding

# What a turn of the v1 chat route has: the prompt's rules, the account facts, the customer's message.
SOURCES = (
    "You are the customer support assistant of an online shop. Reply in 1 to 3 short, friendly sentences.\n"
    "Rules:\n- Use only the account facts below. Never make up orders, tracking numbers, dates or prices.\n"
    "- If you cannot help, say so and offer to connect the customer with a human agent.\n"
    "- Never ask for passwords or card details.\n"
    "Customer: Jonas Jones\nOrders (newest first):\n"
    "- O-C0001-05: placed | 2x Trekking poles (pair), Sleeping bag -5 °C | 416.97 USD | UPS, ETA 2026-11-24",
    "that's all, thanks",
)


@pytest.mark.parametrize(
    "sentence",
    [
        "You're welcome!",
        "I'm glad to help.",
        "If you have any more questions or need further assistance with your order please don't hesitate to ask.",
        "Thank you so much for asking about the rules.",
        "thank you for your kind words.",
        "I'm here to help with any questions or concerns you might have.",
        "I'll be glad to help in any way possible.",
    ],
)
def test_conversational_sentences_state_nothing(sentence: str) -> None:
    assert grounding.check(sentence, SOURCES).grounded, sentence


@pytest.mark.parametrize(
    "sentence",
    [
        # numbers no source gave
        "I'll be back in 1 minute to help you out again soon.",
        "You can return it within 30 days.",
        # facts, advice and policy lines the turn never had
        "Good luck on the next delivery of a new shipment from Jonas Jones.",
        "I'm glad you're enjoying your trip to the beach.",
        "You need a receipt to send it back.",  # "need" is advice here, not an offer of help
        "Returns require the original packaging and a receipt.",
        "There is no other way to get help with a late parcel than waiting seven days.",
    ],
)
def test_claims_without_a_source_stay_unsupported(sentence: str) -> None:
    verdict = grounding.check(sentence, SOURCES)
    assert not verdict.grounded and verdict.unsupported == (sentence,), sentence


def test_a_sourced_claim_passes_and_one_unsourced_sentence_fails_the_reply() -> None:
    sourced = "Your order O-C0001-05 with the trekking poles is placed and due on 2026-11-24."
    assert grounding.check(sourced, SOURCES).grounded
    verdict = grounding.check(f"Hello! {sourced} It ships by express courier tomorrow morning.", SOURCES)
    assert verdict.unsupported == ("It ships by express courier tomorrow morning.",)


def test_the_grounded_lead_is_the_sentences_before_the_first_unsupported_one() -> None:
    closing = "You're welcome! I'm glad to help. Good luck on the next delivery of a new shipment. Bye!"

    def lead(text: str) -> str:
        return grounding.grounded_lead(text, grounding.check(text, SOURCES))

    assert lead(closing) == "You're welcome! I'm glad to help."
    # A reply that opens with a claim keeps nothing; a grounded reply keeps everything.
    assert lead("You can return it within 30 days. Thanks!") == ""
    assert lead("You're welcome!") == "You're welcome!"
