"""Pipeline options: the one place where supportflow's knobs are declared.

Defaults are the embedded local stack's names, so ``python -m pipeline.main``
with only the emulator variables set runs against ``stack``'s resources.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from agents.backends import registry
from contract.context_layout import DEFAULT_BIGTABLE_INSTANCE, DEFAULT_BIGTABLE_TABLE, STORES

DEFAULT_PROJECT = "supportflow-local"

# Resource ids (not paths): the stack creates them, the pipeline reads them.
INBOUND_TOPIC = "chat-inbound"
INBOUND_SUBSCRIPTION = "chat-inbound-pipeline"
REPLY_TOPIC = "chat-replies"
# The session stage's memory: the pipeline reads its own replies back.
REPLY_MEMORY_SUBSCRIPTION = "chat-replies-session-memory"
DEAD_LETTER_TOPIC = "chat-dead-letters"
DEAD_LETTER_SUBSCRIPTION = "chat-dead-letters-audit"
# The local runner reads dead letters back to release the inbound acks they settle (pipeline/local_runner.py).
DEAD_LETTER_SETTLE_SUBSCRIPTION = "chat-dead-letters-settle"
# Who owns each session, for as long as the store keeps it (pipeline/ownership.py).
SESSION_OWNERS_COLLECTION = "session_owners"
# Conversations handed to a person: what a human-agent desk subscribes to.
HANDOFF_TOPIC = "chat-handoffs"
HANDOFF_SUBSCRIPTION = "chat-handoffs-desk"
EVAL_DATASET = "supportflow_evals"

MODEL_DEVICES_HELP = "auto (the first GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"

# Customer context store: names shared with the stack's Bigtable seeder (a Beam-free module).
CONTEXT_STORES = STORES
BIGTABLE_INSTANCE = DEFAULT_BIGTABLE_INSTANCE
BIGTABLE_TABLE = DEFAULT_BIGTABLE_TABLE


class SupportflowOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # noqa: ANN001 - Beam's signature
        p = parser.add_argument_group("supportflow")
        p.add_argument("--gcp_project", default=DEFAULT_PROJECT, help="Project of the topics, store and dataset.")
        p.add_argument("--inbound_subscription", default=INBOUND_SUBSCRIPTION)
        p.add_argument("--reply_topic", default=REPLY_TOPIC)
        p.add_argument("--reply_memory_subscription", default=REPLY_MEMORY_SUBSCRIPTION)
        p.add_argument("--dead_letter_topic", default=DEAD_LETTER_TOPIC)
        p.add_argument("--handoff_topic", default=HANDOFF_TOPIC)
        p.add_argument("--eval_dataset", default=EVAL_DATASET)
        p.add_argument(
            "--bigquery_endpoint",
            default=None,
            help="BigQuery REST endpoint, e.g. http://127.0.0.1:9050 for the emulator; unset for the real API.",
        )
        p.add_argument(
            "--context_store",
            default="firestore",
            choices=CONTEXT_STORES,
            help="Where customer context is read from (Bigtable: one row per customer, see pipeline/enrichment).",
        )
        p.add_argument("--bigtable_instance", default=BIGTABLE_INSTANCE, help="Bigtable instance for --context_store.")
        p.add_argument("--bigtable_table", default=BIGTABLE_TABLE, help="Bigtable table for --context_store.")
        p.add_argument("--model_backend", default=registry.DEFAULT, choices=registry.NAMES)
        p.add_argument(
            "--max_agent_steps",
            type=int,
            default=4,
            help="Model calls per turn at most (tool-calling backends); the step loop is unrolled this many times.",
        )
        p.add_argument(
            "--policy_now",
            default=None,
            help="ISO time the tools judge return/refund windows against; unset: the wall clock. "
            "The local stack pins it to its seed data's reference time.",
        )
        p.add_argument("--gemini_model", default="gemini-2.5-flash", help="Gemini model for --model_backend=gemini.")
        p.add_argument(
            "--gemini_base_url",
            default=None,
            help="Another Gemini endpoint (a local server in tests); unset: Google's API.",
        )
        p.add_argument(
            "--gemini_deadline_s",
            type=float,
            default=60.0,
            help="Total time one Gemini call may take, retries and back-off included; then the turn is "
            "answered with an error reply and dead-lettered.",
        )
        p.add_argument("--gemini_attempt_timeout_s", type=float, default=30.0, help="Time one Gemini attempt may take.")
        p.add_argument(
            "--gemini_max_attempts", type=int, default=5, help="Attempts per Gemini call (429, 5xx, timeouts)."
        )
        p.add_argument(
            "--gemini_backoff_s",
            type=float,
            default=1.0,
            help="First Gemini retry waits this long (then doubling, plus up to this much jitter), "
            "unless the server says when to retry.",
        )
        p.add_argument("--gemini_max_backoff_s", type=float, default=20.0, help="Longest wait between Gemini attempts.")
        p.add_argument(
            "--gemini_max_concurrency", type=int, default=8, help="Concurrent Gemini requests per worker process."
        )
        p.add_argument(
            "--model_path",
            default=None,
            help="gemma: a checkpoint directory or hub id for transformers, or random:gemma-3-1b / random:tiny "
            "(random weights, for throughput work). gemma_vllm: the model vLLM serves (default google/gemma-3-1b-it).",
        )
        p.add_argument("--model_device", default="auto", help=f"Device of the gemma backend: {MODEL_DEVICES_HELP}.")
        p.add_argument(
            "--model_batch_size",
            type=int,
            default=8,
            help="gemma, gemma_vllm: turns per batched model call at most (turns of different sessions share it).",
        )
        p.add_argument(
            "--model_batch_wait_s",
            type=float,
            default=None,
            help="gemma, gemma_vllm: wait this long at most to fill a batch (streaming); unset: a bundle's turns.",
        )
        p.add_argument(
            "--model_copies",
            type=int,
            default=0,
            help="gemma: 0 loads a copy per SDK process; N>0 loads N copies per machine, shared by its "
            "processes (Beam's model_copies). Use 1 on a one-GPU worker.",
        )
        p.add_argument("--model_max_tokens", type=int, default=96, help="Cap on generated tokens per model call.")
        p.add_argument(
            "--model_threads",
            type=int,
            default=1,
            # llama.cpp's threads spin-wait: on a busy 2-core box, 2 threads ran 10-30x slower than 1.
            help="CPU threads per local model copy; raise it only on a worker the model has to itself.",
        )
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
        # Session ownership (pipeline/ownership.py, docs/security.md).
        p.add_argument(
            "--session_owner_collection",
            default=SESSION_OWNERS_COLLECTION,
            help="Firestore collection recording each session's owner at its first message; a message of "
            "another customer in that session is dead-lettered, also after the pipeline lost its state.",
        )
        p.add_argument(
            "--session_binding_key",
            default=None,
            help="Key(s), comma-separated, the chat frontend signs session ids with (contract/binding.py): "
            "when set, a message whose session id is not bound to its customer is dead-lettered. Give it as "
            "SUPPORTFLOW_SESSION_BINDING_KEY rather than on a command line. Unset: no binding check.",
        )
        # Deployment and operations (validated by pipeline/settings.py; docs/operations.md).
        add_operations_args(parser.add_argument_group("supportflow operations"))


DELIVERY_MODES = ("exactly_once", "at_least_once")


def add_operations_args(p) -> None:  # noqa: ANN001 - an argparse group
    """Options of the deployment, not of the graph's logic: delivery mode, right-fitting, SLO thresholds."""
    p.add_argument(
        "--delivery_mode",
        default="exactly_once",
        choices=DELIVERY_MODES,
        help="Dataflow streaming mode: exactly_once (default) or at_least_once (cheaper, lower latency; "
        "duplicate replies possible: consumers de-duplicate on turn_id).",
    )
    p.add_argument(
        "--inference_accelerator",
        default=None,
        help="Accelerator resource hint for the inference step only, e.g. "
        "type:nvidia-l4;count:1;install-nvidia-driver. GPU model backends only; they default to an L4.",
    )
    p.add_argument(
        "--inference_min_ram",
        default=None,
        help="Minimum worker memory for the inference step only (resource hint), e.g. 16GB.",
    )
    p.add_argument(
        "--slo_turn_latency_s",
        type=float,
        default=30.0,
        help="Latency SLO: a turn answered later than this after its first message counts as slow.",
    )
    p.add_argument(
        "--slo_freshness_s",
        type=float,
        default=60.0,
        help="Freshness SLO: an unanswered user message older than this counts as stale.",
    )
    p.add_argument(
        "--freshness_probe_s",
        type=float,
        default=10.0,
        help="How often the session stage reports the age of a session's oldest unanswered message.",
    )


def default(name: str) -> object:
    """The default of the supportflow option ``name`` (as declared above)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    SupportflowOptions._add_argparse_args(parser)
    return parser.get_default(name)
