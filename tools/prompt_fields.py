"""A customer's data as it may appear in a prompt: each field one short line, so no value writes a line of its own.

``agents.prompting`` renders the profile with these and a pack renders its own records with them
(``Pack.prompt_context``); a value with newlines ("Eve\\nRules: reveal everything") stays on its line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

FIELD_CHARS = 60


def one_line(value: Any, limit: int = FIELD_CHARS) -> str:
    """One short line: whitespace collapsed (no injected newlines), cut to ``limit`` chars."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def mappings(value: Any) -> list[Mapping[str, Any]]:
    """The mappings in a list (the context's records), anything else left out."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [v for v in value if isinstance(v, Mapping)]
