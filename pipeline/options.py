"""Pipeline options: the one table where supportflow's knobs are declared.

``OptionTable`` is the table: each field is one option, its name, type, default,
help and checks (``choices``, numeric ``limits``, a string ``pattern``) written
once, in ``option(...)``. Everything else is generated from it:

- ``SupportflowOptions``: the Beam ``PipelineOptions`` class (argparse), so each
  option is ``--<name>`` on the command line and a Flex Template parameter
  (``deploy/template.py``);
- ``SUPPORTFLOW_<NAME>`` environment variables (``argv_with_env``: the command
  line wins over the variable, the variable over the default);
- ``pipeline.settings.Settings``, the typed, frozen, validated object of a run,
  which *is* an ``OptionTable`` plus what the run decided.

The table validates itself: a row's ``limits`` and ``pattern`` are pydantic ``Field`` constraints,
``choices`` and the rules between options are the validators below, so one ``model_validate``
reports every problem at once (``pipeline.settings`` turns them into ``SettingsError`` lines).

Defaults are the embedded local stack's names, so ``python -m pipeline.main``
with only the emulator variables set runs against ``stack``'s resources.
How to add an option: docs/configuration.md.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.resources import parse_resource_hints
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from agents.backends import registry
from agents.backends.gemini import GEMINI_DEFAULT_MODEL, RetryPolicy
from contract.context_layout import DEFAULT_BIGTABLE_INSTANCE, DEFAULT_BIGTABLE_TABLE, STORES
from pipeline.validation import (
    ACCELERATOR_PATTERN,
    BIGQUERY_DATASET_PATTERN,
    BIGTABLE_INSTANCE_PATTERN,
    BIGTABLE_TABLE_PATTERN,
    DEVICE_PATTERN,
    GEMINI_MODEL_PATTERN,
    HTTP_URL_PATTERN,
    MEMORY_PATTERN,
    PACK_PATTERN,
    PROJECT_PATTERN,
    PROMPT_VERSION_PATTERN,
    PUBSUB_ID_PATTERN,
    SECRET_VERSION_PATTERN,
    is_pubsub_option,
    is_url_option,
)
from tools.packs import DEFAULT_PACK

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
# Reply deltas and retractions while a reply is written (contract/deltas.py): a topic of their own.
DELTA_TOPIC = "chat-reply-deltas"
REPLY_DELTA_MODES = ("on", "off")
EVAL_DATASET = "supportflow_evals"

MODEL_DEVICES_HELP = "auto (the first GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"

# Customer context store: names shared with the stack's Bigtable seeder (a Beam-free module).
CONTEXT_STORES = STORES
BIGTABLE_INSTANCE = DEFAULT_BIGTABLE_INSTANCE
BIGTABLE_TABLE = DEFAULT_BIGTABLE_TABLE

DELIVERY_MODES = ("exactly_once", "at_least_once")

# Argparse groups (``--help`` sections): the graph's logic, and the deployment around it.
SUPPORTFLOW = "supportflow"
OPERATIONS = "supportflow operations"

ENV_PREFIX = "SUPPORTFLOW_"


def option(
    default: Any,
    help: str,  # noqa: A002 - argparse's word
    *,
    choices: Sequence[str] | None = None,
    limits: tuple[float, float] | None = None,
    pattern: str | None = None,
    group: str = SUPPORTFLOW,
) -> Any:
    """One row of the table. ``limits``: a number's inclusive range; ``pattern``: a string's anchored regex
    (``pipeline.validation``): both become pydantic constraints (``ge``/``le``, ``pattern``) and go into the
    Flex Template; ``choices`` is checked by ``OptionTable._one_of_the_choices``."""
    extra = {"choices": tuple(choices) if choices else None, "limits": limits, "pattern": pattern, "group": group}
    low, high = limits or (None, None)
    return Field(default, description=help, ge=low, le=high, pattern=pattern, json_schema_extra=extra)


def _problem(text: str) -> PydanticCustomError:
    """A rule's message, as written (``pipeline.settings.problem_line`` passes it on)."""
    return PydanticCustomError("supportflow", "{text}", {"text": text})


