"""BigQuery tables the live pipeline writes: one row per turn, one per closed session.

The schemas are versioned (``EVAL_SCHEMA_VERSION`` is written into every
row). Change them only by adding NULLABLE fields; a breaking change bumps
the version and gets a new table suffix.

PII rule: rows never hold message text, names, emails, addresses or raw
customer ids. Customer ids are HMAC-SHA256 hashed (``evals.redact``); text
is reduced to lengths and scores.
"""

from __future__ import annotations

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

TABLES: dict[str, list[tuple[str, str, str]]] = {
    TURNS_TABLE: TURNS_SCHEMA,
    SESSIONS_TABLE: SESSIONS_SCHEMA,
}
