"""BigQuery tables: the live pipeline's (one row per turn, one per closed session) and the offline harness's.

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
