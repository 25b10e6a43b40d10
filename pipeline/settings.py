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

The option table validates itself with pydantic (``pipeline/options.py``: each row's range,
pattern and choices, and the rules between options); ``problem_line`` words each pydantic error
as one line naming its option. What is checked here is what the table cannot see: Beam's own
options (the runner, streaming, what a Dataflow launch needs) and the environment, in
``launch_checks``. Other variables read here: the emulator hosts
(``PUBSUB_EMULATOR_HOST``, ``FIRESTORE_EMULATOR_HOST``, ``BIGTABLE_EMULATOR_HOST``),
only to warn when a Dataflow launch happens from a shell pointed at emulators.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

from agents.backends import registry
from pipeline.options import (
    BY_NAME,
    DEFAULT_PROJECT,
    OPTIONS,
    SECRET_OPTIONS,
    OptionTable,
    SupportflowOptions,
)
from pipeline.resource_hints import DEFAULT_GPU_ACCELERATOR, DEFAULT_GPU_MIN_RAM, inference_resource_hints
from pipeline.session import SessionConfig
from pipeline.validation import IMAGE_PATTERN, PATTERN_NAMES, SettingsError, is_pubsub_option

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
    # Where values came from, and what is worth a look but not fatal.
    from_env: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def project(self) -> str:
        """The project of the topics, store and dataset (``--gcp_project``, or the Dataflow job's)."""
        return self.gcp_project

    @property
    def session(self) -> SessionConfig:
        """The session stage's config (the table's limits and rules make it valid)."""
        return SessionConfig(
            quiet_window_s=self.quiet_window_s,
            max_hold_s=self.max_hold_s,
            inflight_timeout_s=self.inflight_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            max_history=self.max_history,
            max_seen_ids=self.max_seen_ids,
        )

    @property
    def backend(self) -> registry.Backend:
        return registry.get(self.model_backend)

    def backend_options(self) -> dict[str, Any]:
        """The options the model backend reads, by name: what its registry factory takes."""
        return {name: getattr(self, name) for name in self.backend.options}

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
        view = options.view_as(SupportflowOptions)
        values = {o.name: getattr(view, o.name, None) for o in OPTIONS}
        if _needs_gpu(values.get("model_backend")):  # a GPU backend gets one NVIDIA L4 and 16GB unless told otherwise
            for name, hint in (
                ("inference_accelerator", DEFAULT_GPU_ACCELERATOR),
                ("inference_min_ram", DEFAULT_GPU_MIN_RAM),
            ):
                values[name] = str(values[name] or "").strip() or hint
        launch = launch_checks(options, environ, values)
        if launch.on_dataflow and values["gcp_project"] == DEFAULT_PROJECT and launch.job_project:
            values["gcp_project"] = launch.job_project  # the local stack's name means "not chosen": the job's project
        run = {"runner": launch.runner, "on_dataflow": launch.on_dataflow, "streaming": launch.streaming}
        extra = {"from_env": tuple(from_env), "warnings": tuple(launch.warnings)}
        try:
            settings = cls.model_validate({**values, **run, **extra}, context={"on_dataflow": launch.on_dataflow})
        except pydantic.ValidationError as exc:
            table = [problem_line(e) for e in exc.errors()]
            raise SettingsError([*launch.first, *table, *launch.problems]) from None
        if launch.first or launch.problems:
            raise SettingsError([*launch.first, *launch.problems])
        return settings

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


def _needs_gpu(backend: Any) -> bool:
    return backend in registry.NAMES and registry.get(backend).needs_gpu


def problem_line(error: Mapping[str, Any]) -> str:
    """One pydantic error as one line that names the option: ``--name=value is ...``."""
    name = ".".join(map(str, error["loc"]))
    value, kind = error.get("input"), error["type"]
    row = BY_NAME.get(name)
    if kind == "supportflow":
        return error["msg"]
    if name in SECRET_OPTIONS:
        value = "(not shown)"
    if kind == "string_pattern_mismatch" and row is not None:
        what = PATTERN_NAMES.get(row.pattern or "", "value")
        if is_pubsub_option(name):
            what = "Pub/Sub " + ("topic" if name.endswith("_topic") else "subscription") + " id"
        if not str(value).strip():
            return f"--{name} is missing: a {what} is required"
        if name in SECRET_OPTIONS:
            return f"--{name} is not a {what}; the value is not shown"
        hint = " (give the id only; the project comes from --gcp_project)" if str(value).startswith("projects/") else ""
        return f"--{name}={value!r} is not a valid {what}{hint}"
    if kind in ("greater_than_equal", "less_than_equal") and row is not None and row.limits:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        return f"--{name}={shown} is out of range [{row.limits[0]:g}, {row.limits[1]:g}]"
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type"):
        return f"--{name}={value!r} is not a number"
    return f"--{name}={value!r}: {error['msg']}"


