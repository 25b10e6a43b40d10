"""The Flex Template's metadata, generated from ``SupportflowOptions`` so the two never drift.

Every supportflow option becomes one template parameter (name = option name,
help = the option's help, regex = the pattern ``pipeline.settings`` validates
it with, default = the option's default), plus the Beam options the template
needs at launch (``BEAM_PARAMETERS``). ``deploy/flex_template/metadata.json``
is this module's output, checked in; a test fails when it is stale.

    python -m deploy.template --write   # after adding or changing an option
    python -m deploy.template --check   # exit 1 if metadata.json is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.settings import IMAGE_PATTERN, option_pattern, supportflow_actions

METADATA_PATH = Path(__file__).resolve().parent / "flex_template" / "metadata.json"

TEMPLATE_NAME = "supportflow"
TEMPLATE_DESCRIPTION = (
    "Streaming support agent: Pub/Sub chat messages -> sessions (state and timers) -> customer context -> "
    "model (RunInference) -> replies on Pub/Sub, eval rows in BigQuery, dead letters on Pub/Sub."
)

# Options without their own help text: what the template UI shows instead.
HELP_FALLBACK: dict[str, str] = {
    "inbound_subscription": "Pub/Sub subscription id (not path) the chat frontend's inbound messages are read from.",
    "reply_topic": "Pub/Sub topic id (not path) the agent's replies are published to.",
    "reply_memory_subscription": "Pub/Sub subscription id on the reply topic: the session stage reads its replies "
    "back through it. Must differ from the frontend's subscriptions.",
    "dead_letter_topic": "Pub/Sub topic id (not path) for everything that could not be answered, with the reason.",
    "handoff_topic": "Pub/Sub topic id (not path) for conversations handed to a person (the human-agent desk).",
    "eval_dataset": "BigQuery dataset id holding the turns_v1 and sessions_v1 eval tables.",
    "model_backend": "Model behind RunInference: smollm2 (CPU, local), instant (overhead stub), gemini (API); "
    "GPU backends get an accelerator on the inference step only.",
}

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


def _param_type(action: Any) -> str:
    if action.choices:
        return "ENUM"
    if action.type in (int, float):
        return "NUMBER"
    return "TEXT"


def parameter(action: Any) -> dict[str, Any]:
    help_text = action.help or HELP_FALLBACK.get(action.dest)
    if not help_text:
        raise ValueError(
            f"--{action.dest} has no help text: give it help=... in pipeline/options.py "
            f"(or an entry in deploy/template.py HELP_FALLBACK)"
        )
    param: dict[str, Any] = {
        "name": action.dest,
        "label": _label(action.dest),
        "helpText": help_text,
        "isOptional": True,
        "regexes": [option_pattern(action)],
        "paramType": _param_type(action),
    }
    if action.default is not None:
        param["defaultValue"] = str(action.default)
    if action.choices:
        param["enumOptions"] = [{"value": str(c), "label": str(c)} for c in action.choices]
    return param


def build_metadata() -> dict[str, Any]:
    return {
        "name": TEMPLATE_NAME,
        "description": TEMPLATE_DESCRIPTION,
        "streaming": True,
        "supportsAtLeastOnce": True,
        "supportsExactlyOnce": True,
        "defaultStreamingMode": "STREAMING_MODE_EXACTLY_ONCE",
        "parameters": [parameter(a) for a in supportflow_actions()] + BEAM_PARAMETERS,
    }


def render() -> str:
    return json.dumps(build_metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help=f"write {METADATA_PATH}")
    group.add_argument("--check", action="store_true", help="exit 1 if the checked-in metadata is stale")
    group.add_argument("--print", action="store_true", help="print the metadata")
    args = parser.parse_args(argv)
    text = render()
    if args.print:
        sys.stdout.write(text)
        return 0
    if args.write:
        METADATA_PATH.write_text(text)
        print(f"wrote {METADATA_PATH}")
        return 0
    current = METADATA_PATH.read_text() if METADATA_PATH.exists() else ""
    if current != text:
        print(f"{METADATA_PATH} is stale: run `python -m deploy.template --write`", file=sys.stderr)
        return 1
    print(f"{METADATA_PATH} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
