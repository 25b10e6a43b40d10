"""What one trial of a scenario produced: the input of the scorer.

Plain dataclasses, so a test can build a trace by hand (a "scripted agent")
and score it without a model or a database, and a report can store it as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evals.world import Change, Snapshot


@dataclass(frozen=True)
class CallTrace:
    """One tool call the model made, with its raw arguments and the executor's status."""

    turn: int
    step: int
    name: str
    args: dict[str, Any]
    status: str = "ok"


@dataclass(frozen=True)
class TurnTrace:
    index: int
    user_text: str
    reply_text: str
    outcome: str  # answered | refused | handoff | error  (agents.steps.Outcome)
    kind: str = "reply"  # the AgentReply kind: reply | handoff | error
    flags: tuple[str, ...] = ()
    handoff_reason: str | None = None
    steps: int = 0
    model_ms: float = 0.0
    tools_ms: float = 0.0
    enrich_ms: float = 0.0
    wall_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    error: str = ""
    message_ids: tuple[str, ...] = ()  # the inbound messages this turn answered (the session stage's grouping)
    handoff: dict[str, Any] | None = None  # the hand-off record (contract.handoff.Handoff.to_json_dict)
    released_s: float | None = None  # timed conversations: when the session stage released the turn (offset, s)


@dataclass
class TrialTrace:
    scenario_id: str
    trial: int
    turns: list[TurnTrace] = field(default_factory=list)
    calls: list[CallTrace] = field(default_factory=list)
    before: Snapshot = field(default_factory=dict)
    after: Snapshot = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    project: str = ""
    wall_ms: float = 0.0
    harness_error: str = ""  # the harness itself failed (database, model load): the trial counts as failed
    user_fallbacks: int = 0  # model-played user: times the scripted fallback answered
    sent_message_ids: list[str] = field(default_factory=list)  # every distinct message the user sent, in order
    duplicates: int = 0  # timed conversations: redeliveries the session stage dropped

    @property
    def final(self) -> TurnTrace | None:
        return self.turns[-1] if self.turns else None

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for t in self.turns for f in t.flags))

    def to_json(self, *, with_snapshots: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario_id": self.scenario_id,
            "trial": self.trial,
            "project": self.project,
            "wall_ms": round(self.wall_ms, 1),
            "harness_error": self.harness_error,
            "user_fallbacks": self.user_fallbacks,
            "sent_message_ids": list(self.sent_message_ids),
            "duplicates": self.duplicates,
            "turns": [asdict(t) for t in self.turns],
            "calls": [asdict(c) for c in self.calls],
            "changes": [{"path": c.path, "kind": c.kind, "fields": list(c.fields)} for c in self.changes],
        }
        if with_snapshots:
            out["before"], out["after"] = self.before, self.after
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialTrace:
        """The inverse of ``to_json`` (snapshots only if they were written)."""
        return cls(
            scenario_id=data["scenario_id"],
            trial=int(data["trial"]),
            turns=[
                TurnTrace(
                    **{**t, "flags": tuple(t.get("flags") or ()), "message_ids": tuple(t.get("message_ids") or ())}
                )
                for t in data.get("turns") or ()
            ],  # fmt: skip
            calls=[CallTrace(**c) for c in data.get("calls") or ()],
            before=dict(data.get("before") or {}),
            after=dict(data.get("after") or {}),
            changes=[Change(c["path"], c["kind"], tuple(c.get("fields") or ())) for c in data.get("changes") or ()],
            project=data.get("project", ""),
            wall_ms=float(data.get("wall_ms", 0.0)),
            harness_error=data.get("harness_error", ""),
            user_fallbacks=int(data.get("user_fallbacks", 0)),
            sent_message_ids=list(data.get("sent_message_ids") or ()),
            duplicates=int(data.get("duplicates", 0)),
        )
