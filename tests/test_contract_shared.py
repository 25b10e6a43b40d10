"""The shared types on the ground floor: the hand-off record's wire form, the eval rows and their schema.

Each is defined once in ``contract/``; these tests pin what the other layers rely on: the bytes and
attributes a human agent's desk receives, a turns_v1 row that matches its table column for column
(outcome and details included, so no caller patches it), and the PII rule of the rows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agents.finish import HANDOFF_TEXTS
from contract.eval_rows import SESSIONS_SCHEMA, TURNS_SCHEMA, customer_hash, session_row, turn_row
from contract.handoff import HANDOFF_REASONS, Handoff
from contract.messages import AgentReply, ReplyKind, TurnTimings
from contract.tool_calls import ToolCall
from contract.turn import EnrichedTurn, SessionClosed, Turn, UserMessage

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _handoff(**overrides: object) -> Handoff:
    fields = dict(
        handoff_id="H-1",
        reason="user_request",
        session_id="s-1",
        turn_id="s-1#ab",
        customer_id="C0001",
        message_ids=("m-1", "m-2"),
        summary="wants a person",
        flags=("handoff_user_request",),
    )
    return Handoff(**{**fields, **overrides})  # type: ignore[arg-type]


def test_handoff_wire_form() -> None:
    record = _handoff()
    body = json.loads(record.to_bytes())
    assert body == {
        "handoff_id": "H-1", "reason": "user_request", "session_id": "s-1", "turn_id": "s-1#ab",
        "customer_id": "C0001", "message_ids": ["m-1", "m-2"], "summary": "wants a person",
        "flags": ["handoff_user_request"], "tools_used": [],
    }  # fmt: skip
    assert record.attributes() == {"session_id": "s-1"}
    assert record.ordering_key == "s-1"


def test_handoff_reasons_are_the_ones_the_agent_has_texts_for() -> None:
    assert set(HANDOFF_REASONS) == set(HANDOFF_TEXTS)
    with pytest.raises(ValueError, match="unknown hand-off reason"):
        _handoff(reason="bored")


def _enriched(customer: str = "C0042") -> EnrichedTurn:
    turn = Turn(
        session_id="s-9", customer_id=customer, turn_index=2,
        messages=(UserMessage("m-7", "where is my order?", T0, T0),), history=(), omitted_history=0, released_at=T0,
    )  # fmt: skip
    return EnrichedTurn(turn=turn, context={}, context_flags=("customer_unknown",), enrich_ms=3.0)


def _reply(enriched: EnrichedTurn) -> AgentReply:
    turn = enriched.turn
    return AgentReply(
        session_id=turn.session_id, turn_id=turn.turn_id, turn_index=turn.turn_index, answers=["m-7"],
        kind=ReplyKind.HANDOFF, text="A person will take over.", model="instant", prompt_version="support_system_v1",
        timings=TurnTimings(queue_ms=1.0, enrich_ms=3.0, model_ms=0.0, tools_ms=0.0, total_ms=9.5), created_at=T0,
    )  # fmt: skip


def test_turn_row_is_complete_in_one_call_and_matches_its_table() -> None:
    enriched = _enriched()
    details = {"steps": 1, "handoff_reason": "user_request"}
    row = turn_row(_reply(enriched), enriched, prompt_tokens=5, completion_tokens=7, flags=("outcome_handoff",),
                   outcome="handoff", details=details)  # fmt: skip
    assert list(row) == [name for name, _, _ in TURNS_SCHEMA]
    required = [name for name, _, mode in TURNS_SCHEMA if mode == "REQUIRED"]
    assert all(row[name] is not None for name in required)
    assert row["outcome"] == "handoff" and json.loads(row["details"]) == details
    assert row["flags"] == ["customer_unknown", "outcome_handoff"]
    assert row["turn_id"] == enriched.turn.turn_id and row["total_ms"] == 9.5


def test_rows_hold_no_raw_customer_id_or_text() -> None:
    enriched = _enriched("C0042")
    row = turn_row(_reply(enriched), enriched)
    closed = SessionClosed("s-9", "C0042", turns=1, messages=1, duplicates=0, opened_at=T0, closed_at=T0,
                           outcome="idle")  # fmt: skip
    srow = session_row(closed)
    assert list(srow) == [name for name, _, _ in SESSIONS_SCHEMA]
    for r in (row, srow):
        text = json.dumps(r, default=str)
        assert "C0042" not in text and "where is my order" not in text
        assert r["customer_hash"] == customer_hash("C0042") != customer_hash("C0043")


def test_tool_call_arguments() -> None:
    assert ToolCall("c1", "lookup_orders", '{"limit": 2}').parsed_arguments() == {"limit": 2}
    with pytest.raises(ValueError):
        ToolCall("c1", "lookup_orders", "[1, 2]").parsed_arguments()
