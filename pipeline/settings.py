"""One validated settings object for a run, built before the graph.

``Settings.from_options(options)`` reads the pipeline options (command line,
Flex Template parameters, ``SUPPORTFLOW_*`` variables merged in by
``pipeline.options.argv_with_env``) and the environment, checks everything that
can be checked before a job exists, and raises ``SettingsError`` listing *every*
problem at once, each naming the option to fix. ``pipeline/main.py`` calls it
before building the graph, so a bad launch fails on the launcher in seconds
instead of on the workers in minutes.

``Settings`` is typed and frozen: it is an ``OptionTable`` (every option, one typed
attribute each) plus what the run decided (runner, resolved project, the
session stage's ``SessionConfig``, GPU hint defaults, warnings). ``graph.build``
takes it; nothing downstream reads raw options.

Each option's range, pattern and choices come from its row in the table
(``pipeline/options.py``); the rules between options are the ``_Builder``'s
methods below. Other variables read here: the emulator hosts
(``PUBSUB_EMULATOR_HOST``, ``FIRESTORE_EMULATOR_HOST``, ``BIGTABLE_EMULATOR_HOST``),
only to warn when a Dataflow launch happens from a shell pointed at emulators.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.transforms.resources import parse_resource_hints

from agents.backends import registry
from pipeline.options import (
    BY_NAME,
    DEFAULT_PROJECT,
    DELIVERY_MODES,
    OPTIONS,
    OptionTable,
    SupportflowOptions,
    option_names,
)
from pipeline.resource_hints import DEFAULT_GPU_ACCELERATOR, DEFAULT_GPU_MIN_RAM, inference_resource_hints
from pipeline.session import SessionConfig
from pipeline.validation import (
    ACCELERATOR_PATTERN,
    BIGQUERY_DATASET_PATTERN,
    BIGTABLE_INSTANCE_PATTERN,
    BIGTABLE_TABLE_PATTERN,
    GEMINI_MODEL_PATTERN,
    HTTP_URL_PATTERN,
    IMAGE_PATTERN,
    MEMORY_PATTERN,
    PROJECT_PATTERN,
    PUBSUB_ID_PATTERN,
    SECRET_VERSION_PATTERN,
    SettingsError,
    is_pubsub_option,
    is_url_option,
)

# Dataflow service option for at-least-once streaming (no exactly-once de-duplication).
AT_LEAST_ONCE_SERVICE_OPTION = "streaming_mode_at_least_once"

EMULATOR_VARIABLES = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "BIGTABLE_EMULATOR_HOST")


class Settings(OptionTable):
    """Everything a run decides, validated: every option (typed, as in ``OptionTable``; ``gcp_project`` and
    the inference hints resolved) and the run's own facts. Built by ``Settings.from_options``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    runner: str
    on_dataflow: bool
    streaming: bool
    session: SessionConfig  # the session stage's config, validated once here
    # Where values came from, and what is worth a look but not fatal.
    from_env: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def project(self) -> str:
        """The project of the topics, store and dataset (``--gcp_project``, or the Dataflow job's)."""
        return self.gcp_project

    @property
    def backend(self) -> registry.Backend:
        return registry.get(self.model_backend)

    def backend_options(self) -> dict[str, Any]:
        """The options the model backend reads, by name: what its registry factory takes."""
        return {name: getattr(self, name) for name in self.backend.options}

    @property
    def uses_gpu(self) -> bool:
        return self.backend.needs_gpu

    @property
    def at_least_once(self) -> bool:
        return self.delivery_mode == "at_least_once"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    @classmethod
    def from_options(
        cls,
        options: PipelineOptions,
        environ: Mapping[str, str] | None = None,
        from_env: Sequence[str] = (),
    ) -> Settings:
        """Validate ``options`` (and the environment); raise ``SettingsError`` listing every problem."""
        environ = os.environ if environ is None else environ
        return _Builder(options, environ).build(tuple(from_env))

    @classmethod
    def local(cls, *argv: str) -> Settings:
        """A local run's settings: the table's defaults but for ``argv``, no environment (tools, evals, tests)."""
        return cls.from_options(PipelineOptions(["--streaming", "--runner=BundleBasedDirectRunner", *argv]), environ={})

    def apply_to(self, options: PipelineOptions) -> None:
        """Write the decisions that live in pipeline options back into them (before the graph is built):
        the resolved resource project, and the Dataflow streaming mode."""
        o = options.view_as(SupportflowOptions)
        o.gcp_project = self.project
        if self.on_dataflow and self.at_least_once:
            gcp = options.view_as(GoogleCloudOptions)
            service = list(gcp.dataflow_service_options or [])
            if AT_LEAST_ONCE_SERVICE_OPTION not in service:
                service.append(AT_LEAST_ONCE_SERVICE_OPTION)
            gcp.dataflow_service_options = service

    def describe(self) -> str:
        """One log line: what this run is."""
        hints = inference_resource_hints(self)
        return (
            f"supportflow on {self.runner}: project={self.project} model={self.model_backend}"
            f" delivery={self.delivery_mode} inference_hints={hints or 'none'}"
            f" slo(turn<{self.slo_turn_latency_s:g}s, freshness<{self.slo_freshness_s:g}s)"
            + (f" from_env={list(self.from_env)}" if self.from_env else "")
        )


