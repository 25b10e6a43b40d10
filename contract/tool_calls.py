"""A tool call: what a model asks a tool to do, as every layer sees it.

Ground floor because both sides use it: ``agents`` (a model's response carries
calls, the next request replays them) and ``tools`` (the registry validates and
runs them). Defined here once so ``tools`` never imports ``agents``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for (``ModelResponse.tool_calls``).

    ``arguments`` is the raw JSON text, as OpenAI-style APIs return it; the
    caller validates it against the tool's schema before running anything.
    """

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; raises ValueError if they are not a JSON object."""
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError(f"tool arguments must be a JSON object, got {type(value).__name__}")
        return value
