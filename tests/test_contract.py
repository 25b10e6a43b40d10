"""The inbound contract: what is accepted, and the reason given for what is not."""

from __future__ import annotations

import json

import pytest

from contract.messages import (
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_CHARS,
    AgentReply,
    ContractError,
    parse_inbound,
    parse_reply,
)

GOOD = {
    "schema_version": 1,
    "session_id": "s-1",
    "customer_id": "C0001",
    "message_id": "m-1",
    "text": "Where is my order?",
    "sent_at": "2026-11-25T11:00:00Z",
}


def payload(**changes: object) -> bytes:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def test_a_good_message_parses_with_an_aware_timestamp():
    msg = parse_inbound(payload())
    assert (msg.session_id, msg.customer_id, msg.message_id) == ("s-1", "C0001", "m-1")
    assert msg.sent_at.tzinfo is not None


def test_version_defaults_to_current_and_unknown_fields_are_ignored():
    msg = parse_inbound(payload(schema_version=..., client="web/2.1"))
    assert msg.schema_version == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty payload"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (payload(text=...), "text"),
        (payload(session_id=42), "session_id"),
        (payload(text="   "), "blank"),
        (payload(text="x" * (MAX_TEXT_CHARS + 1)), "text"),
        (payload(sent_at="yesterday"), "sent_at"),
        (payload(schema_version=99), "unsupported schema_version"),
        (payload(customer_id="C0001/../C0002"), "customer_id"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "too large"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(data: bytes, reason: str):
    with pytest.raises(ContractError) as err:
        parse_inbound(data)
    assert reason in err.value.reason


def test_a_reply_round_trips():
    reply = AgentReply(session_id="s-1", turn_id="s-1#0", turn_index=0, answers=["m-1"], text="hi", model="m")
    assert parse_reply(reply.to_bytes()) == reply
