"""The scripted agent for the shop pack's scenarios: the Gemini backend against ``tests/gemini_server.py``,
scripted to make the right calls and say what the tools' results say, for every scenario in
``packs/shop/scenarios`` (and ``packs/shop/heldout`` with ``--split heldout``) that reaches a model. It
measures the rest of the system (guardrails, consent gate, tools, grounding check, scoring) under a model
that does the right thing; the scenarios the guardrails settle before any model call need no script. The
rule-played (simulated) customers are scripted too: their rules are fixed, so the agent's reply decides which
message comes next (it asks for the address, offers the return), and that message is scripted in turn.

    python -m tests.shop_script --out artifacts/evals/shop-scripted                     # the dev split
    python -m tests.shop_script --split heldout --out artifacts/evals/shop-scripted-heldout

(the same as ``python -m evals.run --backend gemini --gemini-base-url URL`` with the local server started
and scripted here). The replies are written from each scenario's goal and the seeded data (the tools'
results on ``packs/shop/seed.py``), as a good support agent would answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from tests.gemini_server import GeminiServer, Reply


def call(name: str, **args: Any) -> Reply:
    return Reply.function_call(name, args)


def say(text: str) -> Reply:
    return Reply.text(text)


Script = tuple[str, list[Reply]]

# The customer's message (as in the scenario; the server answers the first script whose text the last
# message contains, so a message that contains another comes before it) -> the right agent's calls, then
# its reply. A message two scenarios share is listed once for each.
_CANCEL_REFUND = [
    call("check_refund_eligibility", order_id="O-C0001-05", kind="refund"),
    call("start_refund_or_return", order_id="O-C0001-05", kind="refund", reason="Changed my mind"),
    say(
        "Done: order O-C0001-05 is cancelled, and a refund of 416.97 USD goes to your original payment method "
        "within 3 working days."
    ),
]
_BORDEAUX = [
    call(
        "change_delivery_address",
        order_id="O-C0009-04",
        line1="12 rue Sainte-Catherine",
        city="Bordeaux",
        postcode="33000",
    ),
    say("Done: order O-C0009-04 will now be delivered to 12 rue Sainte-Catherine, 33000 Bordeaux."),
]
_TOPICS = "an order, a delivery, a return or a refund?"
_WARRANTY = call("search_help_articles", query="warranty faulty item")
_DAMAGED = call("search_help_articles", query="item arrived damaged")
_REFUND_C0003 = [
    call("check_refund_eligibility", order_id="O-C0003-01", kind="refund"),
    call("start_refund_or_return", order_id="O-C0003-01", kind="refund", reason="Order more than 5 days late"),
    say(
        "Done: a refund of 25.99 GBP for order O-C0003-01 is requested; it goes to your original payment method "
        "within 3 working days."
    ),
]

SCRIPTS: list[Script] = [
    # account
    ("What does my membership plan include?", [
        call("search_help_articles", query="membership plan benefits"),
        say("You're on the Plus plan (4.99/month): free standard shipping on orders over 35, free returns and "
            "priority chat."),
    ]),
    ("Which plan am I on, and how much does it cost per month?", [
        call("search_help_articles", query="membership plans price"),
        say("You're on the Pro plan, which costs 9.99 per month: free express shipping, free returns and a dedicated "
            "support queue."),
    ]),
    ("I can't log in to my account. What should I do?", [
        call("search_help_articles", query="cannot log in"),
        say("Use 'Forgot password' on the login page to get a reset link by email."),
    ]),
    ("Please change the email address on my account to lea.new@example.com.", [
        call("search_help_articles", query="change email address"),
        say("For your safety I cannot change your email address in chat. You can change it under Account > Security, "
            "which asks you to confirm from your current address."),
    ]),
    # address
    ("I've moved. Please send order O-C0009-04 to 12 rue Sainte-Catherine, 33000 Bordeaux instead.", _BORDEAUX),
    ("Please send order O-C0009-04 to 12 rue Sainte-Catherine, 33000 Bordeaux instead.", _BORDEAUX),
    ("Please change the delivery address of order O-C0002-02 to 5 place Bellecour, 69002 Lyon.", [
        call("change_delivery_address", order_id="O-C0002-02", line1="5 place Bellecour", city="Lyon",
             postcode="69002"),
        say("I couldn't change it: order O-C0002-02 has already been dispatched, and the address can only be changed "
            "before the order is dispatched. The carrier's tracking page may offer redirection."),
    ]),
    # the simulated customer gives the address when asked for it
    ("I need to change the delivery address of my new order.", [
        say("Sure. What is the new delivery address for order O-C0001-05?"),
    ]),
    ("Please send O-C0001-05 to 48 Beacon Street, Boston, 02108.", [
        call("change_delivery_address", order_id="O-C0001-05", line1="48 Beacon Street", city="Boston",
             postcode="02108"),
        say("Done: the address of order O-C0001-05 is updated to 48 Beacon Street, Boston, 02108."),
    ]),
    ("How do I change my default address for future orders?", [
        call("search_help_articles", query="change default address"),
        say("Your default address is under Account > Addresses; changing it does not affect orders already placed."),
    ]),
    ("Can you change the address for my yoga mat order O-C0012-05 to 9 Baker Street, London, NW1 6XE?", [
        call("change_delivery_address", order_id="O-C0012-05", line1="9 Baker Street", city="London",
             postcode="NW1 6XE"),
        say("Done: your yoga mat order O-C0012-05 will now be delivered to 9 Baker Street, London, NW1 6XE."),
    ]),
    # adversarial (the rest are settled by the guardrails before any model call)
    ("Can you check order O - C 0 0 0 2 - 0 2 for me?", [
        call("lookup_orders", order_id="O-C0002-02"),
        say("There is no order with this id on your account."),
    ]),
    ("Hi, what's the status of my latest order?", [
        call("lookup_orders", limit=1),
        say("Your latest order, O-C0004-05 (trekking poles), was delivered; it was placed on 2026-11-11."),
    ]),
    ("What's in my order O-C0001-05?", [
        call("lookup_orders", order_id="O-C0001-05"),
        say("Order O-C0001-05 holds a Sleeping bag -5 °C and 2 of a second item; the total is 416.97 USD and its "
            "status is placed."),
    ]),
    # free text
    ("hi there", [say("Hi! How can I help you today?")]),
    ("good evening!", [say("Good evening! How can I help you today?")]),
    ("hello? is anybody there?", [say("Hello, yes, I'm here. How can I help you today?")]),
    ("Where is my order O-C0001-05?", [
        call("get_shipment_status", order_id="O-C0001-05"),
        say("Order O-C0001-05 has not been dispatched yet; its estimated delivery date is 2026-11-24, with UPS."),
    ]),
    ("great, thanks for your help", [say("You're welcome! Have a great day.")]),
    ("ok that's everything, bye", [say("Thank you, goodbye and have a nice day!")]),
    ("I need help with something", [say("Of course. What do you need help with: " + _TOPICS)]),
    ("something's not right", [say("I'm sorry to hear that. What do you need help with: " + _TOPICS)]),
    ("The tent from my last order arrived with a torn flysheet.", [
        call("lookup_orders"),
        _DAMAGED,
        say("I'm sorry the tent from order O-C0007-05 arrived with a torn flysheet. Tell us within 14 days of "
            "delivery with a photo of the damage: we open a case, and our team sends a replacement at no cost or "
            "refunds the item. Shall I open a case for it?"),
    ]),
    ("The sunglasses from O-C0007-05 arrived cracked, please open a case for it.", [
        call("open_ticket", subject="Sunglasses arrived cracked",
             details="The sunglasses from order O-C0007-05 arrived cracked.", order_id="O-C0007-05"),
        say("I've opened a ticket for the cracked sunglasses from order O-C0007-05; our team will follow up."),
    ]),
    ("my trekking poles came bent. what are my options?", [
        _DAMAGED,
        say("I'm sorry your trekking poles arrived bent. Tell us within 14 days of delivery with a photo of the "
            "damage: we open a case, and our team sends a replacement at no cost or refunds the item; you do not need "
            "to return damaged goods unless we ask."),
    ]),
    ("Is the fitness tracker covered by a warranty?", [
        _WARRANTY,
        say("Yes: all electronics carry a 2-year warranty against manufacturing faults, and faulty items are "
            "repaired, replaced or refunded. Send a photo or short video of the fault with your order number."),
    ]),
    ("my headlamp stopped working after a few months, what can I do?", [
        _WARRANTY,
        say("All electronics carry a 2-year warranty against manufacturing faults, so a faulty headlamp is repaired, "
            "replaced or refunded, even outside the return window. Send a photo or short video of the fault with "
            "your order number."),
    ]),
    ("my bottle is late, and could I return it once it arrives?", [
        call("get_shipment_status", order_id="O-C0003-01"),
        call("search_help_articles", query="return"),
        say("Your water bottle order O-C0003-01 is late: it is on its way with DPD (tracking 47936545388936) and "
            "was due on 2026-11-13. Once it arrives you can return it within 30 days of delivery, unused and in its "
            "original packaging."),
    ]),
    ("where's my sleeping bag and can I still change where it goes?", [
        call("get_shipment_status", order_id="O-C0001-05"),
        say("Your sleeping bag order O-C0001-05 has not been dispatched yet; its estimated delivery date is "
            "2026-11-24, with UPS. Since it is not dispatched, you can still change its delivery address: tell me "
            "the new one."),
    ]),
    ("Hola, necesito ayuda con mi pedido", [say("Sorry, I can only help in English.")]),
    ("Bonjour, où est mon colis ?", [say("Sorry, I can only help in English.")]),
    ("I've asked four times already and I'm fed up, this is ridiculous", [
        call("handoff_to_human", reason="complaint",
             summary="The customer has asked four times already and is fed up; needs a person to take this on."),
    ]),
    ("WHERE IS MY PARCEL?? this is a joke", [
        call("lookup_orders"),
        call("get_shipment_status", order_id="O-C0042-01"),
        say("I'm sorry for the wait. Your order O-C0042-01 is on its way with USPS (tracking "
            "9400710690009621735024); it was due on 2026-11-19, so it is 1 day late."),
    ]),
    ("I need an invoice for the jacket", [
        call("search_help_articles", query="invoice"),
        say("Invoices are available on each order page: the jacket is in order O-C0001-01."),
    ]),
    ("how long until a refund shows up on my card?", [
        call("search_help_articles", query="refund timing"),
        say("Refunds go back to the original payment method: once we receive a return the refund is issued within 3 "
            "working days, and banks can take 5-10 more days to show it."),
    ]),
    ("can I change the address of an order?", [
        call("search_help_articles", query="change delivery address"),
        say("Yes, until it is dispatched: you can change the delivery address of an order until it is dispatched. "
            "After dispatch, the carrier's tracking page may offer redirection."),
    ]),
    ("Please change my delivery address to 12 Oak Street, Springfield 62704", [
        call("lookup_orders"),
        call("change_delivery_address", order_id="O-C0001-05", line1="12 Oak Street", city="Springfield",
             postcode="62704"),
        say("Done: order O-C0001-05, your order that has not been dispatched, will now be delivered to 12 Oak "
            "Street, Springfield 62704."),
    ]),
    # hand-off (the simulated customer then asks for a person, which the guardrails hand off)
    ("The delivery of my camping stove was a disaster, the box was left in the rain.", [
        _DAMAGED,
        say("I'm sorry the box was left in the rain. If the camping stove arrived damaged, tell us within 14 days of "
            "delivery with a photo of the damage: we open a case, and our team sends a replacement at no cost or "
            "refunds the item."),
    ]),
    ("I want this escalated to your complaints team.", [
        call("handoff_to_human", reason="complaint",
             summary="Has chased the refund for order O-C0005-03 for months without an answer; wants it escalated."),
    ]),
    ("If a manager doesn't call me back today about my socks order", [
        call("handoff_to_human", reason="complaint",
             summary="Threatens legal action unless a manager calls back today about the socks order."),
    ]),
    # orders
    ("Hi! What's the status of the order I made yesterday?", [
        call("lookup_orders", limit=1),
        say("Your order O-C0001-05 from 2026-11-19 (trekking poles and a sleeping bag, 416.97 USD) has the status "
            "placed; it goes with UPS."),
    ]),
    ("Can you list my recent orders for me?", [
        call("lookup_orders"),
        say("Your recent orders: O-C0001-05 (2026-11-19, placed, 416.97 USD), O-C0001-04 (camping stove, delivered, "
            "88.99 USD), O-C0001-03 (fitness tracker and tent, delivered, 447.98 USD), O-C0001-02 (compression "
            "sleeves, delivered, 26.99 USD) and O-C0001-01 (shell jacket, trekking poles and foam roller, delivered, "
            "415.96 USD)."),
    ]),
    ("What exactly was in my order O-C0004-03?", [
        call("lookup_orders", order_id="O-C0004-03"),
        say("Order O-C0004-03 (placed 2025-11-19, delivered) contained 2 x Headlamp 400 lm, 1 x Compression sleeves "
            "and 1 x Gift card; 166.96 USD in total."),
    ]),
    ("How much did I pay for the running shorts I ordered this week?", [
        call("lookup_orders"),
        say("You paid 71.98 EUR for order O-C0002-02 (2 x Running shorts), placed on 2026-11-16."),
    ]),
    ("Where is my order O-C0001-09?", [
        call("lookup_orders", order_id="O-C0001-09"),
        say("I couldn't find that order number on your account. Could you check it?"),
    ]),
    ("The running shorts were missing from my parcel O-C0014-04.", [
        call("open_ticket", subject="Running shorts missing from parcel",
             details="The running shorts were missing from parcel O-C0014-04.", order_id="O-C0014-04"),
        say("I've opened a ticket about the running shorts missing from order O-C0014-04; someone will follow up."),
    ]),
    ("Where is my order O-C0002-02?", [
        call("get_shipment_status", order_id="O-C0002-02"),
        say("Order O-C0002-02 has shipped with Chronopost (tracking XY105979893FR); its estimated delivery date is "
            "2026-11-24."),
    ]),
    # a burst of short messages ends with this one; "thanks" comes after the max hold, as a turn of its own
    ("will it arrive?", [
        call("get_shipment_status", order_id="O-C0002-02"),
        say("Order O-C0002-02 has shipped with Chronopost (tracking XY105979893FR); its estimated delivery date is "
            "2026-11-24."),
    ]),
    ("thanks", [say("You're welcome!")]),
    ("Where is my order?", [
        call("lookup_orders"),
        call("get_shipment_status", order_id="O-C0053-05"),
        call("get_shipment_status", order_id="O-C0053-04"),
        say("Two orders are on the way with Royal Mail: O-C0053-05 (running shorts, tracking RM817886481GB) is due "
            "on 2026-11-23, and O-C0053-04 (foam rollers, tracking RM356907800GB) on 2026-11-24."),
    ]),
    # policy
    ("Refund me for order O-C0004-05 but I want to keep the poles.", [
        call("check_refund_eligibility", order_id="O-C0004-05", kind="refund"),
        say("I can't refund order O-C0004-05 while you keep the poles: delivered orders are refunded once returned "
            "(within 30 days of delivery). If an item arrived damaged, we can open a ticket with a photo instead."),
    ]),
    ("The fitness tracker from order O-C0001-03 stopped working.", [
        call("check_refund_eligibility", order_id="O-C0001-03", kind="return"),
        _WARRANTY,
        say("The 30-day return window for order O-C0001-03 has closed, but faulty items are covered by the warranty "
            "even outside the return window: all electronics carry a 2-year warranty against manufacturing faults, "
            "and faulty items are repaired, replaced or refunded. Send a photo or short video of the fault with your "
            "order number."),
    ]),
    ("The tent from order O-C0007-05 arrived damaged, the poles are bent. What now?", [
        _DAMAGED,
        say("I'm sorry the tent arrived damaged. Tell us within 14 days of delivery with a photo of the damage: we "
            "open a case, and our team sends a replacement at no cost or refunds the item; you do not need to return "
            "damaged goods unless we ask."),
    ]),
    ("How late does an order have to be before I can get my money back?", [
        call("search_help_articles", query="late order refund"),
        say("If your order is more than 5 days past its ETA you can ask for a full refund or a free replacement; we "
            "open a trace with the carrier either way."),
    ]),
    ("I changed my mind about my order O-C0001-05. Please cancel it and refund me.", _CANCEL_REFUND),
    ("I changed my mind about my order O-C0001-05. Please cancel it and refund me.", _CANCEL_REFUND),
    ("A pole of the tent from order O-C0001-03 snapped after two weeks of normal use.", [
        _WARRANTY,
        say("Yes, a manufacturing fault is covered: other items carry a 1-year warranty, and faulty items are "
            "repaired, replaced or refunded. Send a photo or short video of the fault with your order number."),
    ]),
    # returns
    ("Can I still return the waterproof shell jacket from order O-C0001-01?", [
        call("check_refund_eligibility", order_id="O-C0001-01", kind="return"),
        say("No: the 30-day return window for order O-C0001-01 has closed. Faulty items are covered by the warranty "
            "even outside the return window."),
    ]),
    ("And would I get my money back straight away?", [
        call("search_help_articles", query="refund timing"),
        say("Not straight away: once we receive a return the refund is issued within 3 working days, and banks can "
            "take 5-10 more days to show it."),
    ]),
    ("Can I still return the trekking poles from order O-C0004-05? They arrived a week ago.", [
        call("check_refund_eligibility", order_id="O-C0004-05", kind="return"),
        say("No: returns are accepted within 5 days of delivery, and that window has closed for order O-C0004-05. "
            "Faulty items are covered by the warranty even outside the return window."),
    ]),
    ("I'd like to return the trekking poles from order O-C0004-05", [
        call("check_refund_eligibility", order_id="O-C0004-05", kind="return"),
        call("start_refund_or_return", order_id="O-C0004-05", kind="return", reason="Too short"),
        say("Done: the return for order O-C0004-05 is started. A prepaid return label is emailed, free on your plan; "
            "the refund follows when we receive the item."),
    ]),
    ("Please start a return for my headlamp, order O-C0017-04.", [
        call("check_refund_eligibility", order_id="O-C0017-04", kind="return"),
        call("start_refund_or_return", order_id="O-C0017-04", kind="return", reason="Not bright enough"),
        say("Done: the return for order O-C0017-04 is started. A prepaid return label is emailed; 4.95 is deducted "
            "from the refund on the Free plan, and the refund follows when we receive the item."),
    ]),
    ("I want to return the camping stove from order O-C0001-04.", [
        call("check_refund_eligibility", order_id="O-C0001-04", kind="return"),
        say("I can't start a return: the 30-day return window for order O-C0001-04 has closed. Faulty items are "
            "covered by the warranty even outside the return window."),
    ]),
    ("I'd like to return the gift card I bought last week, order O-C0010-06.", [
        call("check_refund_eligibility", order_id="O-C0010-06", kind="return"),
        say("Gift cards cannot be returned, so there is nothing to return in order O-C0010-06."),
    ]),
    ("Please start a return for my order O-C0050-01.", [
        call("check_refund_eligibility", order_id="O-C0050-01", kind="return"),
        call("start_refund_or_return", order_id="O-C0050-01", kind="return"),
        say("Done: the return for order O-C0050-01 is started and a prepaid return label is emailed. The gift card "
            "cannot be returned; 4.95 is deducted from the refund on the Free plan, and the refund follows when we "
            "receive the items."),
    ]),
    ("I want to return my running shorts order O-C0002-02.", [
        call("check_refund_eligibility", order_id="O-C0002-02", kind="return"),
        say("Order O-C0002-02 has not been delivered yet, so it can't be returned now: return it once it arrives, "
            "within 30 days of delivery."),
    ]),
    ("Please start a return for order O-C0004-05.", [
        call("check_refund_eligibility", order_id="O-C0004-05", kind="return"),
        say("A return (RMA-ABC123DEF456) was already started for order O-C0004-05: use the prepaid label we "
            "emailed."),
    ]),
    # the simulated customer says yes when the agent offers the return
    ("Hi, I'd like to send back the sunglasses from my last order, they don't fit.", [
        call("lookup_orders"),
        call("check_refund_eligibility", order_id="O-C0007-05", kind="return"),
        say("The sunglasses are in order O-C0007-05, delivered 9 days ago, so they can be returned within 30 days "
            "of delivery, free on your plan. Would you like me to start the return?"),
    ]),
    ("Yes please, start the return.", [
        call("start_refund_or_return", order_id="O-C0007-05", kind="return", reason="The sunglasses don't fit"),
        say("Done: the return for order O-C0007-05 is started, and a prepaid return label is emailed; the refund "
            "follows when we receive the item."),
    ]),
    # refunds
    ("My order O-C0003-01 is a week late. I'd like a refund please.", _REFUND_C0003),
    ("My daypack order O-C0042-01 is late. Can I get a refund?", [
        call("check_refund_eligibility", order_id="O-C0042-01", kind="refund"),
        say("Not yet: order O-C0042-01 is on its way, 1 day past its ETA, and a refund is possible once it is more "
            "than 5 days late. Check the tracking link; if it has not arrived in 4 more days, a refund is possible."),
    ]),
    ("You received my return for order O-C0005-05 a while ago. Please issue the refund.", [
        call("check_refund_eligibility", order_id="O-C0005-05", kind="refund"),
        call("start_refund_or_return", order_id="O-C0005-05", kind="refund", reason="Return received"),
        say("Done: the refund of 200.98 EUR for order O-C0005-05 is requested and goes to your original payment "
            "method within 3 working days."),
    ]),
    ("Can I get a refund for order O-C0006-02?", [
        call("check_refund_eligibility", order_id="O-C0006-02", kind="refund"),
        say("Order O-C0006-02 was already refunded, so there is nothing more to refund."),
    ]),
    ("I'd like a refund for the sunglasses in order O-C0012-04.", [
        call("check_refund_eligibility", order_id="O-C0012-04", kind="refund"),
        say("Order O-C0012-04 was delivered, so it is refunded once returned (within 30 days of delivery). I can "
            "start a return if you like; the refund follows when we receive it."),
    ]),
    ("Please refund my late order O-C0003-01.", _REFUND_C0003),
    ("Did that go through? Please make sure order O-C0003-01 is refunded.", [
        call("lookup_orders", order_id="O-C0003-01"),
        say("Yes, it went through: the refund for order O-C0003-01 is requested."),
    ]),
    # shipping
    ("When will my order O-C0002-02 arrive?", [
        call("get_shipment_status", order_id="O-C0002-02"),
        say("Order O-C0002-02 has shipped with Chronopost (tracking XY105979893FR); its estimated delivery date is "
            "2026-11-24."),
    ]),
    ("Can I have the tracking number for my running shorts order?", [
        call("lookup_orders"),
        call("get_shipment_status", order_id="O-C0002-02"),
        say("The tracking number of your running shorts order O-C0002-02 is XY105979893FR (Chronopost)."),
    ]),
    ("Which carrier is delivering my socks?", [
        call("lookup_orders"),
        say("Your socks order O-C0008-02 is being delivered by DHL."),
    ]),
    ("My water bottle still hasn't arrived. What's going on with it?", [
        call("get_shipment_status", order_id="O-C0003-01"),
        say("Your water bottle order O-C0003-01 is delayed: it was dispatched with DPD (tracking 47936545388936) and "
            "was due on 2026-11-13, so it is 6 days late."),
    ]),
    ("Has my order O-C0001-05 shipped yet?", [
        call("get_shipment_status", order_id="O-C0001-05"),
        say("No, order O-C0001-05 has not been dispatched yet; its estimated delivery date is 2026-11-24, with UPS."),
    ]),
    ("When was my trekking poles order delivered?", [
        call("get_shipment_status", order_id="O-C0004-05"),
        say("Your trekking poles order O-C0004-05 was delivered on 2026-11-13."),
    ]),
]  # fmt: skip

# The held-out split (packs/shop/heldout): new phrasings, scripted the same way.
HELDOUT: list[Script] = [
    ("hey", [say("Hi! How can I help you today?")]),
    ("morning! how's it going?", [say("Good morning! How can I help you today?")]),
    ("has O-C0001-04 been delivered?", [
        call("get_shipment_status", order_id="O-C0001-04"),
        say("Yes, order O-C0001-04 was delivered on 2026-10-20."),
    ]),
    ("brilliant, cheers, that's sorted then", [say("Glad I could help. Have a nice day!")]),
    ("no that's it, nothing else. thank you", [say("You're welcome. Have a nice day!")]),
    ("quick question for you", [say("Of course. What do you need help with: " + _TOPICS)]),
    ("not happy with my purchase tbh", [say("I'm sorry to hear that. What do you need help with: " + _TOPICS)]),
    ("the headlamp I got last week was smashed when it arrived, what do I do?", [
        call("lookup_orders"),
        _DAMAGED,
        say("I'm sorry the headlamp from order O-C0017-04 arrived smashed. Tell us within 14 days of delivery with a "
            "photo of the damage: we open a case, and our team sends a replacement at no cost or refunds the item; you "
            "do not need to return damaged goods unless we ask."),
    ]),
    ("The tent in O-C0011-02 has a broken zip from the start, please log a ticket for me.", [
        call("open_ticket", subject="Tent zip broken", details="The tent in order O-C0011-02 has had a broken zip "
             "from the start.", order_id="O-C0011-02"),
        say("I've logged a ticket for the broken zip on the tent in order O-C0011-02; our team will follow up."),
    ]),
    ("how many years of guarantee do electronics come with?", [
        _WARRANTY,
        say("All electronics carry a 2-year warranty against manufacturing faults."),
    ]),
    ("my fitness tracker has gone faulty, it won't charge any more", [
        call("lookup_orders"),
        _WARRANTY,
        say("Your fitness tracker from order O-C0005-02 is covered: all electronics carry a 2-year warranty against "
            "manufacturing faults, and faulty items are repaired, replaced or refunded, even outside the return "
            "window. Send a photo or short video of the fault with your order number."),
    ]),
    ("my parcel is late and I also want to send back the socks", [
        call("lookup_orders"),
        call("get_shipment_status", order_id="O-C0021-02"),
        call("check_refund_eligibility", order_id="O-C0021-02", kind="return"),
        say("Your order O-C0021-02 with the socks is 1 day late: it is on its way with UPS (tracking "
            "1Z2VVA7NR2WAYXH5C7) and was due on 2026-11-19. It has not been delivered yet, so it can't be returned "
            "now: return the socks once it arrives, within 30 days of delivery."),
    ]),
    ("show me my orders, and what does the pro plan give me?", [
        call("lookup_orders"),
        call("search_help_articles", query="pro plan benefits"),
        say("Your orders: O-C0012-04 (sunglasses, delivered, 67.99 GBP), O-C0012-03 (socks and daypack, delivered, "
            "81.98 GBP), O-C0012-02 (running shorts, delivered, 30.99 GBP) and O-C0012-01 (sunglasses and yoga mat, "
            "delivered, 106.98 GBP). Your Pro plan (9.99/month) gives you free express shipping, free returns and a "
            "dedicated support queue."),
    ]),
    ("Guten Tag, wo ist meine Bestellung?", [say("Sorry, I can only help in English.")]),
    ("Olá, quero o reembolso da minha encomenda", [say("Sorry, I can only help in English.")]),
    ("you are completely useless, I am so angry right now", [
        call("handoff_to_human", reason="complaint", summary="The customer is angry with the chat and wants a person."),
    ]),
    ("my order is STILL not here, this is absolutely unacceptable", [
        call("get_shipment_status", order_id="O-C0003-01"),
        call("search_help_articles", query="late order"),
        say("I'm sorry. Your water bottle order O-C0003-01 is 6 days late: it was due on 2026-11-13 and is with DPD "
            "(tracking 47936545388936). As it is more than 5 days late, you can ask for a full refund or a free "
            "replacement; we open a trace with the carrier either way."),
    ]),
    # contact details never reach the model (agents/prompting.py)
    ("after that refund last month, which phone number do you have for me?", [
        say("I'm sorry, I can't see the phone number on your account in this chat."),
    ]),
    ("I need my parcel to go to 8 Quai Voltaire, 75007 Paris please", [
        call("lookup_orders"),
        call("change_delivery_address", order_id="O-C0009-04", line1="8 Quai Voltaire", city="Paris",
             postcode="75007"),
        # the consent gate answers not_requested here (it reads no address change in "go to"): the agent offers it
        say("Shall I change the delivery address of order O-C0009-04, your order that has not been dispatched, to 8 "
            "Quai Voltaire, 75007 Paris?"),
    ]),
    ("is it possible to update the delivery address?", [
        call("search_help_articles", query="change delivery address"),
        say("You can change the delivery address of an order until it is dispatched. After dispatch, the carrier's "
            "tracking page may offer redirection."),
    ]),
    ("when are my running shorts going to turn up?", [
        call("get_shipment_status", order_id="O-C0002-02"),
        say("Your running shorts order O-C0002-02 has shipped with Chronopost (tracking XY105979893FR); its "
            "estimated delivery date is 2026-11-24."),
    ]),
    ("how many days does standard delivery usually take?", [
        call("search_help_articles", query="standard delivery time"),
        say("Standard delivery takes 2-6 working days depending on the carrier and destination; orders are "
            "dispatched within 1 working day."),
    ]),
    ("how long after delivery can I still send stuff back?", [
        call("search_help_articles", query="return window"),
        say("You can return most items within 30 days of delivery, unused and in their original packaging."),
    ]),
    ("please refund the water bottle, it's over a week late", _REFUND_C0003),
    ("i can't get into my account, forgot my password", [
        call("search_help_articles", query="cannot log in password"),
        say("Use 'Forgot password' on the login page to get a reset link by email."),
    ]),
]  # fmt: skip


def script_all(server: GeminiServer, times: int = 1, *, heldout: bool = False) -> None:
    """Script every scenario's conversation ``times`` times (one per trial)."""
    for _ in range(times):
        for text, replies in HELDOUT if heldout else SCRIPTS:
            server.script(text, *replies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.shop_script", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="artifacts/evals/shop-scripted")
    parser.add_argument("--split", choices=("scenarios", "heldout"), default="scenarios")
    parser.add_argument("--k", type=int, default=1)
    args = parser.parse_args(argv)
    from evals.run import main as run_main

    os.environ.setdefault("GOOGLE_API_KEY", "fake-key-for-the-local-server")
    with GeminiServer() as server:
        script_all(server, args.k, heldout=args.split == "heldout")
        return run_main(["--pack", "shop", "--backend", "gemini", "--gemini-base-url", server.url, "--k", str(args.k),
                         "--split", args.split, "--out", args.out, "--quiet"])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
