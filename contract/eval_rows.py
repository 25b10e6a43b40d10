"""The eval rows on BigQuery: their tables, their schemas, their PII rule and their one assembler.

On the ground floor because the live pipeline writes these rows, the stack and
``deploy/`` create their tables, the baseline bench writes them too, and the
offline harness (``evals.results_bq``) writes the run and trial tables: every
one of them imports this module, none defines a row of its own.

The schemas are versioned (``EVAL_SCHEMA_VERSION`` is written into every
row). Change them only by adding NULLABLE fields; a breaking change bumps
the version and gets a new table suffix.

PII rule: rows never hold message text, names, emails, addresses or raw
customer ids. Customer ids are HMAC-SHA256 hashed (``customer_hash``, keyed by
``SUPPORTFLOW_EVAL_HASH_KEY``); text is reduced to lengths and scores.

``turn_row`` is the only place a ``turns_v1`` row is put together: whoever
has the turn's reply, outcome and details passes them all at once, so no
caller patches fields in afterwards. ``session_row`` does the same for
``sessions_v1``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from contract.messages import MAX_CLOCK_SKEW_S, AgentReply
from contract.turn import EnrichedTurn, SessionClosed

EVAL_SCHEMA_VERSION = 1

TURNS_TABLE = "turns_v1"
SESSIONS_TABLE = "sessions_v1"

# (name, type, mode) in the REST API's terms, so both the stack (table
# creation) and the writer use the same list.
TURNS_SCHEMA: list[tuple[str, str, str]] = [
    ("schema_version", "INTEGER", "REQUIRED"),
    ("session_id", "STRING", "REQUIRED"),
    ("turn_id", "STRING", "REQUIRED"),
    ("turn_index", "INTEGER", "REQUIRED"),
    ("customer_hash", "STRING", "REQUIRED"),
    ("answers", "STRING", "REPEATED"),
    ("kind", "STRING", "REQUIRED"),
    ("model", "STRING", "REQUIRED"),
    ("prompt_version", "STRING", "NULLABLE"),
    ("queue_ms", "FLOAT", "NULLABLE"),
    ("enrich_ms", "FLOAT", "NULLABLE"),
    ("model_ms", "FLOAT", "NULLABLE"),
    ("tools_ms", "FLOAT", "NULLABLE"),
    ("total_ms", "FLOAT", "NULLABLE"),
    ("prompt_tokens", "INTEGER", "NULLABLE"),
    ("completion_tokens", "INTEGER", "NULLABLE"),
    ("user_chars", "INTEGER", "NULLABLE"),
    ("reply_chars", "INTEGER", "NULLABLE"),
    ("history_entries", "INTEGER", "NULLABLE"),
    ("flags", "STRING", "REPEATED"),
    ("outcome", "STRING", "NULLABLE"),  # answered | refused | handoff | error
    # JSON text: steps, tool calls (arguments masked), actions, hand-off reason. No message text.
    ("details", "STRING", "NULLABLE"),
    ("created_at", "TIMESTAMP", "REQUIRED"),
    # Streaming replies (contract/deltas.py): first message received -> first visible text (the first
    # delta, or the final reply when nothing streamed), and how many deltas the turn published.
    ("first_text_ms", "FLOAT", "NULLABLE"),
    ("deltas", "INTEGER", "NULLABLE"),
]

SESSIONS_SCHEMA: list[tuple[str, str, str]] = [
    ("schema_version", "INTEGER", "REQUIRED"),
    ("session_id", "STRING", "REQUIRED"),
    ("customer_hash", "STRING", "REQUIRED"),
    ("turns", "INTEGER", "REQUIRED"),
    ("messages", "INTEGER", "REQUIRED"),
    ("duplicates", "INTEGER", "REQUIRED"),
    ("duration_s", "FLOAT", "REQUIRED"),
    ("outcome", "STRING", "REQUIRED"),
    ("opened_at", "TIMESTAMP", "REQUIRED"),
    ("closed_at", "TIMESTAMP", "REQUIRED"),
]

# Offline eval results (evals.results_bq): one row per run, one per trial. Scenario data is
# synthetic, but the same rule holds: no conversation text, only ids, checks and numbers.
EVAL_RUNS_TABLE = "eval_runs_v1"
EVAL_TRIALS_TABLE = "eval_trials_v1"

EVAL_RUNS_SCHEMA: list[tuple[str, str, str]] = [
    ("schema_version", "INTEGER", "REQUIRED"),
    ("run_id", "STRING", "REQUIRED"),
    ("backend", "STRING", "REQUIRED"),
    ("model", "STRING", "NULLABLE"),
    ("prompt_version", "STRING", "NULLABLE"),
    ("k", "INTEGER", "REQUIRED"),
    ("temperature", "FLOAT", "NULLABLE"),
    ("judge_model", "STRING", "NULLABLE"),
    ("scenarios", "INTEGER", "REQUIRED"),
    ("trials", "INTEGER", "REQUIRED"),
    ("passed_trials", "INTEGER", "REQUIRED"),
    ("pass_hat_1", "FLOAT", "NULLABLE"),
    ("pass_hat_k", "FLOAT", "NULLABLE"),
    ("violations", "INTEGER", "NULLABLE"),
    ("summary", "STRING", "NULLABLE"),  # JSON: the overall and per-category summaries of report.json
    ("wall_s", "FLOAT", "NULLABLE"),
    ("command", "STRING", "NULLABLE"),
    ("started_at", "TIMESTAMP", "REQUIRED"),
]

EVAL_TRIALS_SCHEMA: list[tuple[str, str, str]] = [
    ("schema_version", "INTEGER", "REQUIRED"),
    ("run_id", "STRING", "REQUIRED"),
    ("scenario_id", "STRING", "REQUIRED"),
    ("category", "STRING", "REQUIRED"),
    ("trial", "INTEGER", "REQUIRED"),
    ("passed", "BOOLEAN", "REQUIRED"),
    ("violations", "INTEGER", "REQUIRED"),
    ("failed_checks", "STRING", "REPEATED"),
    ("trajectory_precision", "FLOAT", "NULLABLE"),
    ("trajectory_recall", "FLOAT", "NULLABLE"),
    ("handoff_correct", "BOOLEAN", "NULLABLE"),
    ("turns", "INTEGER", "NULLABLE"),
    ("turn_ms_max", "FLOAT", "NULLABLE"),
    ("prompt_tokens", "INTEGER", "NULLABLE"),
    ("completion_tokens", "INTEGER", "NULLABLE"),
    ("judge_helpfulness", "INTEGER", "NULLABLE"),
    ("judge_groundedness", "INTEGER", "NULLABLE"),
    ("started_at", "TIMESTAMP", "REQUIRED"),
]

TABLES: dict[str, list[tuple[str, str, str]]] = {
    TURNS_TABLE: TURNS_SCHEMA,
    SESSIONS_TABLE: SESSIONS_SCHEMA,
    EVAL_RUNS_TABLE: EVAL_RUNS_SCHEMA,
    EVAL_TRIALS_TABLE: EVAL_TRIALS_SCHEMA,
}


# PII: customer ids only as keyed hashes. A production job sets a secret key, so hashes cannot be
# reversed by enumerating ids; the local stack's fixed key keeps local rows joinable across runs.
_DEV_KEY = "supportflow-local-dev-key"


def customer_hash(customer_id: str) -> str:
    key = os.environ.get("SUPPORTFLOW_EVAL_HASH_KEY", _DEV_KEY).encode()
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


# A message's sent_at was further than MAX_CLOCK_SKEW_S from its receipt: the client's clock is wrong.
# The turn's timings never used it (they run on the server's clock); the flag says the client needs a look.
FLAG_CLIENT_CLOCK_SKEW = "client_clock_skew"


def clock_flags(enriched: EnrichedTurn) -> tuple[str, ...]:
    return (FLAG_CLIENT_CLOCK_SKEW,) if enriched.turn.max_clock_skew_s > MAX_CLOCK_SKEW_S else ()


def turn_row(
    reply: AgentReply,
    enriched: EnrichedTurn,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    flags: tuple[str, ...] = (),
    outcome: str | None = None,
    details: dict[str, Any] | None = None,
    first_text_ms: float | None = None,
    deltas: int | None = None,
) -> dict[str, Any]:
    """The ``turns_v1`` row of one answered turn. ``details``: JSON-able, no message text (the PII rule)."""
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
        "outcome": outcome,
        "details": None if details is None else json.dumps(details, default=str, sort_keys=True),
        "created_at": reply.created_at.isoformat(),
        "first_text_ms": None if first_text_ms is None else round(first_text_ms, 3),
        "deltas": deltas,
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
