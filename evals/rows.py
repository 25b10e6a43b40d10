"""Build the BigQuery rows (see ``evals/schema.py``) from what a turn produced."""

from __future__ import annotations

from typing import Any

from contract.messages import MAX_CLOCK_SKEW_S, AgentReply
from contract.turn import EnrichedTurn, SessionClosed
from evals.redact import customer_hash
from evals.schema import EVAL_SCHEMA_VERSION

# A message's sent_at was further than MAX_CLOCK_SKEW_S from its receipt: the client's clock is wrong.
# The turn's timings never used it (they run on the server's clock); the flag says the client needs a look.
FLAG_CLIENT_CLOCK_SKEW = "client_clock_skew"


def clock_flags(enriched: EnrichedTurn) -> tuple[str, ...]:
    return (FLAG_CLIENT_CLOCK_SKEW,) if enriched.turn.max_clock_skew_s > MAX_CLOCK_SKEW_S else ()


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
        "flags": sorted(set(enriched.context_flags) | set(flags) | set(clock_flags(enriched))),
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
