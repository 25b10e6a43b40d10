"""The hand-off record: what a human agent's desk receives when a turn is handed to a person.

Published on the hand-off topic (``chat-handoffs``) as UTF-8 JSON, with the
session id as ordering key and as the attribute ``session_id``. The agent fills
it in (``agents.steps``); the pipeline and the baseline bench publish it with
``to_bytes`` and ``attributes``, so its wire shape is defined here only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

# Why a turn was handed to a person.
HANDOFF_REASONS = ("user_request", "agent_request", "step_limit", "guardrail")


@dataclass(frozen=True)
class Handoff:
    """The hand-off record for a human agent console (published on its own topic by the pipeline)."""

    handoff_id: str
    reason: str  # one of HANDOFF_REASONS
    session_id: str
    turn_id: str
    customer_id: str
    message_ids: tuple[str, ...]
    summary: str = ""
    flags: tuple[str, ...] = ()
    tools_used: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.reason not in HANDOFF_REASONS:
            raise ValueError(f"unknown hand-off reason {self.reason!r}; expected one of {HANDOFF_REASONS}")

    def to_json_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("message_ids", "flags", "tools_used"):
            out[key] = list(out[key])
        return out

    def to_bytes(self) -> bytes:
        """The message body on the hand-off topic."""
        return json.dumps(self.to_json_dict(), ensure_ascii=False, sort_keys=True).encode()

    @property
    def ordering_key(self) -> str:
        """A session's hand-offs reach the desk in order."""
        return self.session_id

    def attributes(self) -> dict[str, str]:
        """The Pub/Sub attributes of the hand-off message (a desk can filter on the session)."""
        return {"session_id": self.session_id}
