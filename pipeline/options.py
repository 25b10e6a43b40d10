"""Pipeline options: the one place where supportflow's knobs are declared.

Defaults are the embedded local stack's names, so ``python -m pipeline.main``
with only the emulator variables set runs against ``stack``'s resources.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_PROJECT = "supportflow-local"

# Resource ids (not paths): the stack creates them, the pipeline reads them.
INBOUND_TOPIC = "chat-inbound"
INBOUND_SUBSCRIPTION = "chat-inbound-pipeline"
REPLY_TOPIC = "chat-replies"
# The session stage's memory: the pipeline reads its own replies back.
REPLY_MEMORY_SUBSCRIPTION = "chat-replies-session-memory"
DEAD_LETTER_TOPIC = "chat-dead-letters"
DEAD_LETTER_SUBSCRIPTION = "chat-dead-letters-audit"
EVAL_DATASET = "supportflow_evals"

MODEL_BACKENDS = ("smollm2", "instant", "gemini")


class SupportflowOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # noqa: ANN001 - Beam's signature
        p = parser.add_argument_group("supportflow")
        p.add_argument("--gcp_project", default=DEFAULT_PROJECT, help="Project of the topics, store and dataset.")
        p.add_argument("--inbound_subscription", default=INBOUND_SUBSCRIPTION)
        p.add_argument("--reply_topic", default=REPLY_TOPIC)
        p.add_argument("--reply_memory_subscription", default=REPLY_MEMORY_SUBSCRIPTION)
        p.add_argument("--dead_letter_topic", default=DEAD_LETTER_TOPIC)
        p.add_argument("--eval_dataset", default=EVAL_DATASET)
        p.add_argument(
            "--bigquery_endpoint",
            default=None,
            help="BigQuery REST endpoint, e.g. http://127.0.0.1:9050 for the emulator; unset for the real API.",
        )
        p.add_argument("--model_backend", default="smollm2", choices=MODEL_BACKENDS)
        p.add_argument("--gemini_model", default="gemini-2.5-flash", help="Gemini model for --model_backend=gemini.")
        p.add_argument("--model_max_tokens", type=int, default=96, help="Cap on generated tokens per model call.")
        p.add_argument("--model_threads", type=int, default=2, help="CPU threads for the local model.")
        # Session stage (see pipeline/session.py).
        p.add_argument("--quiet_window_s", type=float, default=1.5, help="A turn closes after this much user silence.")
        p.add_argument("--max_hold_s", type=float, default=6.0, help="A turn is never held longer than this.")
        p.add_argument(
            "--inflight_timeout_s",
            type=float,
            default=180.0,
            help="Release a turn whose reply never came back after this long.",
        )
        p.add_argument("--idle_timeout_s", type=float, default=600.0, help="Close a session idle for this long.")
        p.add_argument("--max_history", type=int, default=20, help="History entries kept per session.")
        p.add_argument(
            "--max_seen_ids", type=int, default=2000, help="Message ids remembered per session for de-duplication."
        )
