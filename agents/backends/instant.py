"""The "instant" backend: answers at once, without a model.

NOT an agent. It exists to measure the pipeline's own overhead (Pub/Sub,
session stage, enrichment, RunInference plumbing, publishing) with the model
time taken out, and to run end-to-end tests fast. Its reply is a fixed,
deterministic acknowledgement that quotes (a shortened form of) the last
user message, so a test can tell which turn a reply answers.

Token counts are whitespace word counts (there is no tokenizer), so compare
them only with other "instant" runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from agents.backends.base import AgentModelHandler
from agents.model_io import ModelRequest, ModelResponse

INSTANT_MODEL_NAME = "instant"
QUOTE_CHARS = 80


def acknowledgement(last_user_text: str, max_words: int) -> str:
    """The instant reply for a user message: deterministic, at most ``max_words`` words."""
    quote = " ".join(last_user_text.split())
    if len(quote) > QUOTE_CHARS:
        quote = quote[: QUOTE_CHARS - 3].rstrip() + "..."
    text = f'Thanks, we got your message: "{quote}". A support agent will follow up shortly.'
    if not quote:
        text = "Thanks, we got your message. A support agent will follow up shortly."
    words = text.split()
    return " ".join(words[:max_words])


class InstantModel:
    model_name = INSTANT_MODEL_NAME

    def complete(self, request: ModelRequest, max_tokens: int) -> ModelResponse:
        start = time.perf_counter()
        text = acknowledgement(request.last_user_text(), max_tokens)
        completion = len(text.split())
        return ModelResponse(
            text=text,
            prompt_tokens=sum(len(m.content.split()) for m in request.messages),
            completion_tokens=completion,
            model_ms=(time.perf_counter() - start) * 1000.0,
            model=self.model_name,
            finish_reason="length" if completion >= max_tokens else "stop",
        )


class InstantHandler(AgentModelHandler[InstantModel]):
    """Same element/result contract as ``LlamaCppHandler``; no model, no latency."""

    METRICS_NAMESPACE = "supportflow_instant"
    INFERENCE_ARGS = frozenset({"max_tokens"})

    def __init__(self, *, max_tokens: int = 96, max_batch_size: int | None = None) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        super().__init__(max_batch_size=max_batch_size)
        self._model_name = INSTANT_MODEL_NAME
        self._max_tokens = max_tokens

    def load_model(self) -> InstantModel:
        return InstantModel()

    def answer(
        self, model: InstantModel, requests: Sequence[ModelRequest], caps: Sequence[int], args: Mapping[str, Any]
    ) -> list[ModelResponse]:
        return [model.complete(r, max_tokens=cap) for r, cap in zip(requests, caps, strict=True)]
