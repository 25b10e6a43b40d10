"""What a valid option value looks like, and the error that lists every invalid one.

The patterns are anchored regexes, named in ``PATTERN_NAMES``. A row of the option table
(``pipeline/options.py``) that names one is checked against it by pydantic, and the Flex
Template metadata (``deploy/template.py`` writes them into ``deploy/flex_template/metadata.json``)
carries the same regex, so the template and the pipeline accept exactly the same values.
Which pattern the template gets is ``option_pattern``: the row's choices, else its pattern,
else one its type implies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol


class OptionSpec(Protocol):
    """What a pattern is chosen from: a row of ``pipeline.options``' table (named here, not imported,
    so the table may import these patterns)."""

    name: str
    type: Any
    choices: Sequence[Any] | None
    pattern: str | None


# Project id, optionally domain-scoped ("example.com:my-project").
PROJECT_PATTERN = r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
# Pub/Sub topic / subscription *id* (not the projects/... path): 3-255 chars, starts with a letter
# (and not with "goog", checked in code: the template's regex dialect may lack look-aheads).
PUBSUB_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$"
BIGQUERY_DATASET_PATTERN = r"^[A-Za-z0-9_]{1,1024}$"
HTTP_URL_PATTERN = r"^https?://[A-Za-z0-9.:\[\]-]+(?::[0-9]{1,5})?(?:/\S*)?$"
GEMINI_MODEL_PATTERN = r"^(?:models/)?gemini-[a-z0-9][a-z0-9.-]*$"
BIGTABLE_INSTANCE_PATTERN = r"^[a-z][a-z0-9-]{4,31}[a-z0-9]$"
BIGTABLE_TABLE_PATTERN = r"^[A-Za-z0-9_.-]{1,50}$"
ACCELERATOR_PATTERN = r"^type:[a-z0-9-]+;count:[1-9][0-9]?(?:;install-nvidia-driver(?::[A-Za-z0-9._-]+)?)?$"
MEMORY_PATTERN = r"^[0-9]+(?:\.[0-9]+)?(?:[KMGT]i?B)?$"
# A container image reference with an explicit tag or digest (registry host required).
IMAGE_PATTERN = r"^[a-z0-9.-]+(?::[0-9]+)?/[a-z0-9._/-]+(?::[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})$"
# A Secret Manager secret version: a number, or ``latest`` (then the version before it is read too: rotation).
SECRET_VERSION_PATTERN = (
    r"^projects/[a-z0-9.:-]+/(?:locations/[a-z0-9-]+/)?secrets/[A-Za-z0-9_-]{1,255}/versions/(?:latest|[1-9][0-9]*)$"
)
DEVICE_PATTERN = r"^(?:auto|cpu|cuda(?::[0-9]+)?)$"
PACK_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"
PROMPT_VERSION_PATTERN = r"^[a-z][a-z0-9_]{0,60}$"
INT_PATTERN = r"^[0-9]+$"
NUMBER_PATTERN = r"^[0-9]+(?:\.[0-9]+)?$"
ANY_TOKEN_PATTERN = r"^\S+$"

# What a value of each pattern is, for the messages ("--name='x' is not a valid <what>") and the docs.
PATTERN_NAMES = {
    PROJECT_PATTERN: "project id",
    PUBSUB_ID_PATTERN: "Pub/Sub id",
    BIGQUERY_DATASET_PATTERN: "BigQuery dataset id",
    HTTP_URL_PATTERN: "http(s) URL",
    GEMINI_MODEL_PATTERN: "Gemini model name (e.g. gemini-2.5-flash)",
    BIGTABLE_INSTANCE_PATTERN: "Bigtable instance id",
    BIGTABLE_TABLE_PATTERN: "Bigtable table id",
    ACCELERATOR_PATTERN: "accelerator hint (type:...;count:N[;install-nvidia-driver])",
    MEMORY_PATTERN: "memory size (e.g. 16GB)",
    IMAGE_PATTERN: "image reference with a tag or digest",
    DEVICE_PATTERN: "device (auto, cpu, cuda or cuda:N)",
    PACK_PATTERN: "pack name",
    PROMPT_VERSION_PATTERN: "prompt version (e.g. support_tools_v1)",
    SECRET_VERSION_PATTERN: "secret version name (projects/P/secrets/S/versions/latest or /versions/N)",
}


class SettingsError(ValueError):
    """The run's configuration is invalid; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid supportflow settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


def is_pubsub_option(name: str) -> bool:
    """Options naming a Pub/Sub topic or subscription (by id): ``*_topic``, ``*_subscription``."""
    return name.endswith(("_topic", "_subscription"))


def is_url_option(name: str) -> bool:
    """Options naming an HTTP endpoint: ``*_endpoint``, ``*_url``."""
    return name.endswith(("_endpoint", "_url"))


def option_pattern(option: OptionSpec) -> str:
    """The anchored regex a value of this option must match (the template metadata's too)."""
    if option.choices:
        return "^(?:" + "|".join(re.escape(str(c)) for c in option.choices) + ")$"
    if option.pattern:
        return option.pattern
    if option.type is int:
        return INT_PATTERN
    if option.type is float:
        return NUMBER_PATTERN
    return ANY_TOKEN_PATTERN
