"""Reply deltas and retractions: the partial text of a turn's reply while it is being written.

On a topic of their own (``chat-reply-deltas``, option ``--delta_topic``), never on the reply topic:

- the reply topic is also the session stage's memory (the pipeline reads it back), so a delta there
  would reach session state unless every reader filtered it (the emulator ignores subscription
  filters); on a topic of its own, "deltas never enter state" holds by construction;
- the final reply keeps its ordering key (the session id). Pub/Sub pauses an ordering key after a
  failed publish: an at-least-once delta sharing it could hold back the final reply;
- a delta is worth something for seconds only: its topic can keep messages briefly and its
  subscriptions need no ordering (clients order by ``seq``).

Two kinds, one shape (``ReplyDelta``), attributes ``session_id``, ``turn_id``, ``kind``, ``seq``:

- ``delta``: ``text`` is the next piece of the reply; ``seq`` counts from 1 per turn;
- ``retract``: everything the turn's deltas showed so far is withdrawn (``text`` is empty, ``reason``
  says why); deltas with a higher ``seq`` start the shown text afresh. Published (and acknowledged by
  Pub/Sub) before the final reply is handed to its publisher.

The frontend's promise (``docs/contract.md``): for every turn, either the deltas after the last
retraction, put together in ``seq`` order, equal the final reply's text, or a retraction was published
before the final. Either way a client that replaces the shown text with the final reply ends on it.
Deltas are at-least-once: de-duplicate by ``(turn_id, seq)``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError, field_validator

from contract.messages import (
    MAX_TEXT_CHARS,
    ContractError,
    Id,
    _explain,
    _Wire,
    known_version,
    utc_now,
)

DELTA_SCHEMA_VERSION = 1
MAX_DELTA_PAYLOAD_BYTES = 16 * 1024


class DeltaKind(StrEnum):
    DELTA = "delta"
    RETRACT = "retract"


class ReplyDelta(_Wire):
    """One piece of a turn's reply (kind ``delta``), or the withdrawal of what was shown (kind ``retract``)."""

    schema_version: int = DELTA_SCHEMA_VERSION
    session_id: Id
    turn_id: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    seq: Annotated[int, Field(ge=1, le=100_000)]
    kind: DeltaKind = DeltaKind.DELTA
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] = ""
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
    created_at: datetime = Field(default_factory=utc_now)

    _known_version = field_validator("schema_version")(known_version)

    @property
    def key(self) -> tuple[str, int]:
        """The de-duplication key."""
        return (self.turn_id, self.seq)

    def attributes(self) -> dict[str, str]:
        return {"session_id": self.session_id, "turn_id": self.turn_id, "kind": self.kind.value, "seq": str(self.seq)}


def parse_delta(data: bytes) -> ReplyDelta:
    """Decode one message of the delta topic, or raise ``ContractError``."""
    if len(data) > MAX_DELTA_PAYLOAD_BYTES:
        raise ContractError(f"delta too large: {len(data)} bytes")
    try:
        return ReplyDelta.model_validate_json(data)
    except ValidationError as e:
        raise ContractError(f"invalid delta: {_explain(e)}") from None