class _Builder:
    def __init__(self, options: PipelineOptions, environ: Mapping[str, str]) -> None:
        self.options = options
        self.environ = environ
        self.o = options.view_as(SupportflowOptions)
        self.problems: list[str] = []
        self.numbers: dict[str, float] = {}
        self.warnings: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def _get(self, name: str) -> Any:
        return getattr(self.o, name, None)

    def _text(self, name: str, pattern: str, what: str, *, required: bool = True) -> str | None:
        value = self._get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.problem(f"--{name} is missing: {what} is required")
            return None
        value = str(value).strip()
        if pattern == PUBSUB_ID_PATTERN and value.lower().startswith("goog"):
            self.problem(f"--{name}={value!r} is not a valid {what} (ids may not start with 'goog')")
        elif not re.fullmatch(pattern, value):
            hint = ""
            if value.startswith("projects/"):
                hint = " (give the id only; the project comes from --gcp_project)"
            self.problem(f"--{name}={value!r} is not a valid {what}{hint}")
        return value

    def _number(self, name: str) -> float:
        """The option's value as a number, checked against its row's limits once (a problem is reported once)."""
        if name in self.numbers:
            return self.numbers[name]
        value = self._get(name)
        low, high = BY_NAME[name].limits or (float("-inf"), float("inf"))
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.problem(f"--{name}={value!r} is not a number")
            number = low
        else:
            if not low <= number <= high:
                self.problem(f"--{name}={value!r} is out of range [{low:g}, {high:g}]")
        self.numbers[name] = number
        return number

    def ranges(self) -> None:
        """Every option with limits in its table row, in table order."""
        for o in OPTIONS:
            if o.limits:
                self._number(o.name)

    # -- groups ------------------------------------------------------------------------------

    def runner(self) -> tuple[str, bool, bool]:
        std = self.options.view_as(StandardOptions)
        runner = std.runner if isinstance(std.runner, str) else type(std.runner).__name__ if std.runner else ""
        on_dataflow = "dataflow" in (runner or "").lower()
        if not std.streaming:
            self.problem("--streaming is off: supportflow is a streaming service (pipeline.main turns it on)")
        return runner or "DirectRunner", on_dataflow, bool(std.streaming)

    def project(self, on_dataflow: bool) -> str:
        gcp = self.options.view_as(GoogleCloudOptions)
        project = self._get("gcp_project") or ""
        if on_dataflow and project == DEFAULT_PROJECT and gcp.project:
            # The local stack's project name means "not chosen": on Dataflow the job's project is meant.
            project = gcp.project
        if not project:
            self.problem("--gcp_project is missing: the project of the topics, store and dataset is required")
            return ""
        if not re.fullmatch(PROJECT_PATTERN, project):
            self.problem(f"--gcp_project={project!r} is not a valid project id")
        return project

    def dataflow(self, settings_gpu: bool) -> None:
        gcp = self.options.view_as(GoogleCloudOptions)
        workers = self.options.view_as(WorkerOptions)
        setup = self.options.view_as(SetupOptions)
        if not gcp.project:
            self.problem("--project is missing: the Dataflow job's project is required")
        if not gcp.region:
            self.problem("--region is missing: the Dataflow region is required (e.g. us-central1)")
        if not (gcp.temp_location or gcp.staging_location):
            self.problem("--temp_location is missing: a gs:// path for Dataflow's temporary files is required")
        for name in ("temp_location", "staging_location"):
            value = getattr(gcp, name)
            if value and not str(value).startswith("gs://"):
                self.problem(f"--{name}={value!r} must be a gs:// path on Dataflow")
        if not workers.max_num_workers:
            self.problem("--max_num_workers is missing: autoscaling on Dataflow must be bounded")
        elif workers.num_workers and workers.num_workers > workers.max_num_workers:
            self.problem(f"--num_workers={workers.num_workers} is above --max_num_workers={workers.max_num_workers}")
        image = workers.sdk_container_image
        if settings_gpu and not image:
            self.problem(
                "--sdk_container_image is missing: a GPU backend needs the GPU worker image (deploy/Dockerfile.gpu)"
            )
        elif not (image or setup.setup_file or setup.requirements_file):
            self.problem(
                "--sdk_container_image is missing: Dataflow workers need the project's code and dependencies "
                "(build deploy/Dockerfile, or deploy/Dockerfile.gpu for a GPU backend)"
            )
        if image and not re.fullmatch(IMAGE_PATTERN, str(image)):
            self.problem(f"--sdk_container_image={image!r} is not an image reference with a tag or digest")
        if settings_gpu and image and "gpu" not in str(image).lower():
            self.warnings.append(
                f"--sdk_container_image={image!r} does not look like the GPU image (deploy/Dockerfile.gpu)"
            )
        experiments = self.options.view_as(DebugOptions).experiments or []
        if any(e in ("disable_streaming_engine", "disable_runner_v2") for e in experiments):
            self.problem("Streaming Engine and Runner v2 are required: drop disable_streaming_engine/disable_runner_v2")
        for var in EMULATOR_VARIABLES:
            if self.environ.get(var):
                self.warnings.append(f"{var} is set in the launching shell: Dataflow workers ignore it")

    def delivery(self, on_dataflow: bool) -> str:
        mode = self._get("delivery_mode") or "exactly_once"
        if mode not in DELIVERY_MODES:
            self.problem(f"--delivery_mode={mode!r} must be one of {list(DELIVERY_MODES)}")
        service = self.options.view_as(GoogleCloudOptions).dataflow_service_options or []
        if AT_LEAST_ONCE_SERVICE_OPTION in service and mode != "at_least_once":
            self.problem(
                f"--dataflow_service_options={AT_LEAST_ONCE_SERVICE_OPTION} contradicts --delivery_mode={mode}: "
                "choose the mode with --delivery_mode only"
            )
        return mode

    def model(self) -> tuple[str, str]:
        backends = registry.NAMES
        backend = self._get("model_backend")
        if backend not in backends:
            self.problem(f"--model_backend={backend!r} is not a model backend; choose one of {list(backends)}")
        gemini = self._text("gemini_model", GEMINI_MODEL_PATTERN, "Gemini model name (e.g. gemini-2.5-flash)")
        wait = self._get("model_batch_wait_s")
        try:
            wait_ok = wait is None or 0 < float(wait) <= 60
        except (TypeError, ValueError):
            wait_ok = False
        if not wait_ok:
            self.problem(f"--model_batch_wait_s={wait!r} is not a number of seconds in (0, 60]")
        if backend == "gemma" and not self._get("model_path"):
            self.problem(
                "--model_backend=gemma needs --model_path: a checkpoint directory, a hub id, "
                "or random:gemma-3-1b / random:tiny (random weights)"
            )
        device = str(self._get("model_device") or "auto")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            self.problem(f"--model_device={device!r} is not a device; use auto, cpu, cuda or cuda:N")
        return str(backend), gemini or ""

    def accelerator(self, backend: str, on_dataflow: bool) -> tuple[str | None, str | None]:
        accelerator = self._text(
            "inference_accelerator",
            ACCELERATOR_PATTERN,
            "accelerator hint (type:...;count:N[;install-nvidia-driver])",
            required=False,
        )
        min_ram = self._text("inference_min_ram", MEMORY_PATTERN, "memory size (e.g. 16GB)", required=False)
        gpu = backend in registry.NAMES and registry.get(backend).needs_gpu
        if accelerator and not gpu:
            self.problem(
                f"--inference_accelerator is set but --model_backend={backend} does not run on a GPU "
                f"(GPU backends: {sorted(registry.names(hardware=registry.Hardware.GPU)) or 'none registered'})"
            )
        if gpu:
            accelerator = accelerator or DEFAULT_GPU_ACCELERATOR
            min_ram = min_ram or DEFAULT_GPU_MIN_RAM
            if "install-nvidia-driver" not in accelerator:
                self.warnings.append(
                    "--inference_accelerator has no install-nvidia-driver: the worker image must bring the driver"
                )
        for name, value in (("accelerator", accelerator), ("min_ram", min_ram)):
            if value and re.fullmatch(BY_NAME[f"inference_{name}"].pattern or "", value):
                try:
                    parse_resource_hints({name: value})
                except ValueError as exc:
                    self.problem(f"--inference_{name}={value!r}: {exc}")
        return accelerator, min_ram

    def session(self) -> SessionConfig | None:
        quiet, hold = self._number("quiet_window_s"), self._number("max_hold_s")
        inflight, idle = self._number("inflight_timeout_s"), self._number("idle_timeout_s")
        history, seen = self._number("max_history"), self._number("max_seen_ids")
        if quiet > hold:
            self.problem(
                f"--quiet_window_s={quiet:g} is longer than --max_hold_s={hold:g}: "
                "a turn would always be released by the max hold, never by the quiet window"
            )
        if idle < hold:
            self.problem(f"--idle_timeout_s={idle:g} is shorter than --max_hold_s={hold:g}")
        try:
            return SessionConfig(
                quiet_window_s=quiet,
                max_hold_s=hold,
                inflight_timeout_s=inflight,
                idle_timeout_s=idle,
                max_history=int(history),
                max_seen_ids=int(seen),
            )
        except ValueError as exc:
            if not self.problems:
                self.problem(f"session options: {exc}")
            return None

    def slo(self, quiet: float) -> tuple[float, float, float]:
        turn, fresh, probe = (
            self._number("slo_turn_latency_s"),
            self._number("slo_freshness_s"),
            self._number("freshness_probe_s"),
        )
        if turn <= quiet:
            self.problem(
                f"--slo_turn_latency_s={turn:g} is not above --quiet_window_s={quiet:g}: every turn would be slow"
            )
        if probe > fresh:
            self.problem(
                f"--freshness_probe_s={probe:g} is above --slo_freshness_s={fresh:g}: "
                "a stale message could go unreported for longer than the SLO"
            )
        return turn, fresh, probe

    def pubsub_ids(self) -> dict[str, str]:
        """Every ``*_topic`` / ``*_subscription`` option: required, a valid id, and no two the same."""
        descriptions = {
            "inbound_subscription": "Pub/Sub subscription id (the inbound chat messages)",
            "reply_topic": "Pub/Sub topic id (the replies)",
            "reply_memory_subscription": "Pub/Sub subscription id (the session memory, on the reply topic)",
            "dead_letter_topic": "Pub/Sub topic id (the dead letters)",
        }
        ids: dict[str, str] = {}
        for name in option_names():
            if is_pubsub_option(name):
                kind = "topic" if name.endswith("_topic") else "subscription"
                what = descriptions.get(name, f"Pub/Sub {kind} id")
                ids[name] = self._text(name, PUBSUB_ID_PATTERN, what) or ""
        reasons = {
            ("inbound_subscription", "reply_memory_subscription"): "they would steal each other's messages",
            ("reply_topic", "dead_letter_topic"): "dead letters would reach customers",
        }
        seen: dict[tuple[str, str], str] = {}
        for name, value in ids.items():
            kind = "topic" if name.endswith("_topic") else "subscription"
            if not value:
                continue
            if (kind, value) in seen:
                first = seen[(kind, value)]
                reason = reasons.get((first, name), "each needs its own")
                self.problem(f"--{first} and --{name} are the same {kind}: {reason}")
            else:
                seen[(kind, value)] = name
        return ids

    def binding_key(self, on_dataflow: bool) -> None:
        """The session binding key: a secret's name may travel with a job, the key itself may not."""
        secret = self._get("session_binding_secret")
        if secret and not re.fullmatch(SECRET_VERSION_PATTERN, str(secret)):
            # Not echoed: a key pasted here by mistake must not reach a log.
            self.problem(
                "--session_binding_secret is not a secret version name "
                "(projects/P/secrets/S/versions/latest or /versions/N; the value is not shown)"
            )
        if secret and self._get("session_binding_key"):
            self.problem("--session_binding_key and --session_binding_secret are both set: give one of them")
        elif on_dataflow and self._get("session_binding_key"):
            self.problem(
                "--session_binding_key is set on Dataflow, where the job's options are readable by anyone who can "
                "view the job: put the key in Secret Manager and give --session_binding_secret "
                "(projects/P/secrets/S/versions/latest) instead"
            )

    # -- all ---------------------------------------------------------------------------------

    def build(self, from_env: tuple[str, ...]) -> Settings:
        runner, on_dataflow, streaming = self.runner()
        project = self.project(on_dataflow)
        ids = self.pubsub_ids()
        dataset = self._text("eval_dataset", BIGQUERY_DATASET_PATTERN, "BigQuery dataset id") or ""
        urls = {
            name: self._text(name, HTTP_URL_PATTERN, "http(s) URL", required=False)
            for name in option_names()
            if is_url_option(name)
        }
        for name, url in urls.items():
            if on_dataflow and url and re.search(r"//(localhost|127\.|\[::1\]|0\.0\.0\.0)", url):
                self.problem(f"--{name}={url!r} is a local server: Dataflow workers cannot reach it")
        endpoint = urls.get("bigquery_endpoint")
        if self._get("context_store") == "bigtable":
            self._text("bigtable_instance", BIGTABLE_INSTANCE_PATTERN, "Bigtable instance id")
            self._text("bigtable_table", BIGTABLE_TABLE_PATTERN, "Bigtable table id")
        backend, gemini = self.model()
        self.binding_key(on_dataflow)
        self.ranges()
        gpu_backend = backend in registry.NAMES and registry.get(backend).needs_gpu
        accelerator, min_ram = self.accelerator(backend, on_dataflow)
        delivery = self.delivery(on_dataflow)
        if on_dataflow:
            self.dataflow(gpu_backend)
        elif delivery == "at_least_once":
            self.warnings.append("--delivery_mode=at_least_once only changes Dataflow jobs")
        session = self.session()
        self.slo(session.quiet_window_s if session else 0.0)
        if self.problems or session is None:
            raise SettingsError(self.problems or ["session options are invalid"])
        values = {o.name: self._get(o.name) for o in OPTIONS}
        # Numbers as the table types them (a value given programmatically may be a string), checked texts stripped.
        values.update({o.name: o.type(self._number(o.name)) for o in OPTIONS if o.limits})
        values.update(ids)
        values.update(
            gcp_project=project,
            eval_dataset=dataset,
            bigquery_endpoint=endpoint,
            model_backend=backend,
            gemini_model=gemini,
            inference_accelerator=accelerator,
            inference_min_ram=min_ram,
            delivery_mode=delivery,
        )
        try:
            return Settings(
                **values,
                runner=runner,
                on_dataflow=on_dataflow,
                streaming=streaming,
                session=session,
                from_env=from_env,
                warnings=tuple(self.warnings),
            )
        except pydantic.ValidationError as exc:  # a type the checks above do not cover (e.g. max_agent_steps="x")
            raise SettingsError(
                [f"--{'.'.join(map(str, e['loc']))}={e['input']!r}: {e['msg']}" for e in exc.errors()]
            ) from None
