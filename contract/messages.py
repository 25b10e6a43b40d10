"""The wire contract: what travels on supportflow's Pub/Sub topics.

Every producer and consumer imports these models; nothing else defines a
message's shape. Each payload carries ``schema_version``. A reader accepts
every version in ``SUPPORTED_VERSIONS`` and rejects the rest with a reason,
so a newer producer can be rolled out before or after its readers.

Inbound (chat frontend -> ``inbound`` topic)::

    {"schema_version": 1, "session_id": "s-1", "customer_id": "cust-1",
     "message_id": "m-1", "text": "hello, can you help me?",
     "sent_at": "2026-11-25T11:00:00Z"}

Outbound (pipeline -> ``replies`` topic), one per agent turn::

    {"schema_version": 1, "session_id": "s-1", "turn_id": "s-1#6f1ed002ab55",
     "turn_index": 0, "answers": ["m-1"], "kind": "reply", "text": "...",
     "model": "smollm2-135m", "timings": {...}, "created_at": "..."}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
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

# A client's sent_at further than this from the server's receipt time is a wrong clock (a phone set to 2001,
# a laptop in another time zone written as UTC): the turn's eval row is flagged, and where sent_at is compared
# with server times it is clamped to this bound. Latencies never use sent_at at all.
MAX_CLOCK_SKEW_S = 300.0

# Ids are opaque but bounded and printable, so they are safe in Pub/Sub
# attributes, ordering keys, Firestore document ids and log lines.
Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@#-]+$"),
]


def utc_now() -> datetime:
    return datetime.now(UTC)


def bound_to_server_clock(client_time: datetime, server_time: datetime | None) -> datetime:
    """``client_time`` clamped into ``server_time`` ± ``MAX_CLOCK_SKEW_S`` (unchanged without a server time)."""
    if server_time is None:
        return client_time
    bound = timedelta(seconds=MAX_CLOCK_SKEW_S)
    return min(max(client_time, server_time - bound), server_time + bound)


def known_version(v: int) -> int:
    """A message's ``schema_version`` check (every versioned wire model uses this one)."""
    if v not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported schema_version {v}; supported: {sorted(SUPPORTED_VERSIONS)}")
    return v


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
    sent_at: datetime  # the client's clock: sorts a turn's messages, never measures a latency
    # Server side: when the pipeline got the message (its Pub/Sub publish time, else when ParseInbound read it).
    # ParseInbound overwrites whatever a client sends here; None on objects built outside the pipeline.
    received_at: datetime | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v

    @field_validator("sent_at", "received_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo else v.replace(tzinfo=UTC)

    def to_bytes(self) -> bytes:
        # A producer has no receipt time to send: keep its payload in the documented shape.
        exclude = {"received_at"} if self.received_at is None else None
        return self.model_dump_json(exclude=exclude).encode("utf-8")

    @property
    def clock_skew_s(self) -> float:
        """``sent_at`` minus ``received_at`` (negative: the client's clock is behind); 0 before receipt."""
        return 0.0 if self.received_at is None else (self.sent_at - self.received_at).total_seconds()

    @property
    def bounded_sent_at(self) -> datetime:
        """``sent_at`` clamped to within ``MAX_CLOCK_SKEW_S`` of ``received_at``: safe to compare with server times."""
        return bound_to_server_clock(self.sent_at, self.received_at)

    _known_version = field_validator("schema_version")(known_version)


class ReplyKind(StrEnum):
    REPLY = "reply"  # the agent answered
    HANDOFF = "handoff"  # the conversation goes to a human
    ERROR = "error"  # the turn failed; its messages are also dead-lettered


class TurnTimings(_Wire):
    """Milliseconds spent per stage of one turn (0 where a stage did not run)."""

    # On the server's clock: from the first user message's received_at, never the client's sent_at.
    queue_ms: float = 0.0  # first user message received -> turn released by the session stage
    enrich_ms: float = 0.0
    model_ms: float = 0.0
    tools_ms: float = 0.0
    total_ms: float = 0.0  # first user message received -> reply built (publish follows)


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

    _known_version = field_validator("schema_version")(known_version)


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
    obj.pop("received_at", None)  # the server's field: a client can neither set it nor break a message with it
    try:
        return InboundMessage.model_validate(obj)
    except ValidationError as e:
        raise ContractError(f"invalid message: {_explain(e)}") from None


def parse_reply(data: bytes) -> AgentReply:
    try:
        return AgentReply.model_validate_json(data)
    except ValidationError as e:
        raise ContractError(f"invalid reply: {_explain(e)}") from None
