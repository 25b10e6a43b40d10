"""Right-fitting: what the inference step, and only it, asks of its workers.

``inference_resource_hints(settings)`` is the one place that decides it (an
accelerator only for a GPU backend, plus an optional memory floor);
``pin_inference_resources`` applies it to the built graph's ``AgentTurn/.../RunModel``
steps and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

import apache_beam as beam
from apache_beam.pipeline import AppliedPTransform
from apache_beam.transforms.resources import merge_resource_hints, parse_resource_hints

from pipeline.validation import SettingsError


class InferenceResources(Protocol):
    """The two settings right-fitting reads (``pipeline.settings.Settings`` has them; named here, not
    imported, so the settings may import this module)."""

    inference_accelerator: str | None
    inference_min_ram: str | None


# What a GPU backend gets unless --inference_accelerator / --inference_min_ram say otherwise.
DEFAULT_GPU_ACCELERATOR = "type:nvidia-l4;count:1;install-nvidia-driver"
# What one L4 worker for Gemma needs besides the GPU (weights are loaded through host memory).
DEFAULT_GPU_MIN_RAM = "16GB"

# The transforms whose workers get the hints: the RunInference steps of the agent (graph.py "AgentTurn",
# agent_stage.py "Step<N>/RunModel", one per unrolled agent step; plain "RunModel" in a one-step agent).
INFERENCE_STEP_PATTERN = r"AgentTurn/(?:Step[0-9]+/)?RunModel"


def is_inference_step(full_label: str, pattern: str = INFERENCE_STEP_PATTERN) -> bool:
    """True for an inference step and everything inside it."""
    return re.match(rf"(?:{pattern})(?:/|$)", full_label) is not None


def inference_resource_hints(settings: InferenceResources) -> dict[str, str]:
    """Keyword arguments for ``.with_resource_hints(**...)`` on the inference step ("RunModel").

    Empty for CPU backends (they run on the job's default workers). For a GPU backend:
    ``accelerator`` (default one NVIDIA L4 with the driver installed by Dataflow) and ``min_ram``.
    """
    hints: dict[str, str] = {}
    if settings.inference_accelerator:
        hints["accelerator"] = settings.inference_accelerator
    if settings.inference_min_ram:
        hints["min_ram"] = settings.inference_min_ram
    return hints


def _walk(node: AppliedPTransform) -> Iterator[AppliedPTransform]:
    yield node
    for part in node.parts:
        yield from _walk(part)


def pin_inference_resources(
    pipeline: beam.Pipeline, settings: InferenceResources, pattern: str = INFERENCE_STEP_PATTERN
) -> list[str]:
    """Give the built graph's inference steps (full labels matching ``pattern``, and everything inside
    them) the hints of ``inference_resource_hints``. Returns the full labels it changed; raises if no step
    matches while there are hints to apply (a renamed step must not silently lose its GPU).

    Equivalent to ``RunInference(...).with_resource_hints(**inference_resource_hints(settings))`` at
    graph-building time, and harmless on top of it (merging equal hints changes nothing).
    """
    hints = parse_resource_hints(inference_resource_hints(settings))
    if not hints:
        return []
    changed = []
    for node in _walk(pipeline._root_transform()):
        if node.full_label and is_inference_step(node.full_label, pattern):
            node.resource_hints = merge_resource_hints(outer_hints=hints, inner_hints=node.resource_hints)
            changed.append(node.full_label)
    if not changed:
        raise SettingsError([f"the graph has no inference step matching {pattern!r} to give the {sorted(hints)} hints"])
    return changed
