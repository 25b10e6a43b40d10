"""The instant backend: same RunInference contract as smollm2, no model."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing.util import assert_that, equal_to

from agents.backends import make_handler, registry
from agents.backends.instant import INSTANT_MODEL_NAME, InstantHandler, acknowledgement
from agents.model_io import ChatMessage, ModelCall, ModelRequest


def _call(i: int, text: str) -> ModelCall:
    request = ModelRequest((ChatMessage("system", "sys"), ChatMessage("user", text)), max_tokens=64)
    return ModelCall(request, payload=f"t{i}")


def test_registry_knows_both_backends() -> None:
    assert {"smollm2", "instant"} <= set(registry.NAMES)
    assert isinstance(make_handler("instant", model_max_tokens=32), InstantHandler)
    with pytest.raises(ValueError, match="unknown model backend"):
        make_handler("gpt-9", model_max_tokens=32)


def test_acknowledgement_is_deterministic_and_quotes_the_last_user_message() -> None:
    text = acknowledgement("  where   is\nmy order? ", max_words=64)
    assert text == 'Thanks, we got your message: "where is my order?". A support agent will follow up shortly.'
    assert acknowledgement("x " * 200, max_words=64).count("...") == 1
    assert len(acknowledgement("hello there", max_words=4).split()) == 4


def test_run_inference_one_result_per_element_in_order() -> None:
    handler = make_handler("instant", model_max_tokens=64)
    batch = [_call(i, f"question {i}") for i in range(5)]
    results = list(handler.run_inference(batch, handler.load_model()))
    assert [r.example for r in results] == batch
    for i, r in enumerate(results):
        assert f'"question {i}"' in r.inference.text
        assert r.inference.model == INSTANT_MODEL_NAME and r.model_id == INSTANT_MODEL_NAME
        assert r.inference.prompt_tokens > 0 and r.inference.completion_tokens > 0
        assert r.inference.ok and r.inference.model_ms >= 0


def _pair(result: PredictionResult) -> tuple[str, str]:
    return result.example.payload, result.inference.text


def test_in_a_beam_pipeline_payload_travels_with_its_reply() -> None:
    calls = [_call(i, f"question {i}") for i in range(5)]
    expected = [(c.payload, acknowledgement(c.request.last_user_text(), 64)) for c in calls]
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(calls) | RunInference(make_handler("instant", model_max_tokens=64)) | beam.Map(_pair)
        assert_that(out, equal_to(expected))


def test_bare_model_request_is_accepted_too() -> None:
    handler = make_handler("instant", model_max_tokens=8)
    request = ModelRequest((ChatMessage("user", "hi"),), max_tokens=64)
    [result] = handler.run_inference([request], handler.load_model())
    assert result.example is request and result.inference.completion_tokens <= 8
