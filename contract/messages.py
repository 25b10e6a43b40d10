"""The wire contract: what travels on supportflow's Pub/Sub topics.

Every producer and consumer imports these models; nothing else defines a
message's shape. Each payload carries ``schema_version``. A reader accepts
every version in ``SUPPORTED_VERSIONS`` and rejects the rest with a reason,
so a newer producer can be rolled out before or after its readers.

Inbound (chat frontend -> ``inbound`` topic)::

    {"schema_version": 1, "session_id": "s-1", "customer_id": "C0001",
     "message_id": "m-1", "text": "where is my order?",
     "sent_at": "2026-11-25T11:00:00Z"}

Outbound (pipeline -> ``replies`` topic), one per agent turn::

    {"schema_version": 1, "session_id": "s-1", "turn_id": "s-1#6f1ed002ab55",
     "turn_index": 0, "answers": ["m-1"], "kind": "reply", "text": "...",
     "model": "smollm2-135m", "timings": {...}, "created_at": "..."}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

# Limits are part of the contract: the frontend enforces them too.
MAX_TEXT_CHARS = 4000
MAX_PAYLOAD_BYTES = 16 * 1024

# Ids are opaque but bounded and printable, so they are safe in Pub/Sub
# attributes, ordering keys, Firestore document ids and log lines.
Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@#-]+$"),
]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=False)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class InboundMessage(_Wire):
    """A chat message a customer typed, as the frontend publishes it."""

    schema_version: int = SCHEMA_VERSION
    session_id: Id
    customer_id: Id
    message_id: Id
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
    sent_at: datetime

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v

    @field_validator("sent_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=UTC)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported schema_version {v}; supported: {sorted(SUPPORTED_VERSIONS)}")
        return v


class ReplyKind(StrEnum):
    REPLY = "reply"  # the agent answered
    HANDOFF = "handoff"  # the conversation goes to a human
    ERROR = "error"  # the turn failed; its messages are also dead-lettered


class TurnTimings(_Wire):
    """Milliseconds spent per stage of one turn (0 where a stage did not run)."""

    queue_ms: float = 0.0  # first user message sent -> turn released by the session stage
    enrich_ms: float = 0.0
    model_ms: float = 0.0
    tools_ms: float = 0.0
    total_ms: float = 0.0  # first user message sent -> reply built (publish follows)


class AgentReply(_Wire):
    """One agent turn's outcome, published on the reply topic.

    The reply topic is both the frontend's feed and the session stage's
    memory (the pipeline reads it back through its own subscription).
    """

    schema_version: int = SCHEMA_VERSION
    session_id: Id
    turn_id: str
    turn_index: int
    answers: list[str]  # the inbound message ids this turn answers, in order
    kind: ReplyKind = ReplyKind.REPLY
    text: str
    model: str
    prompt_version: str = ""
    timings: TurnTimings = Field(default_factory=TurnTimings)
    created_at: datetime = Field(default_factory=utc_now)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported schema_version {v}")
        return v


class DeadLetter(_Wire):
    """Something the pipeline could not turn into a reply, and why.

    ``payload`` is the original bytes, decoded as UTF-8 when possible and
    base64 otherwise (``payload_encoding`` says which), so nothing is lost.
    """

    stage: str  # the transform that gave up, e.g. "ParseInbound"
    reason: str
    payload: str
    payload_encoding: str = "utf-8"
    session_id: str | None = None
    message_ids: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)


class ContractError(ValueError):
    """An inbound payload that does not meet the contract; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_inbound(data: bytes) -> InboundMessage:
    """Decode and validate one inbound payload, or raise ContractError."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload too large: {len(data)} bytes > {MAX_PAYLOAD_BYTES}")
    if not data:
        raise ContractError("empty payload")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractError(f"payload is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as e:
        raise ContractError(f"payload is not JSON: {e.msg} at char {e.pos}") from None
    except RecursionError:
        raise ContractError("payload is not acceptable JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise ContractError(f"payload is not acceptable JSON: {e}"[:300]) from None
    if not isinstance(obj, dict):
        raise ContractError(f"payload must be a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version not in SUPPORTED_VERSIONS:
        raise ContractError(f"unsupported schema_version {version!r}; supported: {sorted(SUPPORTED_VERSIONS)}")
    try:
        return InboundMessage.model_validate(obj)
    except ValidationError as e:
        raise ContractError(f"invalid message: {_explain(e)}") from None


def parse_reply(data: bytes) -> AgentReply:
    try:
        return AgentReply.model_validate_json(data)
    except ValidationError as e:
        raise ContractError(f"invalid reply: {_explain(e)}") from None
