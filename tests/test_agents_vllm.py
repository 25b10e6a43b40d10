"""The Gemma-on-vLLM backend: our adapter and Beam's ``VLLMChatModelHandler`` client path, through RunInference.

vLLM cannot be installed on these machines, so llama.cpp's OpenAI-compatible
server (SmolLM2, the project's CPU model) stands in for the vLLM server Beam
would start: everything from our elements to Beam's OpenAI client and back is
real; launching ``vllm.entrypoints.openai.api_server`` is not tested here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.ml.inference.vllm_inference import OpenAIChatMessage
from apache_beam.testing.util import assert_that

from agents.backends import make_handler
from agents.backends.llamacpp import LlamaCppModel, smollm2_gguf_path
from agents.backends.vllm_gemma import GemmaVLLMHandler, as_openai_chat
from agents.model_io import ChatMessage, ModelCall, ModelRequest

pytestmark = pytest.mark.timeout(300)

# Beam's client sends this key to the vLLM server; the stand-in server must accept it.
BEAM_VLLM_API_KEY = "EMPTY"


class RunningServer:
    """What Beam's handler asks of its ``_VLLMModelServer``, for a server that is already up."""

    def __init__(self, port: int) -> None:
        self.port = port

    def get_server_port(self) -> int:
        return self.port

    def check_connectivity(self, retries: int = 3) -> None:
        pass


class StandInServerHandler(GemmaVLLMHandler):
    """The real handler, pointed at a running OpenAI-compatible server instead of starting vLLM."""

    def __init__(self, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._port = port

    def load_model(self) -> Any:
        return RunningServer(self._port)


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    server = LlamaCppModel(smollm2_gguf_path(), threads=1, api_key=BEAM_VLLM_API_KEY)
    yield int(urlparse(server.listening_address).port or 0)


def _request(i: int, max_tokens: int) -> ModelRequest:
    return ModelRequest(
        messages=(
            ChatMessage("system", "You are a support assistant of an online shop. Be brief."),
            ChatMessage("user", "Where is my order? " + "Please hurry. " * i),
        ),
        max_tokens=max_tokens,
    )


def test_tool_results_travel_as_user_messages_that_name_the_tool() -> None:
    request = ModelRequest(
        (ChatMessage("user", "refund?"), ChatMessage("tool", '{"ok": true}', name="start_refund", tool_call_id="c1")),
        max_tokens=8,
    )
    assert as_openai_chat(request) == [
        OpenAIChatMessage("user", "refund?"),
        OpenAIChatMessage("user", 'Tool result (start_refund): {"ok": true}'),
    ]


def test_backend_is_selected_by_name_with_gemma_defaults() -> None:
    handler = make_handler("gemma_vllm", model_max_tokens=32, model_batch_size=16)
    assert isinstance(handler, GemmaVLLMHandler)
    assert handler.model_name == "google/gemma-3-1b-it" and handler.share_model_across_processes()
    assert handler.batch_elements_kwargs()["max_batch_size"] == 16


def _summary(result: PredictionResult) -> tuple[int, int, int, int, str]:
    r = result.inference
    return (result.example.payload, result.example.request.max_tokens, r.prompt_tokens, r.completion_tokens, r.text)


def test_runinference_through_beams_vllm_client(server_port: int) -> None:
    handler = StandInServerHandler(server_port, max_tokens=10, max_batch_size=4, min_batch_size=4)
    # Two caps in one batch: each request is held to its own.
    calls = [ModelCall(_request(i, max_tokens=3 if i % 2 else 10), payload=i) for i in range(4)]

    def check(rows: list[tuple[int, int, int, int, str]]) -> None:
        rows = sorted(rows)
        assert [r[0] for r in rows] == [0, 1, 2, 3], rows
        prompt_tokens = [r[2] for r in rows]
        assert prompt_tokens == sorted(set(prompt_tokens)), f"a reply went to another element: {rows}"
        for _, cap, _, completion_tokens, text in rows:
            assert 0 < completion_tokens <= cap and text.strip(), rows

    with beam.Pipeline(runner="FnApiRunner") as p:
        assert_that(p | beam.Create(calls) | RunInference(handler) | beam.Map(_summary), check)
