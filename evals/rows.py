"""Build the BigQuery rows (see ``evals/schema.py``) from what a turn produced."""

from __future__ import annotations

from typing import Any

from contract.messages import AgentReply
from contract.turn import EnrichedTurn, SessionClosed
from evals.redact import customer_hash
from evals.schema import EVAL_SCHEMA_VERSION


def turn_row(
    reply: AgentReply,
    enriched: EnrichedTurn,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    flags: tuple[str, ...] = (),
) -> dict[str, Any]:
    t = reply.timings
    turn = enriched.turn
    return {
        "schema_version": EVAL_SCHEMA_VERSION,
        "session_id": reply.session_id,
        "turn_id": reply.turn_id,
        "turn_index": reply.turn_index,
        "customer_hash": customer_hash(turn.customer_id),
        "answers": list(reply.answers),
        "kind": reply.kind.value,
        "model": reply.model,
        "prompt_version": reply.prompt_version,
        "queue_ms": round(t.queue_ms, 3),
        "enrich_ms": round(t.enrich_ms, 3),
        "model_ms": round(t.model_ms, 3),
        "tools_ms": round(t.tools_ms, 3),
        "total_ms": round(t.total_ms, 3),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "user_chars": sum(len(m.text) for m in turn.messages),
        "reply_chars": len(reply.text),
        "history_entries": len(turn.history),
        "flags": sorted(set(enriched.context_flags) | set(flags)),
        "created_at": reply.created_at.isoformat(),
    }


def session_row(closed: SessionClosed) -> dict[str, Any]:
    return {
        "schema_version": EVAL_SCHEMA_VERSION,
        "session_id": closed.session_id,
        "customer_hash": customer_hash(closed.customer_id),
        "turns": closed.turns,
        "messages": closed.messages,
        "duplicates": closed.duplicates,
        "duration_s": (closed.closed_at - closed.opened_at).total_seconds(),
        "outcome": closed.outcome,
        "opened_at": closed.opened_at.isoformat(),
        "closed_at": closed.closed_at.isoformat(),
    }
