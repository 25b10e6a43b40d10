"""The Flex Template's metadata, generated from the option table so the two never drift.

Every supportflow option (a row of ``pipeline.options.OptionTable``) becomes one
template parameter (name = option name, help = the option's help, regex = the
pattern ``pipeline.settings`` validates it with, default = the option's default), plus the Beam options the template
needs at launch (``BEAM_PARAMETERS``). ``deploy/flex_template/metadata.json``
is this module's output, checked in; a test fails when it is stale.

    python -m deploy.template --write   # after adding or changing an option
    python -m deploy.template --check   # exit 1 if metadata.json is stale
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy.generated import generated_file_main
from pipeline.options import OPTIONS, Option
from pipeline.validation import IMAGE_PATTERN, option_pattern

METADATA_PATH = Path(__file__).resolve().parent / "flex_template" / "metadata.json"

TEMPLATE_NAME = "supportflow"
TEMPLATE_DESCRIPTION = (
    "Streaming support agent: Pub/Sub chat messages -> sessions (state and timers) -> customer context -> "
    "model (RunInference) -> replies on Pub/Sub, eval rows in BigQuery, dead letters on Pub/Sub."
)

# Beam options the template exposes besides supportflow's own (validated by Dataflow and pipeline.settings).
BEAM_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "sdk_container_image",
        "label": "Worker container image",
        "helpText": "The worker image built from deploy/Dockerfile (deploy/Dockerfile.gpu for a GPU backend), "
        "with a tag or digest, e.g. us-central1-docker.pkg.dev/PROJECT/supportflow/worker:1.0. "
        "Normally the template's own image.",
        "isOptional": False,
        "regexes": [IMAGE_PATTERN],
        "paramType": "TEXT",
    },
]


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _param_type(option: Option) -> str:
    if option.choices:
        return "ENUM"
    if option.type in (int, float):
        return "NUMBER"
    return "TEXT"


def parameter(option: Option) -> dict[str, Any]:
    if not option.help:
        raise ValueError(f"--{option.name} has no help text: give it one in pipeline/options.py")
    param: dict[str, Any] = {
        "name": option.name,
        "label": _label(option.name),
        "helpText": option.help,
        "isOptional": True,
        "regexes": [option_pattern(option)],
        "paramType": _param_type(option),
    }
    if option.default is not None:
        param["defaultValue"] = str(option.default)
    if option.choices:
        param["enumOptions"] = [{"value": str(c), "label": str(c)} for c in option.choices]
    return param


def build_metadata() -> dict[str, Any]:
    return {
        "name": TEMPLATE_NAME,
        "description": TEMPLATE_DESCRIPTION,
        "streaming": True,
        "supportsAtLeastOnce": True,
        "supportsExactlyOnce": True,
        "defaultStreamingMode": "STREAMING_MODE_EXACTLY_ONCE",
        "parameters": [parameter(o) for o in OPTIONS] + BEAM_PARAMETERS,
    }


def render() -> str:
    return json.dumps(build_metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated_file_main(
        argv,
        description=__doc__,
        path=METADATA_PATH,
        render=lambda _current: render(),
        check_help="exit 1 if the checked-in metadata is stale",
        print_help="print the metadata",
        stale=f"{METADATA_PATH} is stale: run `python -m deploy.template --write`",
        fresh=f"{METADATA_PATH} is up to date",
    )


if __name__ == "__main__":
    raise SystemExit(main())
