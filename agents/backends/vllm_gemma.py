"""Gemma on vLLM: Beam's ``VLLMChatModelHandler`` behind this project's model contract.

The production option for Gemma on Dataflow GPU workers. Beam starts one vLLM
OpenAI-compatible server per worker machine (``share_model_across_processes``
is on in Beam's handler) and sends each batch's chats to it concurrently; vLLM's
continuous batching then mixes turns from every SDK process on the GPU, which
is faster than padding a batch into one ``generate`` (``hf_gemma``).

What this adds to Beam's handler: our elements (``.request: ModelRequest``)
in, ``ModelResponse`` out (text, token counts, timing), and the cap on
generated tokens per request, and the step protocol's constraint: a request's
``response_schema`` becomes vLLM's structured output (``response_format`` of
type ``json_schema``, OpenAI's form, which vLLM's server and llama.cpp's both
honour) in the inference args Beam's handler passes to
``chat.completions.create``. Beam's handler sends only ``role`` and
``content``, so tool results travel as user messages, and Gemma calls tools in
its documented function-calling style (``agents.protocol``), like ``hf_gemma``.

Not an ``agents.backends.base.AgentModelHandler``: its base must be Beam's
``VLLMChatModelHandler`` (whose ``load_model`` starts the server and whose
``run_inference`` is the client), and with both in the bases our
``run_inference`` would shadow the Beam one it calls. It reuses the base's
helpers instead (caps, result zip, byte count).

Tested here (tests/test_agents_vllm.py): this adapter and Beam's client code
path through RunInference, against llama.cpp's OpenAI-compatible server
standing in for the vLLM server. Not tested here: starting vLLM itself (it
cannot be installed on these machines); deploy/Dockerfile.gpu installs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.vllm_inference import OpenAIChatMessage, VLLMChatModelHandler

from agents.backends.base import predictions, prompt_bytes, token_caps
from agents.model_io import CarriesRequest, ChatMessage, ModelRequest, ModelResponse, check_inference_args, request_of

GEMMA_VLLM_DEFAULT_MODEL = "google/gemma-3-1b-it"
METRICS_NAMESPACE = "supportflow_vllm"
# For one L4 (24 GB): room for the 1B model and a KV cache of many concurrent turns.
DEFAULT_VLLM_SERVER_KWARGS: dict[str, str | None] = {
    "dtype": "bfloat16",
    "max-model-len": "8192",
    "gpu-memory-utilization": "0.90",
    "max-num-seqs": "64",
    "disable-log-requests": None,
}


def as_openai_chat(request: ModelRequest) -> list[OpenAIChatMessage]:
    """The request as Beam's role/content messages; a tool result becomes a user message that names the tool."""
    return [_one(m) for m in request.messages]


def _one(message: ChatMessage) -> OpenAIChatMessage:
    if message.role == "tool":
        return OpenAIChatMessage("user", f"Tool result ({message.name or 'tool'}): {message.content}")
    return OpenAIChatMessage(message.role, message.content)


def structured_output(schema: dict[str, Any]) -> dict[str, Any]:
    """vLLM's structured output for a JSON schema, in the OpenAI ``response_format`` form."""
    return {"type": "json_schema", "json_schema": {"name": "step", "schema": schema, "strict": True}}


def _schema_key(request: ModelRequest) -> str:
    return "" if request.response_schema is None else json.dumps(request.response_schema, sort_keys=True)


def _response(completion: Any, model_ms: float, model_name: str) -> ModelResponse:
    choice = completion.choices[0]
    usage = getattr(completion, "usage", None)
    return ModelResponse(
        text=choice.message.content or "",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        model_ms=model_ms,
        model=model_name,
        finish_reason=str(choice.finish_reason or ""),
    )


class GemmaVLLMHandler(VLLMChatModelHandler):
    """RunInference handler: this project's element/result contract on Beam's vLLM chat handler.

    ``max_batch_duration_secs`` lets a streaming pipeline gather turns from
    many sessions into one batch; vLLM serves them concurrently.
    """

    def __init__(
        self,
        *,
        model_name: str = GEMMA_VLLM_DEFAULT_MODEL,
        max_tokens: int = 96,
        vllm_server_kwargs: dict[str, str | None] | None = None,
        max_batch_size: int = 32,
        min_batch_size: int | None = None,
        max_batch_duration_secs: float | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("need max_tokens >= 1")
        super().__init__(
            model_name,
            vllm_server_kwargs={**DEFAULT_VLLM_SERVER_KWARGS, **(vllm_server_kwargs or {})},
            max_batch_size=max_batch_size,
            min_batch_size=min_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,  # type: ignore[arg-type]  # Beam says int
        )
        self._max_tokens = max_tokens

    @property
    def model_name(self) -> str:
        return self._model_name

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        check_inference_args(inference_args)

    def run_inference(  # type: ignore[override]  # our elements, not Beam's message lists
        self,
        batch: Sequence[CarriesRequest | ModelRequest],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        self.validate_inference_args(inference_args)
        args = dict(inference_args or {})
        requests = [request_of(e) for e in batch]
        caps = token_caps(requests, int(args.pop("max_tokens", self._max_tokens)))
        args.setdefault("temperature", 0.0)
        keys = [(c, _schema_key(r)) for c, r in zip(caps, requests, strict=True)]
        responses: list[ModelResponse | None] = [None] * len(batch)
        # One concurrent call per distinct (cap, schema): Beam's handler sends one set of args per call.
        for key in dict.fromkeys(keys):
            index = [i for i, k in enumerate(keys) if k == key]
            group_args = {**args, "max_tokens": key[0]}
            schema = requests[index[0]].response_schema
            if schema is not None:
                group_args["response_format"] = structured_output(schema)
            start = time.perf_counter()
            results = super().run_inference([as_openai_chat(requests[i]) for i in index], model, group_args)
            model_ms = (time.perf_counter() - start) * 1000.0
            for i, result in zip(index, results, strict=True):
                responses[i] = _response(result.inference, model_ms, self._model_name)
        return predictions(batch, responses, self._model_name)  # type: ignore[arg-type]  # every slot is filled

    def get_num_bytes(self, batch: Sequence[CarriesRequest | ModelRequest]) -> int:
        return prompt_bytes(batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE
