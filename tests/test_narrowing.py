"""Narrowing a tool's arguments to what this turn's words allow (agents/narrowing.py): address fields, pure."""

from __future__ import annotations

from typing import Any

import pytest

from agents.narrowing import TurnFacts, narrow
from tools.packs import load_pack
from tools.toolbox import tool_declarations

PACK = load_pack("shop")
[ADDRESS] = tool_declarations(["change_delivery_address"], "shop")
SPEC = PACK.tools_by_name["change_delivery_address"]


def address(text: str) -> dict[str, Any] | None:
    params = narrow(ADDRESS, TurnFacts(text=text, formats=PACK.ids, any_id=PACK.any_id), SPEC, {"order_id": "X"})
    return None if params is None else {k: v for k, v in params["properties"].items() if k != "order_id"}


@pytest.mark.parametrize(
    ("text", "line1", "city", "postcode"),
    [
        ("change my delivery address to 12 Oak Street, Springfield 62704", "12 Oak Street", "Springfield", "62704"),
        ("send it to 9 Baker Street, London, NW1 6XE instead", "9 Baker Street", "London", "NW1 6XE"),
        ("Please send it to 48 Beacon Street, Boston, 02108.", "48 Beacon Street", "Boston", "02108"),
        ("to 12 rue Sainte-Catherine, 33000 Bordeaux please", "12 rue Sainte-Catherine", "Bordeaux", "33000"),
    ],
)
def test_address_fields_read_disjoint_parts_of_the_message(text: str, line1: str, city: str, postcode: str) -> None:
    # Each field alone has two readings ("Oak Street" could be a city, "Springfield 62704" a street); a span
    # settled for one field leaves the others, so the whole address is read without the model.
    assert address(text) == {"line1": {"const": line1}, "city": {"const": city}, "postcode": {"const": postcode}}


def test_an_address_that_reads_two_ways_is_left_to_the_model_among_its_own_spans() -> None:
    fields = address("ship it to Hauptstrasse 5, 10115 Berlin")
    assert fields is not None
    assert fields["line1"] == {"enum": ["Hauptstrasse 5", "10115 Berlin"]}
    spans = {"Hauptstrasse 5", "10115 Berlin", "Hauptstrasse", "Berlin", "5", "10115"}
    assert all(set(f.get("enum", [f.get("const")])) <= spans for f in fields.values())


def test_a_field_no_span_fills_fails_closed() -> None:
    assert address("The new street address is 27 Mill Road") is None  # no city in the message: no call
