"""The step protocol for models without native tool calls: one JSON object per step.

Each step's output is exactly one of:

- a call of one declared tool: ``{"name": "<tool>", "parameters": {...}}``, the
  parameters valid against that tool's (narrowed) JSON schema; a hand-off is a
  call of ``handoff_to_human``;
- a final reply: ``{"name": "reply", "parameters": {"text": "..."}}``; after a
  tool result the reply takes no text (``{"name": "reply", "parameters": {}}``),
  and the reply is rendered from the tool results (``agents.replies``), so it
  states only what the tools returned.

This is Gemma 3's documented function-calling format (``{"name": function name,
"parameters": dictionary of argument name and its value}``), so the same shape
serves the Gemma prompt and every backend's constraint. ``decision_schema``
builds the JSON schema a backend constrains decoding to (llama.cpp's
``json_schema``, llguidance for transformers, vLLM's ``response_format``);
``parse_decision`` reads one step's text back and checks it against the same
schema (a backend that ignored the constraint gets no tool call out of it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from agents.model_io import ToolCall

REPLY = "reply"
MAX_REPLY_CHARS = 280

# Gemma 3's function-calling instruction (ai.google.dev/gemma/docs/capabilities/function-calling),
# with the reply as one more function so that every step is a function call.
FUNCTION_CALLING_PREAMBLE = (
    "You have access to functions. If you decide to invoke any of the function(s), you MUST put it in the format "
    'of {"name": function name, "parameters": dictionary of argument name and its value}. '
    "You SHOULD NOT include any other text in the response if you call a function. "
    f'To answer the customer, call "{REPLY}".'
)


def call_variant(name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "parameters": dict(parameters)},
        "required": ["name", "parameters"],
        "additionalProperties": False,
    }


def reply_variant(with_text: bool, max_chars: int = MAX_REPLY_CHARS) -> dict[str, Any]:
    params: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    if with_text:
        params["properties"] = {"text": {"type": "string", "minLength": 1, "maxLength": max_chars}}
        params["required"] = ["text"]
    return call_variant(REPLY, params)


def decision_schema(variants: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not variants:
        raise ValueError("a decision needs at least one variant")
    return dict(variants[0]) if len(variants) == 1 else {"anyOf": [dict(v) for v in variants]}


def function_list(tools: Sequence[Mapping[str, Any]], reply_text: bool, with_reply: bool = True) -> str:
    """The functions as Gemma's prompt lists them (name, description, parameters), and the reply if allowed."""
    fns = [{"name": t["name"], "description": t.get("description", ""), "parameters": t["parameters"]} for t in tools]
    if with_reply:
        reply = reply_variant(reply_text)["properties"]["parameters"]
        what = "Answer the customer in your own words." if reply_text else "Answer from the function results."
        fns.append({"name": REPLY, "description": what, "parameters": reply})
    return json.dumps(fns, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Decision:
    """One step's output, read back: a reply (``text`` may be '' after tool results) or a tool call."""

    call: ToolCall | None = None
    text: str = ""


class ProtocolError(ValueError):
    """The step's output is not one of the protocol's shapes."""


def parse_decision(text: str, schema: Mapping[str, Any], call_id: str) -> Decision:
    """The decision in ``text``; raises ProtocolError if it is not valid against ``schema``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {str(exc)[:80]}") from None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise ProtocolError(f"not valid against the step schema: {exc.message[:160]}") from None
    name, params = value["name"], value["parameters"]
    if name == REPLY:
        return Decision(text=str(params.get("text", "")).strip())
    return Decision(call=ToolCall(id=call_id, name=name, arguments=json.dumps(params, ensure_ascii=False)))
