"""A pack's context collections (tools/context_collection.py): field types, what a declaration must hold, and
the pack-level checks (tools/packs.py) that tie id formats to the collections they are found in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tools.context_collection import ContextCollection, field_check
from tools.packs import PackError, load_pack
from tools.spec import IdFormat


def visits(**kw: object) -> ContextCollection:
    facts: dict = {"id_field": "visit_id", "newest_first": "at", "max_kept": 3, "fields": {"at": "timestamp"}}
    return ContextCollection("visits", **{**facts, **kw})


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("str", "x", 1),
        ("number", 1.5, True),
        ("bool", False, 0),
        ("timestamp", "2026-11-20T12:00:00+00:00", "yesterday"),
        ("mapping", {}, []),
        ("list", [], {}),
        ("records:name", [{"name": "tent"}], [{"name": 3}]),
        ("str?", None, 1),
    ],
)
def test_field_types(kind: str, good: object, bad: object) -> None:
    assert field_check(kind)(good) and not field_check(kind)(bad)


def test_a_declaration_is_checked_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="unknown field type"):
        visits(fields={"at": "timestamp", "room": "text"})
    with pytest.raises(ValueError, match="must be a field of type 'timestamp'"):
        visits(newest_first="room", fields={"at": "timestamp", "room": "str"})
    with pytest.raises(ValueError, match="max_kept"):
        visits(max_kept=0)
    with pytest.raises(ValueError, match="lower-case name"):
        ContextCollection("profile", "id", "at", 1, {"at": "timestamp"})


def test_documents_are_checked_and_carry_their_id() -> None:
    v = visits(fields={"at": "timestamp", "room": "str?"}, subcollection="stays")
    assert v.source == "stays" and visits().source == "visits"
    assert v.valid({"at": "2026-11-20T12:00:00+00:00"}) and v.valid({"at": "2026-11-20", "room": None, "extra": 1})
    assert not v.valid({"room": "r1"}) and not v.valid(None)
    assert v.record("V1", {"at": "x"}) == {"at": "x", "visit_id": "V1"}


def test_every_shipped_pack_declares_its_context() -> None:
    shop, telco = load_pack("shop"), load_pack("telco")
    assert [c.name for c in shop.context] == [f.context for f in shop.id_formats if f.context] + ["tickets"]
    assert telco.context == ()  # its records live in its MCP server's store; Firestore holds the profiles


def test_an_id_format_must_name_a_declared_collection() -> None:
    shop = load_pack("shop")
    with pytest.raises(PackError, match="which the pack does not declare"):
        replace(shop, context=())
    with pytest.raises(PackError, match="context collections repeat"):
        replace(shop, context=(*shop.context, shop.context[0]))
    stray = IdFormat("visit", r"V\d+", "V1", context="visits", field="visit_id")
    with pytest.raises(PackError, match="'visit'"):
        replace(shop, id_formats=(*shop.id_formats, stray))
