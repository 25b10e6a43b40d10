"""The real Dataflow job, built offline: DataflowRunner with ``--dry_run=True`` builds the job request
(and the portable pipeline) without GCP access or credentials, and submits nothing.

Asserted: a streaming job on Streaming Engine; the worker image and bounded autoscaling; exactly-once by
default and the at-least-once service option when asked; resource hints on the inference step and nowhere
else (and none at all for a CPU backend); the transform names an in-place update depends on; the template
parameters.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy import template
from deploy.transforms import (
    DRY_RUN_ARGS,
    SNAPSHOT_PATH,
    dry_run_job,
    job_environment,
    resource_hints_by_transform,
    snapshot,
)
from pipeline.options import OPTIONS
from pipeline.resource_hints import DEFAULT_GPU_ACCELERATOR, is_inference_step
from pipeline.settings import AT_LEAST_ONCE_SERVICE_OPTION

ACCELERATOR_URN = "beam:resources:accelerator:v1"
MIN_RAM_URN = "beam:resources:min_ram_bytes:v1"
GPU_IMAGE = "us-central1-docker.pkg.dev/supportflow-dry-run/supportflow/worker-gpu:dry-run"


@pytest.fixture(scope="module")
def cpu_job() -> Any:
    job, settings = dry_run_job()
    return job, settings


@pytest.fixture(scope="module")
def gpu_job() -> Any:
    """The Gemma (transformers) backend on Dataflow; building the job loads no model."""
    argv = [a for a in DRY_RUN_ARGS if not a.startswith(("--model_backend", "--sdk_container_image"))]
    argv += [
        "--model_backend=gemma",
        "--model_path=random:gemma-3-1b",
        f"--sdk_container_image={GPU_IMAGE}",
        "--delivery_mode=at_least_once",
    ]
    return dry_run_job(argv)


def test_streaming_job_on_streaming_engine(cpu_job: Any) -> None:
    job, settings = cpu_job
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    env = job_environment(job)
    assert {"enable_streaming_engine", "enable_windmill_service"} <= set(env.experiments)
    assert env.version["job_type"] == "FNAPI_STREAMING"
    (pool,) = env.worker_pools
    assert pool.autoscaling_settings.max_num_workers == 3
    assert pool.worker_harness_container_image.endswith("/supportflow/worker:dry-run")
    assert settings.on_dataflow and settings.project == "supportflow-dry-run"


def test_exactly_once_by_default(cpu_job: Any) -> None:
    job, settings = cpu_job
    assert settings.delivery_mode == "exactly_once"
    assert AT_LEAST_ONCE_SERVICE_OPTION not in job_environment(job).service_options


def test_cpu_backend_asks_for_no_accelerator(cpu_job: Any) -> None:
    job, _ = cpu_job
    assert resource_hints_by_transform(job.proto_pipeline) == {}
    assert len(job.proto_pipeline.components.environments) == 1


def test_gpu_backend_puts_the_accelerator_on_the_inference_step_only(gpu_job: Any) -> None:
    job, settings = gpu_job
    hinted = resource_hints_by_transform(job.proto_pipeline)
    assert hinted, "no transform asks for the GPU"
    assert all(is_inference_step(name) for name in hinted), sorted(hinted)
    for hints in hinted.values():
        assert hints[ACCELERATOR_URN] == DEFAULT_GPU_ACCELERATOR.encode()
        assert hints[MIN_RAM_URN] == b"16000000000"
    # The inference DoFn itself is among them, and the steps around it are not.
    assert any("_RunInferenceDoFn" in name for name in hinted)
    leaves = {t.unique_name for t in job.proto_pipeline.components.transforms.values() if not t.subtransforms}
    # Every leaf of every inference step has them; nothing else in the agent or the graph does.
    assert {leaf for leaf in leaves if is_inference_step(leaf)} == set(hinted)
    agent_others = [leaf for leaf in leaves if leaf.startswith("AgentTurn/") and not is_inference_step(leaf)]
    assert agent_others and "Sessions/ParDo(SessionDoFn)" in leaves
    env = job_environment(job)
    assert all(img.container_image == GPU_IMAGE for img in env.worker_pools[0].sdk_harness_container_images)
    assert settings.backend.needs_gpu


def test_at_least_once_becomes_the_dataflow_service_option(gpu_job: Any) -> None:
    job, settings = gpu_job
    assert settings.at_least_once
    assert AT_LEAST_ONCE_SERVICE_OPTION in job_environment(job).service_options


def test_transform_names_match_the_update_snapshot(cpu_job: Any) -> None:
    job, _ = cpu_job
    current = snapshot(job.proto_pipeline)
    recorded = json.loads(SNAPSHOT_PATH.read_text())
    assert current == recorded, (
        "the graph's transform names or stateful steps changed: a running job can no longer be updated in place "
        "without --transform_name_mapping. Keep the names, or run `python -m deploy.transforms --write` and plan "
        "the mapping (docs/operations.md: Update and drain)."
    )
    assert "Sessions/ParDo(SessionDoFn)" in current["stateful"]
    assert {"ReadInbound", "Sessions", "AgentTurn", "PublishReplies", "PublishDeadLetters"} <= set(current["top_level"])


def test_template_parameters_are_the_options(cpu_job: Any) -> None:
    job, _ = cpu_job
    params = {p["name"] for p in json.loads(template.METADATA_PATH.read_text())["parameters"]}
    assert params == set([o.name for o in OPTIONS]) | {p["name"] for p in template.BEAM_PARAMETERS}
    # Every supportflow option reaches the workers with the job (sdk_pipeline_options).
    options = job.options.get_all_options()
    assert set([o.name for o in OPTIONS]) <= set(options)