@dataclass
class Launch:
    """What Beam's own options and the environment say about a run; the option table cannot see them."""

    runner: str
    on_dataflow: bool
    streaming: bool
    job_project: str | None
    first: list[str] = field(default_factory=list)  # reported before the table's problems
    problems: list[str] = field(default_factory=list)  # after them
    warnings: list[str] = field(default_factory=list)


def launch_checks(options: PipelineOptions, environ: Mapping[str, str], values: Mapping[str, Any]) -> Launch:
    """The runner and streaming mode, what a Dataflow launch needs, the delivery mode's one place, and warnings.
    ``values``: the table's raw values."""
    std = options.view_as(StandardOptions)
    gcp = options.view_as(GoogleCloudOptions)
    runner = std.runner if isinstance(std.runner, str) else type(std.runner).__name__ if std.runner else ""
    on_dataflow = "dataflow" in runner.lower()
    launch = Launch(runner or "DirectRunner", on_dataflow, bool(std.streaming), gcp.project)
    if not std.streaming:
        launch.first.append("--streaming is off: supportflow is a streaming service (pipeline.main turns it on)")
    gpu = _needs_gpu(values.get("model_backend"))
    if gpu and "install-nvidia-driver" not in str(values.get("inference_accelerator")):
        launch.warnings.append(
            "--inference_accelerator has no install-nvidia-driver: the worker image must bring the driver"
        )
    mode = values.get("delivery_mode")
    if AT_LEAST_ONCE_SERVICE_OPTION in (gcp.dataflow_service_options or []) and mode != "at_least_once":
        launch.problems.append(
            f"--dataflow_service_options={AT_LEAST_ONCE_SERVICE_OPTION} contradicts --delivery_mode={mode}: "
            "choose the mode with --delivery_mode only"
        )
    if on_dataflow:
        _dataflow_checks(options, environ, gpu, launch)
    elif mode == "at_least_once":
        launch.warnings.append("--delivery_mode=at_least_once only changes Dataflow jobs")
    return launch


def _dataflow_checks(options: PipelineOptions, environ: Mapping[str, str], gpu: bool, launch: Launch) -> None:
    gcp = options.view_as(GoogleCloudOptions)
    workers = options.view_as(WorkerOptions)
    setup = options.view_as(SetupOptions)
    problems = launch.problems
    if not gcp.project:
        problems.append("--project is missing: the Dataflow job's project is required")
    if not gcp.region:
        problems.append("--region is missing: the Dataflow region is required (e.g. us-central1)")
    if not (gcp.temp_location or gcp.staging_location):
        problems.append("--temp_location is missing: a gs:// path for Dataflow's temporary files is required")
    for name in ("temp_location", "staging_location"):
        value = getattr(gcp, name)
        if value and not str(value).startswith("gs://"):
            problems.append(f"--{name}={value!r} must be a gs:// path on Dataflow")
    if not workers.max_num_workers:
        problems.append("--max_num_workers is missing: autoscaling on Dataflow must be bounded")
    elif workers.num_workers and workers.num_workers > workers.max_num_workers:
        problems.append(f"--num_workers={workers.num_workers} is above --max_num_workers={workers.max_num_workers}")
    image = workers.sdk_container_image
    if gpu and not image:
        problems.append(
            "--sdk_container_image is missing: a GPU backend needs the GPU worker image (deploy/Dockerfile.gpu)"
        )
    elif not (image or setup.setup_file or setup.requirements_file):
        problems.append(
            "--sdk_container_image is missing: Dataflow workers need the project's code and dependencies "
            "(build deploy/Dockerfile, or deploy/Dockerfile.gpu for a GPU backend)"
        )
    if image and not re.fullmatch(IMAGE_PATTERN, str(image)):
        problems.append(f"--sdk_container_image={image!r} is not an {PATTERN_NAMES[IMAGE_PATTERN]}")
    if gpu and image and "gpu" not in str(image).lower():
        launch.warnings.append(
            f"--sdk_container_image={image!r} does not look like the GPU image (deploy/Dockerfile.gpu)"
        )
    experiments = options.view_as(DebugOptions).experiments or []
    if any(e in ("disable_streaming_engine", "disable_runner_v2") for e in experiments):
        problems.append("Streaming Engine and Runner v2 are required: drop disable_streaming_engine/disable_runner_v2")
    for var in EMULATOR_VARIABLES:
        if environ.get(var):
            launch.warnings.append(f"{var} is set in the launching shell: Dataflow workers ignore it")
