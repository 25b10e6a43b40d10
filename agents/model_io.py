"""The model interface: what an agent asks a model, and what comes back.

Backend-agnostic: ``agents.backends`` turns a ``ModelRequest`` into a call to
some model (llama.cpp, an instant stub, later a hosted API) and returns a
``ModelResponse``. All types are frozen dataclasses of plain values, so they
pickle cheaply (Beam moves them between stages, and a model shared across
processes receives them through a proxy).

RunInference elements: a backend's ``ModelHandler`` accepts any element that
has a ``.request: ModelRequest`` attribute (``CarriesRequest``), or a bare
``ModelRequest``, and returns ``PredictionResult(example=<that element>,
inference=<ModelResponse>)``. So a pipeline carries its own payload (the
``EnrichedTurn``, an id, timings) through RunInference untouched: use
``ModelCall(request, payload)`` or any frozen dataclass with a ``request`` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from contract.tool_calls import ToolCall  # re-exported: the model interface speaks in tool calls

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True)
class ChatMessage:
    """One chat message in OpenAI terms.

    ``name`` names a tool (role "tool") or a participant; ``tool_call_id`` ties a
    tool result to the call it answers. ``tool_calls`` (assistant messages only)
    replays the function calls the model made, so the next request shows the
    model its own calls before their results (OpenAI ``tool_calls``, Gemini
    ``function_call`` parts).
    """

    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {sorted(ROLES)}")
        if not isinstance(self.content, str):
            raise TypeError(f"content must be str, got {type(self.content).__name__}")
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if not all(isinstance(c, ToolCall) for c in self.tool_calls):
            raise TypeError("tool_calls must be ToolCall instances")

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for c in self.tool_calls
            ]
        return out


@dataclass(frozen=True)
class RouteQuery:
    """Route ``text`` to one of the labels of ``examples`` ((label, example text) pairs) by its ``k`` nearest.

    ``parts``: pieces of ``text`` that may each be a request of their own (``agents.requests``), ranked in the
    same call (``ModelResponse.part_routes``), so routing a message of two requests stays one model step.
    """

    text: str
    examples: tuple[tuple[str, str], ...]
    k: int = 3
    lexical_weight: float = 0.0  # added similarity of shared content words (agents.embedding_router.lexical_similarity)
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple((str(a), str(b)) for a, b in self.examples))
        object.__setattr__(self, "parts", tuple(str(p) for p in self.parts))
        if not self.examples or self.k < 1:
            raise ValueError("a RouteQuery needs examples and k >= 1")


@dataclass(frozen=True)
class ModelRequest:
    """One model call: the conversation so far and a cap on generated tokens.

    ``tools`` declares callable tools, each ``{"name": str, "description": str,
    "parameters": <JSON schema of the arguments>}`` (the OpenAI ``function``
    object; the backend wraps it as its API needs). Reserved for tool calling:
    the SmolLM2 backend forwards them, but SmolLM2's chat template ignores them.
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    tools: tuple[dict[str, Any], ...] = ()
    # Constrained decoding: the reply must be JSON valid against this schema (``agents.protocol``).
    response_schema: dict[str, Any] | None = None
    # Routing: rank ``route``'s labels by nearest neighbour over the model's own embeddings instead of generating.
    route: RouteQuery | None = None

    def __post_init__(self) -> None:
        # Accept lists for convenience but store tuples, so the request stays immutable.
        object.__setattr__(self, "messages", tuple(self.messages))
        object.__setattr__(self, "tools", tuple(self.tools))
        if not self.messages:
            raise ValueError("a ModelRequest needs at least one message")
        if not all(isinstance(m, ChatMessage) for m in self.messages):
            raise TypeError("messages must be ChatMessage instances")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        for tool in self.tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise ValueError("each tool declaration must be a dict with a 'name'")

    def last_user_text(self) -> str:
        """Content of the last user message ('' if there is none)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""

    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


@dataclass(frozen=True)
class ModelResponse:
    """What a model produced for one request.

    ``model_ms`` is the wall time of the model call itself, measured where the
    model runs (no queueing in Beam, no proxy hops). ``error`` is non-empty when
    the backend could not answer this request (e.g. the prompt exceeded the
    context); ``text`` is then empty. ``finish_reason`` is the backend's
    ("stop", "length", "tool_calls", ... or "" when unknown).
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_ms: float = 0.0
    model: str = ""
    finish_reason: str = ""
    error: str = ""
    route: tuple[tuple[str, float], ...] = ()  # (label, score), best first, for a request with ``route``
    part_routes: tuple[tuple[tuple[str, float], ...], ...] = ()  # the same for each of ``route.parts``, in order

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        object.__setattr__(self, "route", tuple(self.route))
        object.__setattr__(self, "part_routes", tuple(tuple(r) for r in self.part_routes))

    @property
    def ok(self) -> bool:
        return not self.error


@runtime_checkable
class CarriesRequest(Protocol):
    """A RunInference element: anything with a ``request`` attribute."""

    @property
    def request(self) -> ModelRequest: ...


@dataclass(frozen=True)
class ModelCall:
    """A ready-made RunInference element: the request plus the caller's payload.

    ``payload`` comes back untouched as ``PredictionResult.example.payload``.
    It must be picklable (Beam serialises elements between stages).
    """

    request: ModelRequest
    payload: Any = None


def request_of(element: CarriesRequest | ModelRequest) -> ModelRequest:
    """The ModelRequest an element carries (the element itself if it is one)."""
    if isinstance(element, ModelRequest):
        return element
    request = getattr(element, "request", None)
    if not isinstance(request, ModelRequest):
        raise TypeError(
            f"RunInference element {type(element).__name__} has no `.request: ModelRequest`; "
            "wrap it as ModelCall(request, payload)"
        )
    return request


# Per-call overrides every backend understands (RunInference's ``inference_args``).
INFERENCE_ARGS: frozenset[str] = frozenset({"max_tokens", "temperature", "seed"})


def check_inference_args(inference_args: dict[str, Any] | None, allowed: frozenset[str] = INFERENCE_ARGS) -> None:
    """Refuse inference_args a backend would silently ignore."""
    unknown = set(inference_args or {}) - allowed
    if unknown:
        raise ValueError(f"unsupported inference_args {sorted(unknown)}; allowed: {sorted(allowed)}")
