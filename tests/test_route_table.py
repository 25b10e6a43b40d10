"""What routing sees of a message (``agents.route_table.routing_text``): the request, not its ids or its casing."""

from __future__ import annotations

import re

import pytest

from agents.route_table import routing_text

IDS = re.compile(r"\bX-\d+\b")


@pytest.mark.parametrize(
    ("typed", "seen"),
    [
        ("where is it?", "Where is it?"),  # chat typed without capitals reads as the examples are written
        ("Where is it?", "Where is it?"),
        ("WHERE IS IT??", "Where is it??"),  # shouting reads as the same request
        ("hi. can you help? thanks", "Hi. Can you help? Thanks"),
        ("about X-123,   it cost 45 pounds", "About it, it cost # pounds"),  # ids masked, numbers too
    ],
)
def test_routing_reads_the_request_not_its_casing_or_ids(typed: str, seen: str) -> None:
    assert routing_text(typed, IDS) == seen
