"""The RunInference plumbing every backend shares, written once (Beam's ``ml/inference/`` is the model).

A backend subclasses ``AgentModelHandler`` and writes only what differs:
``load_model`` and ``answer`` (a batch of requests, each with its token cap,
answered with one ``ModelResponse`` per request, in order). Its ``__init__``
sets ``_model_name`` and ``_max_tokens`` after calling Beam's ``__init__``
with its batching arguments. Everything else is here: inference-args
validation against the class's ``INFERENCE_ARGS``, unwrapping elements to
their ``ModelRequest`` (a contract violation fails before any model call),
the per-request cap, the ``PredictionResult`` zip, the byte count and the
metrics namespace.

The helpers (``token_caps``, ``predictions``, ``prompt_bytes``) stand alone
for a handler that must subclass another Beam handler (``vllm_gemma``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from agents.model_io import (
    INFERENCE_ARGS,
    CarriesRequest,
    ModelRequest,
    ModelResponse,
    check_inference_args,
    request_of,
)
from agents.streaming import DeltaStreamer

ModelT = TypeVar("ModelT")
Element = CarriesRequest | ModelRequest


def token_caps(requests: Sequence[ModelRequest], cap: int) -> list[int]:
    """Each request's generated-token cap: its own ``max_tokens``, at most ``cap``, at least 1."""
    return [max(1, min(r.max_tokens, cap)) for r in requests]


def predictions(
    batch: Sequence[Element], responses: Sequence[ModelResponse], model_name: str
) -> list[PredictionResult]:
    """One ``PredictionResult`` per element, in input order (a count mismatch is a backend bug: it raises)."""
    return [PredictionResult(e, r, model_name) for e, r in zip(batch, responses, strict=True)]


def prompt_bytes(batch: Sequence[Element]) -> int:
    # Prompt size, not the pickled payload (pickling every batch just for a metric is wasteful).
    return sum(request_of(e).prompt_chars() for e in batch)


class AgentModelHandler(ModelHandler[Element, PredictionResult, ModelT]):
    """A RunInference handler for this project's elements: ``.request: ModelRequest`` in, ``ModelResponse`` out.

    Output: ``PredictionResult(example=element, inference=ModelResponse,
    model_id=model_name)``, one per element, in input order.
    """

    METRICS_NAMESPACE: ClassVar[str]
    # Keys a caller may pass to RunInference(..., inference_args=...); anything else is refused.
    INFERENCE_ARGS: ClassVar[frozenset[str]] = INFERENCE_ARGS

    _model_name: str
    _max_tokens: int
    # Set by ``stream_deltas``: text steps stream their reply (agents.streaming); None: no streaming.
    _delta_streamer: DeltaStreamer | None = None
    # A backend whose ``answer`` feeds ``agents.streaming.sink_for(i)`` while it generates.
    STREAMS_TEXT: ClassVar[bool] = False

    def stream_deltas(self, streamer: DeltaStreamer | None) -> bool:
        """Stream text steps' replies through ``streamer``; False (and nothing set) if this backend cannot."""
        if streamer is not None and not self.STREAMS_TEXT:
            return False
        self._delta_streamer = streamer
        return streamer is not None

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        check_inference_args(inference_args, self.INFERENCE_ARGS)

    def run_inference(
        self,
        batch: Sequence[Element],
        model: ModelT,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        self.validate_inference_args(inference_args)
        args = dict(inference_args or {})
        requests = [request_of(e) for e in batch]
        caps = token_caps(requests, int(args.get("max_tokens", self._max_tokens)))
        if self._delta_streamer is None:
            return predictions(batch, self.answer(model, requests, caps, args), self.model_name)
        with self._delta_streamer.open(batch) as stream:
            responses = self.answer(model, requests, caps, args)
        return predictions(stream.settle(responses), responses, self.model_name)

    @abstractmethod
    def answer(
        self, model: ModelT, requests: Sequence[ModelRequest], caps: Sequence[int], args: Mapping[str, Any]
    ) -> list[ModelResponse]:
        """One response per request, in order; ``caps[i]`` bounds request i's generated tokens.

        ``args`` are the validated inference args (``max_tokens`` is already in ``caps``).
        A request the model cannot answer gets a response with ``error`` set, not an exception.
        """

    def get_num_bytes(self, batch: Sequence[Element]) -> int:
        return prompt_bytes(batch)

    def get_metrics_namespace(self) -> str:
        return self.METRICS_NAMESPACE