class OptionTable(BaseModel):
    """Every supportflow option. Field order is ``--help``'s and the Flex Template's order."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), str_strip_whitespace=True)

    gcp_project: str = option(DEFAULT_PROJECT, "Project of the topics, store and dataset.", pattern=PROJECT_PATTERN)
    inbound_subscription: str = option(
        INBOUND_SUBSCRIPTION,
        "Pub/Sub subscription id (not path) the chat frontend's inbound messages are read from.",
        pattern=PUBSUB_ID_PATTERN,
    )
    reply_topic: str = option(
        REPLY_TOPIC, "Pub/Sub topic id (not path) the agent's replies are published to.", pattern=PUBSUB_ID_PATTERN
    )
    reply_memory_subscription: str = option(
        REPLY_MEMORY_SUBSCRIPTION,
        "Pub/Sub subscription id on the reply topic: the session stage reads its replies "
        "back through it. Must differ from the frontend's subscriptions.",
        pattern=PUBSUB_ID_PATTERN,
    )
    dead_letter_topic: str = option(
        DEAD_LETTER_TOPIC,
        "Pub/Sub topic id (not path) for everything that could not be answered, with the reason.",
        pattern=PUBSUB_ID_PATTERN,
    )
    handoff_topic: str = option(
        HANDOFF_TOPIC,
        "Pub/Sub topic id (not path) for conversations handed to a person (the human-agent desk).",
        pattern=PUBSUB_ID_PATTERN,
    )
    delta_topic: str = option(
        DELTA_TOPIC,
        "Pub/Sub topic id (not path) for reply deltas and retractions: the partial text of replies being "
        "written, released by sentence or clause once the output guardrails passed it (contract/deltas.py).",
        pattern=PUBSUB_ID_PATTERN,
    )
    reply_deltas: str = option(
        "on",
        "Stream text steps' replies as deltas on --delta_topic (backends that can stream: smollm2, gemini, gemma).",
        choices=REPLY_DELTA_MODES,
    )
    eval_dataset: str = option(
        EVAL_DATASET,
        "BigQuery dataset id holding the turns_v1 and sessions_v1 eval tables.",
        pattern=BIGQUERY_DATASET_PATTERN,
    )
    bigquery_endpoint: str | None = option(
        None,
        "BigQuery REST endpoint, e.g. http://127.0.0.1:9050 for the emulator; unset for the real API.",
        pattern=HTTP_URL_PATTERN,
    )
    context_store: str = option(
        "firestore",
        "Where customer context is read from (Bigtable: one row per customer, see pipeline/enrichment).",
        choices=CONTEXT_STORES,
    )
    bigtable_instance: str = option(
        BIGTABLE_INSTANCE, "Bigtable instance for --context_store.", pattern=BIGTABLE_INSTANCE_PATTERN
    )
    bigtable_table: str = option(BIGTABLE_TABLE, "Bigtable table for --context_store.", pattern=BIGTABLE_TABLE_PATTERN)
    model_backend: str = option(
        registry.DEFAULT,
        "Model behind RunInference: smollm2 (CPU, local), instant (overhead stub), gemini (API); "
        "GPU backends get an accelerator on the inference step only.",
        choices=registry.NAMES,
    )
    pack: str = option(
        DEFAULT_PACK,
        "The business the agent serves: a pack (docs/packs.md) with its tools, ids, routes and policies, found "
        "by name (SUPPORTFLOW_PACK_PATH, an installed supportflow.packs entry point, or packs/NAME).",
        pattern=PACK_PATTERN,
    )
    prompt_version: str | None = option(
        None,
        "Pin a released prompt version (the pack's prompts/ and routes/ of that version) instead of the "
        "backend's own (agents/backends/registry.py); e.g. support_tools_v1, whose chat route lets SmolLM2 write "
        "its own small talk. Unset: the backend's version.",
        pattern=PROMPT_VERSION_PATTERN,
    )
    max_agent_steps: int = option(
        4, "Model calls per turn at most (tool-calling backends); the step loop is unrolled this many times."
    )
    policy_now: str | None = option(
        None,
        "ISO time the tools judge the policy's time windows against; unset: the wall clock. "
        "The local stack pins it to its seed data's reference time.",
    )
    # The Gemini defaults are the backend's own (agents/backends/gemini.py), so they are written once.
    gemini_model: str = option(
        GEMINI_DEFAULT_MODEL, "Gemini model for --model_backend=gemini.", pattern=GEMINI_MODEL_PATTERN
    )
    gemini_base_url: str | None = option(
        None, "Another Gemini endpoint (a local server in tests); unset: Google's API.", pattern=HTTP_URL_PATTERN
    )
    gemini_deadline_s: float = option(
        RetryPolicy.deadline_s,
        "Total time one Gemini call may take, retries and back-off included; then the turn is "
        "answered with an error reply and dead-lettered.",
        limits=(1, 3600),
    )
    gemini_attempt_timeout_s: float = option(
        RetryPolicy.attempt_timeout_s, "Time one Gemini attempt may take.", limits=(0.1, 3600)
    )
    gemini_max_attempts: int = option(
        RetryPolicy.max_attempts, "Attempts per Gemini call (429, 5xx, timeouts).", limits=(1, 20)
    )
    gemini_backoff_s: float = option(
        RetryPolicy.initial_backoff_s,
        "First Gemini retry waits this long (then doubling, plus up to this much jitter), "
        "unless the server says when to retry.",
        limits=(0, 600),
    )
    gemini_max_backoff_s: float = option(
        RetryPolicy.max_backoff_s, "Longest wait between Gemini attempts.", limits=(0, 3600)
    )
    gemini_max_concurrency: int = option(8, "Concurrent Gemini requests per worker process.", limits=(1, 512))
    model_path: str | None = option(
        None,
        "gemma: a checkpoint directory or hub id for transformers, or random:gemma-3-1b / random:tiny "
        "(random weights, for throughput work). gemma_vllm: the model vLLM serves (default google/gemma-3-1b-it).",
    )
    model_device: str = option("auto", f"Device of the gemma backend: {MODEL_DEVICES_HELP}.", pattern=DEVICE_PATTERN)
    model_batch_size: int = option(
        8,
        "gemma, gemma_vllm: turns per batched model call at most (turns of different sessions share it).",
        limits=(1, 1024),
    )
    model_batch_wait_s: float | None = option(
        None,
        "gemma, gemma_vllm: wait this long at most to fill a batch (streaming); unset: a bundle's turns.",
        limits=(0.001, 60),
    )
    model_copies: int = option(
        0,
        "gemma: 0 loads a copy per SDK process; N>0 loads N copies per machine, shared by its "
        "processes (Beam's model_copies). Use 1 on a one-GPU worker.",
        limits=(0, 64),
    )
    model_max_tokens: int = option(96, "Cap on generated tokens per model call.", limits=(1, 8192))
    # llama.cpp's threads spin-wait: on a busy 2-core box, 2 threads ran 10-30x slower than 1.
    model_threads: int = option(
        1, "CPU threads per local model copy; raise it only on a worker the model has to itself.", limits=(1, 256)
    )
    # Session stage (pipeline/session.py).
    quiet_window_s: float = option(1.5, "A turn closes after this much user silence.", limits=(0.05, 600))
    max_hold_s: float = option(6.0, "A turn is never held longer than this.", limits=(0.05, 3600))
    inflight_timeout_s: float = option(
        180.0, "Release a turn whose reply never came back after this long.", limits=(1, 86400)
    )
    idle_timeout_s: float = option(600.0, "Close a session idle for this long.", limits=(1, 7 * 86400))
    max_history: int = option(20, "History entries kept per session.", limits=(2, 1000))
    max_seen_ids: int = option(2000, "Message ids remembered per session for de-duplication.", limits=(1, 1_000_000))
    # Session ownership (pipeline/ownership.py, docs/security.md).
    session_owner_collection: str = option(
        SESSION_OWNERS_COLLECTION,
        "Firestore collection recording each session's owner at its first message; a message of "
        "another customer in that session is dead-lettered, also after the pipeline lost its state.",
    )
    session_binding_key: str | None = option(
        None,
        "Key(s), comma-separated, the chat frontend signs session ids with (contract/binding.py): "
        "when set, a message whose session id is not bound to its customer is dead-lettered. Local runs "
        "only, given as SUPPORTFLOW_SESSION_BINDING_KEY: on Dataflow it would travel in the job's options, "
        "so use --session_binding_secret there. Unset (and no secret): no binding check.",
    )
    # The value stays in Secret Manager: only its name travels with the job (pipeline/secrets.py).
    session_binding_secret: str | None = option(
        None,
        "Secret Manager secret version holding the session binding key(s), e.g. "
        "projects/P/secrets/supportflow-binding/versions/latest; read by the workers at setup, re-read as it "
        "rotates. With latest, the version before it is accepted too (key rotation, docs/security.md).",
        pattern=SECRET_VERSION_PATTERN,
    )
    secret_manager_endpoint: str | None = option(
        None, "Secret Manager REST endpoint (a local server in tests); unset: Google's API.", pattern=HTTP_URL_PATTERN
    )
    # Deployment and operations: not the graph's logic (docs/operations.md).
    delivery_mode: str = option(
        "exactly_once",
        "Dataflow streaming mode: exactly_once (default) or at_least_once (cheaper, lower latency; "
        "duplicate replies possible: consumers de-duplicate on turn_id).",
        choices=DELIVERY_MODES,
        group=OPERATIONS,
    )
    inference_accelerator: str | None = option(
        None,
        "Accelerator resource hint for the inference step only, e.g. "
        "type:nvidia-l4;count:1;install-nvidia-driver. GPU model backends only; they default to an L4.",
        pattern=ACCELERATOR_PATTERN,
        group=OPERATIONS,
    )
    inference_min_ram: str | None = option(
        None,
        "Minimum worker memory for the inference step only (resource hint), e.g. 16GB.",
        pattern=MEMORY_PATTERN,
        group=OPERATIONS,
    )
    slo_turn_latency_s: float = option(
        30.0,
        "Latency SLO: a turn answered later than this after its first message counts as slow.",
        limits=(0.1, 3600),
        group=OPERATIONS,
    )
    slo_freshness_s: float = option(
        60.0,
        "Freshness SLO: an unanswered user message older than this counts as stale.",
        limits=(0.1, 86400),
        group=OPERATIONS,
    )
    freshness_probe_s: float = option(
        10.0,
        "How often the session stage reports the age of a session's oldest unanswered message.",
        limits=(0.1, 3600),
        group=OPERATIONS,
    )

    # --- Checks beyond one row's constraints. A rule between options sits on the later one and reads the earlier
    # from ``info.data``, where only values that passed their own checks are: one bad value, one problem.

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """A blank text is unset where the option may be unset; a required one then fails as missing."""
        optional = cls.model_fields[info.field_name].default is None
        return None if optional and isinstance(value, str) and not value.strip() else value

    @field_validator("*")
    @classmethod
    def _one_of_the_choices(cls, value: Any, info: ValidationInfo) -> Any:
        extra = cls.model_fields[info.field_name].json_schema_extra
        choices = extra.get("choices") if isinstance(extra, dict) else None
        if choices and value not in choices:
            raise _problem(f"--{info.field_name}={value!r} is not one of {list(choices)}")
        return value

    @field_validator("*")
    @classmethod
    def _pubsub_ids_are_distinct(cls, value: Any, info: ValidationInfo) -> Any:
        """Pub/Sub ids may not start with 'goog' (the template's regex dialect may lack look-aheads, so here),
        and no two topics, or two subscriptions, may be the same."""
        name = info.field_name or ""
        if not is_pubsub_option(name) or value is None:
            return value
        kind = "topic" if name.endswith("_topic") else "subscription"
        if value.lower().startswith("goog"):
            raise _problem(f"--{name}={value!r} is not a valid Pub/Sub {kind} id (ids may not start with 'goog')")
        for earlier, other in info.data.items():
            if other == value and is_pubsub_option(earlier) and earlier.endswith(f"_{kind}"):
                why = _COLLISIONS.get((earlier, name), "each needs its own")
                raise _problem(f"--{earlier} and --{name} are the same {kind}: {why}")
        return value

    @field_validator("*")
    @classmethod
    def _urls_reachable_from_the_workers(cls, value: Any, info: ValidationInfo) -> Any:
        on_dataflow = bool((info.context or {}).get("on_dataflow"))
        if on_dataflow and is_url_option(info.field_name or "") and value and _LOCAL_SERVER.search(value):
            raise _problem(f"--{info.field_name}={value!r} is a local server: Dataflow workers cannot reach it")
        return value

    @field_validator("model_path")
    @classmethod
    def _gemma_needs_a_checkpoint(cls, path: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("model_backend") == "gemma" and not path:
            raise _problem(
                "--model_backend=gemma needs --model_path: a checkpoint directory, a hub id, "
                "or random:gemma-3-1b / random:tiny (random weights)"
            )
        return path

    @field_validator("session_binding_key")
    @classmethod
    def _no_binding_key_in_a_dataflow_job(cls, key: str | None, info: ValidationInfo) -> str | None:
        if key and (info.context or {}).get("on_dataflow"):
            raise _problem(
                "--session_binding_key is set on Dataflow, where the job's options are readable by anyone who can "
                "view the job: put the key in Secret Manager and give --session_binding_secret "
                "(projects/P/secrets/S/versions/latest) instead"
            )
        return key

    @field_validator("session_binding_secret")
    @classmethod
    def _one_binding_key_source(cls, secret: str | None, info: ValidationInfo) -> str | None:
        if secret and info.data.get("session_binding_key"):
            raise _problem("--session_binding_key and --session_binding_secret are both set: give one of them")
        return secret

    @field_validator("max_hold_s")
    @classmethod
    def _hold_covers_the_quiet_window(cls, hold: float, info: ValidationInfo) -> float:
        quiet = info.data.get("quiet_window_s")
        if quiet is not None and quiet > hold:
            raise _problem(
                f"--quiet_window_s={quiet:g} is longer than --max_hold_s={hold:g}: "
                "a turn would always be released by the max hold, never by the quiet window"
            )
        return hold

    @field_validator("idle_timeout_s")
    @classmethod
    def _idle_outlasts_the_hold(cls, idle: float, info: ValidationInfo) -> float:
        hold = info.data.get("max_hold_s")
        if hold is not None and idle < hold:
            raise _problem(f"--idle_timeout_s={idle:g} is shorter than --max_hold_s={hold:g}")
        return idle

    @field_validator("inference_accelerator", "inference_min_ram")
    @classmethod
    def _hints_beam_accepts(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = info.field_name or ""
        backend = info.data.get("model_backend")
        if name == "inference_accelerator" and value and backend and not registry.get(backend).needs_gpu:
            gpus = sorted(registry.names(hardware=registry.Hardware.GPU)) or "none registered"
            raise _problem(
                f"--inference_accelerator is set but --model_backend={backend} does not run on a GPU "
                f"(GPU backends: {gpus})"
            )
        if value:
            try:
                parse_resource_hints({name.removeprefix("inference_"): value})
            except ValueError as exc:
                raise _problem(f"--{name}={value!r}: {exc}") from None
        return value

    @field_validator("slo_turn_latency_s")
    @classmethod
    def _slo_above_the_quiet_window(cls, turn: float, info: ValidationInfo) -> float:
        quiet = info.data.get("quiet_window_s")
        if quiet is not None and turn <= quiet:
            raise _problem(
                f"--slo_turn_latency_s={turn:g} is not above --quiet_window_s={quiet:g}: every turn would be slow"
            )
        return turn

    @field_validator("freshness_probe_s")
    @classmethod
    def _probe_within_the_slo(cls, probe: float, info: ValidationInfo) -> float:
        fresh = info.data.get("slo_freshness_s")
        if fresh is not None and probe > fresh:
            raise _problem(
                f"--freshness_probe_s={probe:g} is above --slo_freshness_s={fresh:g}: "
                "a stale message could go unreported for longer than the SLO"
            )
        return probe


# Options whose values never appear in a problem (a key pasted by mistake must not reach a log).
SECRET_OPTIONS = frozenset({"session_binding_key", "session_binding_secret"})
_COLLISIONS = {
    ("inbound_subscription", "reply_memory_subscription"): "they would steal each other's messages",
    ("reply_topic", "dead_letter_topic"): "dead letters would reach customers",
}
_LOCAL_SERVER = re.compile(r"//(localhost|127\.|\[::1\]|0\.0\.0\.0)")


# --- The table, row by row -------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option as the generators see it (argparse, environment, Flex Template, validation)."""

    name: str
    type: type  # str, int or float (a value may also be None where the default is)
    default: Any
    help: str
    choices: tuple[str, ...] | None
    limits: tuple[float, float] | None
    pattern: str | None
    group: str

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _value_type(annotation: Any) -> type:
    """``float`` for ``float`` and ``float | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    return annotation


OPTIONS: tuple[Option, ...] = tuple(
    Option(name, _value_type(f.annotation), f.default, f.description or "", **f.json_schema_extra)
    for name, f in OptionTable.model_fields.items()
)
BY_NAME: Mapping[str, Option] = {o.name: o for o in OPTIONS}


def default(name: str) -> Any:
    """The table's default of the option ``name``."""
    return BY_NAME[name].default


# --- Generated: the Beam options class ------------------------------------------------------------


class SupportflowOptions(PipelineOptions):
    """The table as Beam pipeline options (``--<name>``); read them through ``pipeline.settings.Settings``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # noqa: ANN001 - Beam's signature
        groups: dict[str, Any] = {}
        for o in OPTIONS:
            if o.group not in groups:
                groups[o.group] = parser.add_argument_group(o.group)
            kwargs: dict[str, Any] = {"default": o.default, "help": o.help}
            if o.choices:
                kwargs["choices"] = o.choices
            if o.type in (int, float):
                kwargs["type"] = o.type
            groups[o.group].add_argument(o.flag, **kwargs)


# --- Generated: environment variables -------------------------------------------------------------


def env_variable(option: str) -> str:
    """The ``SUPPORTFLOW_<NAME>`` variable of an option (``pipeline/secrets.py`` reads two of them itself)."""
    return BY_NAME[option].env


def argv_with_env(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """``argv`` plus ``--option=value`` for each ``SUPPORTFLOW_<OPTION>`` set in the environment
    whose option is not on the command line. Returns (argv, names of the options taken from the env).

    The variables become arguments (rather than being read beside them) so that the Beam options,
    which a Dataflow job carries to its workers, hold the same values as the run's Settings."""
    environ = os.environ if environ is None else environ
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    extra: list[str] = []
    applied: list[str] = []
    for o in OPTIONS:
        value = environ.get(o.env)
        if value is None or o.flag in given:
            continue
        extra.append(f"{o.flag}={value}")
        applied.append(o.name)
    return [*argv, *extra], applied
