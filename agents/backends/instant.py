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
from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from agents.model import CarriesRequest, ModelRequest, ModelResponse, check_inference_args, request_of

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


class InstantHandler(ModelHandler[CarriesRequest | ModelRequest, PredictionResult, InstantModel]):
    """Same element/result contract as ``LlamaCppHandler``; no model, no latency."""

    def __init__(self, *, max_tokens: int = 96, max_batch_size: int | None = None) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        super().__init__(max_batch_size=max_batch_size)
        self._max_tokens = max_tokens

    @property
    def model_name(self) -> str:
        return INSTANT_MODEL_NAME

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def load_model(self) -> InstantModel:
        return InstantModel()

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        check_inference_args(inference_args, frozenset({"max_tokens"}))

    def run_inference(
        self,
        batch: Sequence[CarriesRequest | ModelRequest],
        model: InstantModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        self.validate_inference_args(inference_args)
        cap = int((inference_args or {}).get("max_tokens", self._max_tokens))
        results = []
        for element in batch:
            request = request_of(element)
            response = model.complete(request, max_tokens=max(1, min(request.max_tokens, cap)))
            results.append(PredictionResult(element, response, INSTANT_MODEL_NAME))
        return results

    def get_num_bytes(self, batch: Sequence[CarriesRequest | ModelRequest]) -> int:
        return sum(request_of(e).prompt_chars() for e in batch)

    def get_metrics_namespace(self) -> str:
        return "supportflow_instant"
