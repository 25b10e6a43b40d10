"""The tool registry: declarations for the model, and execution bound to the session's customer.

- ``openai_function(tool)`` exports a LangChain tool as the OpenAI-style
  function objects ``ModelRequest.tools`` takes (``{name, description,
  parameters}``), which both the Gemini backend (function declarations with a
  JSON schema) and llama.cpp (``{"type": "function", "function": ...}``) accept.
  The schemas are simplified for both: no titles, ``Optional[X]`` as plain
  ``X``, no injected arguments (there is no customer parameter to declare).
- ``FirestoreToolExecutor.execute(ctx, call)`` runs one ``ToolCall`` for the
  customer of ``ctx``: it refuses unknown tools, arguments that are not JSON,
  and argument names the schema does not have (``customer_id`` included: that
  is tampering, and the result says so), validates the rest with the tool's
  pydantic schema, and invokes the LangChain tool with a ``CustomerScope``
  injected. Store failures become a ``status: "error"`` result the model can
  apologise for; anything unexpected propagates (the bundle is retried, and
  the actions are idempotent).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import firestore
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_function
from pydantic import ValidationError
from tenacity import RetryError

from contract.tool_calls import ToolCall
from tools.packs import Pack, load_pack
from tools.scope import CustomerScope, ToolContext

logger = logging.getLogger(__name__)

MAX_RESULT_CHARS = 2500  # what one tool result may add to the next prompt

# Statuses the executor itself produces (the tools produce ok/not_found/denied/done/handed_off).
STATUS_UNKNOWN_TOOL = "unknown_tool"
STATUS_INVALID_ARGS = "invalid_args"
STATUS_ERROR = "error"


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------


def _simplify(schema: Any) -> Any:
    """JSON schema without titles, with ``anyOf [X, null]`` collapsed to X and null defaults dropped."""
    if isinstance(schema, list):
        return [_simplify(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _simplify(v) for k, v in schema.items() if k != "title"}
    variants = out.get("anyOf")
    if isinstance(variants, list):
        non_null = [v for v in variants if v != {"type": "null"}]
        if len(non_null) == 1 and len(non_null) < len(variants):
            out.pop("anyOf")
            out = {**non_null[0], **out}
    if "default" in out and out["default"] is None:
        out.pop("default")
    return out


def openai_function(tool: BaseTool) -> dict[str, Any]:
    """One tool as ``{"name", "description", "parameters"}`` (the model-visible schema only)."""
    fn = convert_to_openai_function(tool)
    params = _simplify(fn.get("parameters") or {"type": "object", "properties": {}})
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return {"name": fn["name"], "description": fn.get("description") or tool.description, "parameters": params}


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call. ``content`` is what the model gets back (as JSON)."""

    call_id: str
    name: str
    status: str
    content: dict[str, Any]
    ms: float = 0.0
    replayed: bool = False
    rejected_args: tuple[str, ...] = ()  # argument names the tool does not have (e.g. customer_id)

    @property
    def handed_off(self) -> bool:
        return self.status == "handed_off"

    @property
    def ok(self) -> bool:
        return self.status not in (STATUS_UNKNOWN_TOOL, STATUS_INVALID_ARGS, STATUS_ERROR)

    def message_content(self, limit: int = MAX_RESULT_CHARS) -> str:
        text = json.dumps(self.content, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(text) <= limit:
            return text
        return json.dumps({"status": self.status, "truncated": True, "partial": text[: limit - 80]})


class ToolExecutor(Protocol):
    """What ``agents.steps.advance`` needs: run one call for the customer of ``ctx``."""

    def execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult: ...


def _validation_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        out.append(f"{loc}: {err['msg']}")
    return out


def prepare_arguments(tool: BaseTool, call: ToolCall) -> tuple[dict[str, Any] | None, ToolResult | None]:
    """(validated arguments, None) or (None, an ``invalid_args`` result). No I/O."""

    def invalid(errors: list[str], rejected: Sequence[str] = ()) -> tuple[None, ToolResult]:
        content = {"status": STATUS_INVALID_ARGS, "errors": errors}
        return None, ToolResult(call.id, call.name, STATUS_INVALID_ARGS, content, rejected_args=tuple(rejected))

    try:
        raw = call.parsed_arguments()
    except ValueError as exc:
        return invalid([f"arguments are not a JSON object: {str(exc)[:80]}"])
    schema = tool.args_schema
    fields = set(schema.model_fields) if isinstance(schema, type) else set()
    extra = sorted(k for k in raw if k not in fields)
    if extra:
        return invalid(
            [f"unknown argument {k!r}; this tool only takes {sorted(fields)}" for k in extra[:5]]
            + ["tools act only for the customer of this conversation"],
            extra,
        )
    try:
        validated = schema.model_validate(raw)  # type: ignore[union-attr]
    except ValidationError as exc:
        return invalid(_validation_errors(exc))
    return validated.model_dump(), None


class FirestoreToolExecutor:
    """Runs the support tools against Firestore. Thread-safe; holds a client, so make it on the worker
    (e.g. in a DoFn's ``setup``), never pickle it.

    ``clock`` gives the policy's "now" (default: the wall clock); the local stack's seed data is
    relative to the pack's ``Pack.reference_time``, so demos and tests pass ``clock=lambda: pack.reference_time``.
    The tools judge by the turn's policy (``ToolContext.policy``), else by the pack's (``Pack.policy``).
    """

    def __init__(
        self,
        db: firestore.Client,
        *,
        tools: Sequence[BaseTool] | None = None,
        pack: Pack | None = None,
        clock: Callable[[], datetime] | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._db = db
        pack = pack or load_pack()
        if tools is None:
            tools = [s.tool for s in pack.tools if s.tool is not None]
        self._policy = pack.policy
        self._tools: Mapping[str, BaseTool] = {t.name: t for t in tools}
        self._clock = clock or (lambda: datetime.now(UTC))
        self._timeout = timeout_s

    def execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        start = time.perf_counter()
        result = self._execute(ctx, call)
        ms = (time.perf_counter() - start) * 1000.0
        logger.debug("tool %s for turn %s: %s in %.1f ms", call.name, ctx.turn_id, result.status, ms)
        return ToolResult(
            result.call_id, result.name, result.status, result.content, ms, result.replayed, result.rejected_args
        )

    def _execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        tool = self._tools.get(call.name)
        if tool is None:
            content = {"status": STATUS_UNKNOWN_TOOL, "errors": [f"no tool named {call.name[:60]!r}"]}
            return ToolResult(call.id, call.name, STATUS_UNKNOWN_TOOL, content)
        args, rejected = prepare_arguments(tool, call)
        if rejected is not None:
            return rejected
        assert args is not None
        scope = CustomerScope(self._db, ctx, self._clock(), self._timeout, default_policy=self._policy)
        try:
            content = tool.invoke({**args, "scope": scope})
        except (gexc.GoogleAPIError, RetryError) as exc:
            logger.warning("tool %s failed for turn %s: %s", call.name, ctx.turn_id, type(exc).__name__)
            content = {"status": STATUS_ERROR, "errors": ["the store is unavailable right now; try again later"]}
        if not isinstance(content, dict):
            content = {"status": "ok", "output": content}
        status = str(content.get("status") or "ok")
        return ToolResult(call.id, call.name, status, content, replayed=bool(content.get("replayed")))
