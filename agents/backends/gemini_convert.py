"""The Gemini backend's request and response mapping: ``agents.model_io`` types <-> google-genai types.

Mapping (``agents.model_io`` -> Gemini):
- system messages -> ``system_instruction`` (joined, in order);
- user -> role "user"; assistant -> role "model";
- tool results (role "tool", ``name`` = the function, ``tool_call_id``) ->
  ``function_response`` parts in a "user" turn (a JSON object content is the
  response as is; anything else is wrapped as ``{"output": ...}``);
  consecutive turns of one role are merged, as Gemini wants alternating turns;
- ``ModelRequest.tools`` (OpenAI ``function`` objects, bare or wrapped in
  ``{"type": "function", "function": ...}``) -> function declarations with
  ``parameters_json_schema`` (the JSON schema as is);
- function-call parts of the reply -> ``ToolCall(id, name, arguments=<JSON>)``;
  Gemini often gives no call id: one is made up (prefix ``gcall_``), and a made-up
  id is not sent back in the matching ``function_response``;
- ``usage_metadata`` -> ``prompt_tokens``; ``completion_tokens`` is candidates +
  thoughts tokens (both are billed as output); ``model_ms`` is the wall time of
  the whole call, retries and back-off included (what the turn waited).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from agents.model_io import ChatMessage, ModelResponse, ToolCall

SYNTHETIC_CALL_ID_PREFIX = "gcall_"
_CONTENT_FILTER = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})


# ---------------------------------------------------------------------------
# Request mapping
# ---------------------------------------------------------------------------


def _function_object(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return tool["function"]
    return tool


def function_declarations(tools: Sequence[dict[str, Any]]) -> list[Any]:
    """OpenAI-style function objects -> ``types.FunctionDeclaration`` (JSON schema passed through)."""
    from google.genai import types

    out = []
    for tool in tools:
        fn = _function_object(tool)
        kwargs: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            kwargs["description"] = fn["description"]
        if fn.get("parameters") is not None:
            kwargs["parameters_json_schema"] = fn["parameters"]
        out.append(types.FunctionDeclaration(**kwargs))
    return out


def _tool_result(content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        return {"output": content}
    return value if isinstance(value, dict) else {"output": value}


def _parts(message: ChatMessage) -> list[Any]:
    from google.genai import types

    if message.role == "tool":
        kwargs: dict[str, Any] = {"name": message.name or "tool", "response": _tool_result(message.content)}
        if message.tool_call_id and not message.tool_call_id.startswith(SYNTHETIC_CALL_ID_PREFIX):
            kwargs["id"] = message.tool_call_id
        return [types.Part(function_response=types.FunctionResponse(**kwargs))]
    parts = [types.Part(text=message.content)] if message.content else []
    # Forward compatible: an assistant message that carries its tool calls replays them.
    for call in getattr(message, "tool_calls", None) or ():
        kwargs = {"name": call.name, "args": call.parsed_arguments()}
        if call.id and not call.id.startswith(SYNTHETIC_CALL_ID_PREFIX):
            kwargs["id"] = call.id
        parts.append(types.Part(function_call=types.FunctionCall(**kwargs)))
    return parts


def to_contents(messages: Sequence[ChatMessage]) -> tuple[str | None, list[Any]]:
    """(system instruction or None, Gemini contents) for a conversation."""
    from google.genai import types

    system = [m.content for m in messages if m.role == "system" and m.content]
    contents: list[Any] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message)
        if not parts:
            continue
        if contents and contents[-1].role == role:
            contents[-1].parts.extend(parts)
        else:
            contents.append(types.Content(role=role, parts=parts))
    return ("\n\n".join(system) if system else None), contents


# ---------------------------------------------------------------------------
# Response mapping
# ---------------------------------------------------------------------------


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", None) or getattr(value, "name", None) or value)


def _finish_reason(raw: str, has_tool_calls: bool) -> str:
    if raw == "STOP" or (not raw and has_tool_calls):
        return "tool_calls" if has_tool_calls else "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _CONTENT_FILTER:
        return "content_filter"
    return raw.lower()


def to_model_response(response: Any, *, model: str, model_ms: float) -> ModelResponse:
    """A ``types.GenerateContentResponse`` as a ``ModelResponse``."""
    usage = response.usage_metadata
    prompt_tokens = int(getattr(usage, "prompt_token_count", None) or 0)
    completion_tokens = int(getattr(usage, "candidates_token_count", None) or 0) + int(
        getattr(usage, "thoughts_token_count", None) or 0
    )
    if not response.candidates:
        feedback = response.prompt_feedback
        reason = _enum_name(getattr(feedback, "block_reason", None)) or "no candidates"
        return ModelResponse(
            text="",
            prompt_tokens=prompt_tokens,
            model_ms=model_ms,
            model=model,
            finish_reason="content_filter",
            error=f"gemini gave no answer: prompt blocked ({reason})",
        )
    candidate = response.candidates[0]
    parts = (candidate.content.parts if candidate.content else None) or []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    calls = []
    for i, part in enumerate(p for p in parts if p.function_call):
        fc = part.function_call
        calls.append(
            ToolCall(
                id=fc.id or f"{SYNTHETIC_CALL_ID_PREFIX}{uuid.uuid4().hex[:12]}_{i}",
                name=fc.name or "",
                arguments=json.dumps(fc.args or {}),
            )
        )
    return ModelResponse(
        text=text,
        tool_calls=tuple(calls),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model_ms=model_ms,
        model=model,
        finish_reason=_finish_reason(_enum_name(candidate.finish_reason), bool(calls)),
    )
