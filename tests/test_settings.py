"""pipeline.settings: one validated settings object, clear errors, environment variables, right-fitting hints."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.portability.common_urns import resource_hints as hint_urns

import pipeline.options as options_module
from pipeline.options import OPTIONS, argv_with_env
from pipeline.resource_hints import (
    DEFAULT_GPU_ACCELERATOR,
    DEFAULT_GPU_MIN_RAM,
    inference_resource_hints,
    is_inference_step,
    pin_inference_resources,
)
from pipeline.settings import AT_LEAST_ONCE_SERVICE_OPTION, Settings, SettingsError

LOCAL = ["--streaming", "--runner=BundleBasedDirectRunner"]
IMAGE = "us-central1-docker.pkg.dev/my-project/supportflow/worker:1.0"
GPU_IMAGE = "us-central1-docker.pkg.dev/my-project/supportflow/worker-gpu:1.0"
DATAFLOW = [
    "--streaming",
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
    "--max_num_workers=5",
    f"--sdk_container_image={IMAGE}",
]


def settings(*argv: str, base: list[str] = LOCAL, environ: dict[str, str] | None = None) -> Settings:
    return Settings.from_options(PipelineOptions([*base, *argv]), environ={} if environ is None else environ)


def problems(*argv: str, base: list[str] = LOCAL, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as err:
        settings(*argv, base=base, environ=environ)
    return err.value.problems


def one_problem(*argv: str, base: list[str] = LOCAL) -> str:
    found = problems(*argv, base=base)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def gpu_backend() -> str:
    """A GPU backend that needs no other option (Gemma on vLLM)."""
    return "gemma_vllm"


# --- the local defaults ------------------------------------------------------------------------


def test_local_defaults_are_valid() -> None:
    s = settings()
    assert s.runner == "BundleBasedDirectRunner" and not s.on_dataflow and s.streaming
    assert s.project == options_module.DEFAULT_PROJECT
    assert s.model_backend == "smollm2" and not s.backend.needs_gpu
    assert s.delivery_mode == "exactly_once" and not s.at_least_once
    assert inference_resource_hints(s) == {}
    assert s.session.quiet_window_s == 1.5 and s.session.max_hold_s == 6.0
    assert s.topic_path(s.reply_topic) == "projects/supportflow-local/topics/chat-replies"
    assert (
        s.subscription_path(s.inbound_subscription) == "projects/supportflow-local/subscriptions/chat-inbound-pipeline"
    )
    assert s.warnings == ()
    assert "model=smollm2" in s.describe()


def test_the_local_stack_command_line_is_valid() -> None:
    # What stack/service.py runs.
    settings("--bigquery_endpoint=http://127.0.0.1:9050", "--model_backend=instant")


# --- clear errors ------------------------------------------------------------------------------


def test_missing_topic() -> None:
    assert one_problem("--reply_topic=") == "--reply_topic is missing: a Pub/Sub topic id is required"


def test_missing_subscription() -> None:
    assert "--inbound_subscription is missing" in one_problem("--inbound_subscription=  ")


def test_topic_given_as_a_path_gets_a_hint() -> None:
    problem = one_problem("--dead_letter_topic=projects/p/topics/dl")
    assert "--dead_letter_topic='projects/p/topics/dl' is not a valid Pub/Sub topic id" in problem
    assert "give the id only" in problem


def test_pubsub_ids_may_not_start_with_goog() -> None:
    assert "may not start with 'goog'" in one_problem("--reply_topic=google-replies")


def test_bad_model_name() -> None:
    problem = one_problem("--model_backend=gemini", "--gemini_model=gpt-4o")
    assert problem == "--gemini_model='gpt-4o' is not a valid Gemini model name (e.g. gemini-2.5-flash)"


@pytest.mark.parametrize(
    "name", ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash-001", "models/gemini-2.5-pro"]
)
def test_good_model_names(name: str) -> None:
    assert settings("--model_backend=gemini", f"--gemini_model={name}").gemini_model == name


def test_unknown_backend_given_programmatically() -> None:
    # argparse's choices guard the command line; keyword options bypass it.
    with pytest.raises(SettingsError) as err:
        Settings.from_options(PipelineOptions([], streaming=True, model_backend="llama"), environ={})
    assert err.value.problems == [
        "--model_backend='llama' is not one of ['smollm2', 'instant', 'gemini', 'gemma', 'gemma_vllm']"
    ]


def test_gpu_option_without_a_gpu_model() -> None:
    problem = one_problem(f"--inference_accelerator={DEFAULT_GPU_ACCELERATOR}")
    assert problem.startswith("--inference_accelerator is set but --model_backend=smollm2 does not run on a GPU")


def test_malformed_accelerator(gpu_backend: str) -> None:
    problem = one_problem(f"--model_backend={gpu_backend}", "--inference_accelerator=nvidia-l4")
    assert "--inference_accelerator='nvidia-l4' is not a valid accelerator hint" in problem


def test_malformed_memory_hint() -> None:
    assert "--inference_min_ram='lots' is not a valid memory size" in one_problem("--inference_min_ram=lots")


def test_quiet_window_longer_than_max_hold() -> None:
    problem = one_problem("--quiet_window_s=8", "--max_hold_s=6")
    assert problem.startswith("--quiet_window_s=8 is longer than --max_hold_s=6")


def test_idle_timeout_shorter_than_max_hold() -> None:
    assert one_problem("--idle_timeout_s=3") == "--idle_timeout_s=3 is shorter than --max_hold_s=6"


def test_numbers_out_of_range() -> None:
    assert one_problem("--model_max_tokens=0") == "--model_max_tokens=0 is out of range [1, 8192]"
    assert one_problem("--max_history=1") == "--max_history=1 is out of range [2, 1000]"


def test_slo_thresholds_must_make_sense() -> None:
    assert "every turn would be slow" in one_problem("--slo_turn_latency_s=1")
    assert "--freshness_probe_s=120 is above --slo_freshness_s=60" in one_problem("--freshness_probe_s=120")


def test_subscriptions_and_topics_must_not_collide() -> None:
    found = problems("--reply_memory_subscription=chat-inbound-pipeline", "--dead_letter_topic=chat-replies")
    assert any("would steal each other's messages" in p for p in found)
    assert any("dead letters would reach customers" in p for p in found)


def test_every_problem_is_reported_at_once() -> None:
    found = problems("--reply_topic=", "--gemini_model=x", "--quiet_window_s=9", "--eval_dataset=bad-name")
    assert [p.split("=")[0].split(" ")[0] for p in found] == [
        "--reply_topic",
        "--eval_dataset",
        "--gemini_model",
        "--quiet_window_s",
    ]
    text = str(SettingsError(found))
    assert text.startswith("invalid supportflow settings:\n  - --reply_topic is missing")


def test_a_rule_between_options_waits_for_both_to_be_valid() -> None:
    # One bad value, one problem: the quiet window out of range is not also "longer than the max hold".
    assert one_problem("--quiet_window_s=9000") == "--quiet_window_s=9000 is out of range [0.05, 600]"
    assert one_problem("--model_batch_wait_s=0") == "--model_batch_wait_s=0 is out of range [0.001, 60]"


def test_blank_optional_texts_are_unset_and_devices_are_checked() -> None:
    s = settings("--inference_min_ram=  ", "--gemini_base_url=")
    assert s.inference_min_ram is None and s.gemini_base_url is None
    assert one_problem("--model_device=tpu") == "--model_device='tpu' is not a valid device (auto, cpu, cuda or cuda:N)"
    assert settings("--model_device=cuda:1").model_device == "cuda:1"


def test_bigtable_names_are_checked_as_the_flex_template_checks_them() -> None:
    # Whatever the store: the template's regexes reject a bad name for every store, and so do the settings.
    for store in ("firestore", "bigtable"):
        problem = one_problem(f"--context_store={store}", "--bigtable_instance=X")
        assert problem == "--bigtable_instance='X' is not a valid Bigtable instance id"


# --- Dataflow ---------------------------------------------------------------------------------


def test_dataflow_launch_is_valid_and_resolves_the_project() -> None:
    s = settings(base=DATAFLOW)
    assert s.on_dataflow and s.runner == "DataflowRunner"
    assert s.project == "my-project"  # --gcp_project left at the local default means "the job's project"
    assert settings("--gcp_project=data-project", base=DATAFLOW).project == "data-project"


def test_dataflow_needs_region_bucket_bounded_workers_and_an_image() -> None:
    found = problems(base=["--streaming", "--runner=DataflowRunner", "--project=my-project"])
    assert found == [
        "--region is missing: the Dataflow region is required (e.g. us-central1)",
        "--temp_location is missing: a gs:// path for Dataflow's temporary files is required",
        "--max_num_workers is missing: autoscaling on Dataflow must be bounded",
        "--sdk_container_image is missing: Dataflow workers need the project's code and dependencies "
        "(build deploy/Dockerfile, or deploy/Dockerfile.gpu for a GPU backend)",
    ]


def test_dataflow_worker_counts_and_paths() -> None:
    assert one_problem("--num_workers=9", base=DATAFLOW) == "--num_workers=9 is above --max_num_workers=5"
    assert "must be a gs:// path" in one_problem("--staging_location=/tmp/staging", base=DATAFLOW)
    assert "not an image reference" in one_problem("--sdk_container_image=worker", base=DATAFLOW)


def test_dataflow_cannot_reach_a_local_emulator() -> None:
    problem = one_problem("--bigquery_endpoint=http://127.0.0.1:9050", base=DATAFLOW)
    assert "is a local server: Dataflow workers cannot reach it" in problem


def test_emulator_variables_in_a_dataflow_launch_are_a_warning() -> None:
    s = settings(base=DATAFLOW, environ={"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    assert s.warnings == ("PUBSUB_EMULATOR_HOST is set in the launching shell: Dataflow workers ignore it",)


def test_streaming_engine_cannot_be_switched_off() -> None:
    assert "Streaming Engine and Runner v2 are required" in one_problem(
        "--experiments=disable_streaming_engine", base=DATAFLOW
    )


def test_exactly_once_is_the_default_and_at_least_once_is_a_service_option() -> None:
    options = PipelineOptions([*DATAFLOW, "--delivery_mode=at_least_once"])
    s = Settings.from_options(options, environ={})
    assert s.at_least_once
    s.apply_to(options)
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [AT_LEAST_ONCE_SERVICE_OPTION]
    s.apply_to(options)  # idempotent
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [AT_LEAST_ONCE_SERVICE_OPTION]

    options = PipelineOptions(DATAFLOW)
    Settings.from_options(options, environ={}).apply_to(options)
    assert not options.view_as(GoogleCloudOptions).dataflow_service_options


def test_the_streaming_mode_is_chosen_in_one_place() -> None:
    problem = one_problem(f"--dataflow_service_options={AT_LEAST_ONCE_SERVICE_OPTION}", base=DATAFLOW)
    assert "contradicts --delivery_mode=exactly_once" in problem


# --- GPU right-fitting -----------------------------------------------------------------------------


def test_gpu_backend_gets_an_l4_and_memory_on_the_inference_step_only(gpu_backend: str) -> None:
    s = settings(f"--model_backend={gpu_backend}")
    assert s.backend.needs_gpu
    assert inference_resource_hints(s) == {"accelerator": DEFAULT_GPU_ACCELERATOR, "min_ram": DEFAULT_GPU_MIN_RAM}
    s = settings(f"--model_backend={gpu_backend}", "--inference_accelerator=type:nvidia-tesla-t4;count:2")
    assert inference_resource_hints(s)["accelerator"] == "type:nvidia-tesla-t4;count:2"
    assert s.warnings == (
        "--inference_accelerator has no install-nvidia-driver: the worker image must bring the driver",
    )


def test_gpu_backend_on_dataflow_needs_the_gpu_image(gpu_backend: str) -> None:
    base = [a for a in DATAFLOW if not a.startswith("--sdk_container_image")]
    assert "a GPU backend needs the GPU worker image" in one_problem(f"--model_backend={gpu_backend}", base=base)
    s = settings(f"--model_backend={gpu_backend}", f"--sdk_container_image={IMAGE}", base=base)
    assert s.warnings == (f"--sdk_container_image={IMAGE!r} does not look like the GPU image (deploy/Dockerfile.gpu)",)
    assert settings(f"--model_backend={gpu_backend}", f"--sdk_container_image={GPU_IMAGE}", base=base).warnings == ()


def test_cpu_memory_hint_is_allowed() -> None:
    assert inference_resource_hints(settings("--inference_min_ram=8GB")) == {"min_ram": "8GB"}


class _Model(beam.PTransform):
    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Call" >> beam.Map(lambda x: x)


class _Agent(beam.PTransform):
    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        prompts = pcoll | "BuildPrompt" >> beam.Map(str)
        return prompts | "RunModel" >> _Model()


def _hints_by_leaf(p: beam.Pipeline) -> dict[str, dict[str, bytes]]:
    proto = p.to_runner_api()
    envs = proto.components.environments
    return {
        t.unique_name: dict(envs[t.environment_id].resource_hints)
        for t in proto.components.transforms.values()
        if not t.subtransforms and t.environment_id
    }


def test_pin_inference_resources_touches_the_inference_step_only(gpu_backend: str) -> None:
    p = beam.Pipeline()
    _ = p | "Create" >> beam.Create([1]) | "AgentTurn" >> _Agent() | "After" >> beam.Map(str)
    changed = pin_inference_resources(p, settings(f"--model_backend={gpu_backend}"))
    assert changed == ["AgentTurn/RunModel", "AgentTurn/RunModel/Call"]
    hints = _hints_by_leaf(p)
    assert hints["AgentTurn/RunModel/Call"] == {
        hint_urns.ACCELERATOR.urn: DEFAULT_GPU_ACCELERATOR.encode(),
        hint_urns.MIN_RAM_BYTES.urn: b"16000000000",
    }
    others = {name: h for name, h in hints.items() if name != "AgentTurn/RunModel/Call"}
    assert others and not any(others.values())


def test_pin_inference_resources_without_hints_or_without_the_step() -> None:
    p = beam.Pipeline()
    _ = p | beam.Create([1]) | "Other" >> beam.Map(str)
    assert pin_inference_resources(p, settings()) == []  # CPU backend: nothing to pin, nothing checked
    with pytest.raises(SettingsError, match="no inference step matching"):
        pin_inference_resources(p, settings("--inference_min_ram=8GB"))


# --- environment variables -----------------------------------------------------------------------


def test_options_from_the_environment() -> None:
    env = {"SUPPORTFLOW_MODEL_BACKEND": "instant", "SUPPORTFLOW_REPLY_TOPIC": "replies-x", "UNRELATED": "1"}
    argv, applied = argv_with_env(["--reply_topic=replies-cli"], env)
    assert argv == ["--reply_topic=replies-cli", "--model_backend=instant"]  # the command line wins
    assert applied == ["model_backend"]


def test_main_reads_the_environment_and_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.main import _options_and_env

    monkeypatch.setenv("SUPPORTFLOW_SLO_FRESHNESS_S", "90")
    options, from_env = _options_and_env([], None)
    s = Settings.from_options(options, environ={}, from_env=from_env)
    assert s.slo_freshness_s == 90.0 and s.from_env == ("slo_freshness_s",)
    assert "from_env=['slo_freshness_s']" in s.describe()


def test_every_option_has_an_environment_variable() -> None:
    env = {f"SUPPORTFLOW_{name.upper()}": "x" for name in [o.name for o in OPTIONS]}
    _, applied = argv_with_env([], env)
    assert applied == [o.name for o in OPTIONS]


def test_main_exits_with_the_problems(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["--runner=BundleBasedDirectRunner", "--reply_topic=", "--quiet_window_s=9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid supportflow settings:" in err
    assert "--reply_topic is missing" in err and "--quiet_window_s=9 is longer than --max_hold_s=6" in err


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("AgentTurn/RunModel", True),
        ("AgentTurn/RunModel/BeamML_RunInference", True),
        ("AgentTurn/Step0/RunModel", True),
        ("AgentTurn/Step12/RunModel/BatchElements", True),
        ("AgentTurn/Step0/Advance", False),
        ("AgentTurn/RunModelX", False),
        ("AgentTurn", False),
        ("Other/RunModel", False),
    ],
)
def test_inference_steps(label: str, expected: bool) -> None:
    assert is_inference_step(label) is expected
