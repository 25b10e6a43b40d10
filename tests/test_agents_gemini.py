"""The gemini backend: the real google-genai client against a local fake of the Gemini REST API.

Nothing here reaches Google: ``tests/gemini_server.py`` answers on 127.0.0.1,
and the handler is pointed at it with ``base_url``. Waits are short (back-off
of tens of milliseconds), so the whole module runs in a few seconds.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing.util import assert_that

from agents.backends import make_handler, registry
from agents.backends.gemini import (
    GEMINI_DEFAULT_MODEL,
    METRICS_NAMESPACE,
    GeminiHandler,
    retry_hint_s,
    to_contents,
)
from agents.model_io import ChatMessage, ModelCall, ModelRequest, ToolCall
from tests.gemini_server import GeminiServer, Reply

API_KEY = "AIzaFAKE-do-not-log-0123456789abcdef"

ORDER_TOOL: dict[str, Any] = {
    "name": "get_order",
    "description": "Look up one of the customer's orders by id.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "e.g. O-C0001-01"}},
        "required": ["order_id"],
    },
}


@pytest.fixture()
def server() -> Iterator[GeminiServer]:
    with GeminiServer() as s:
        yield s


def _handler(server: GeminiServer, **overrides: Any) -> GeminiHandler:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": server.url,
        "max_tokens": 64,
        "initial_backoff_s": 0.02,
        "max_backoff_s": 0.1,
        "jitter_s": 0.01,
        "deadline_s": 5.0,
        "attempt_timeout_s": 2.0,
    }
    options.update(overrides)
    return GeminiHandler(**options)


def _call(i: int, text: str | None = None, tools: tuple[dict[str, Any], ...] = ()) -> ModelCall:
    request = ModelRequest(
        (ChatMessage("system", "You are a support agent."), ChatMessage("user", text or f"question {i}")),
        max_tokens=64,
        tools=tools,
    )
    return ModelCall(request, payload=f"t{i}")


def _either(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A field the REST API accepts in either spelling (google-genai sends some nested ones in snake_case)."""
    return obj[camel] if camel in obj else obj[snake]


def _run(handler: GeminiHandler, batch: list[Any]) -> list[PredictionResult]:
    return list(handler.run_inference(batch, handler.load_model()))


# ---------------------------------------------------------------------------
# Registry and options
# ---------------------------------------------------------------------------


def test_registry_and_options_know_gemini() -> None:
    assert registry.get("gemini").calls_tools and not registry.get("gemini").needs_gpu
    handler = make_handler("gemini", model_max_tokens=32, gemini_model="gemini-2.5-flash-lite")
    assert isinstance(handler, GeminiHandler)
    assert handler.model_name == "gemini-2.5-flash-lite" and handler.max_tokens == 32
    assert make_handler("gemini", model_max_tokens=32).model_name == GEMINI_DEFAULT_MODEL

    from pipeline.options import SupportflowOptions

    opts = SupportflowOptions(["--model_backend=gemini", "--gemini_model=gemini-2.5-pro"])
    assert opts.model_backend == "gemini" and opts.gemini_model == "gemini-2.5-pro"
    assert SupportflowOptions([]).gemini_model == "gemini-2.5-flash"


# ---------------------------------------------------------------------------
# What the client sends, and what comes back
# ---------------------------------------------------------------------------


def test_request_mapping_system_roles_tools_and_tool_results(server: GeminiServer) -> None:
    request = ModelRequest(
        (
            ChatMessage("system", "You are a support agent."),
            ChatMessage("system", "Customer: C0001."),
            ChatMessage("user", "where is my order?"),
            ChatMessage("assistant", "Let me check."),
            ChatMessage("tool", '{"status": "shipped"}', name="get_order", tool_call_id="call-42"),
            ChatMessage("tool", "no tickets", name="list_tickets", tool_call_id="gcall_made_up_0"),
            ChatMessage("user", "and when does it arrive?"),
        ),
        max_tokens=40,
        tools=(ORDER_TOOL,),
    )
    [result] = _run(_handler(server), [request])
    assert result.inference.ok, result.inference.error
    assert result.inference.text == "echo: and when does it arrive?"

    [sent] = server.requests
    assert sent.model == GEMINI_DEFAULT_MODEL and sent.rpc == "generateContent" and sent.api_version == "v1beta"
    assert sent.system_text == "You are a support agent.\n\nCustomer: C0001."
    roles = [c["role"] for c in sent.contents]
    assert roles == ["user", "model", "user"]  # tool results and the next user text share one user turn
    responses = [p["functionResponse"] for p in sent.contents[2]["parts"] if "functionResponse" in p]
    assert responses[0] == {"id": "call-42", "name": "get_order", "response": {"status": "shipped"}}
    assert responses[1] == {"name": "list_tickets", "response": {"output": "no tickets"}}  # made-up id not sent
    [declaration] = sent.function_declarations
    assert declaration["name"] == "get_order" and declaration["description"] == ORDER_TOOL["description"]
    schema = _either(declaration, "parametersJsonSchema", "parameters_json_schema")
    assert schema == ORDER_TOOL["parameters"]
    config = sent.generation_config
    assert config["maxOutputTokens"] == 40 and config["candidateCount"] == 1
    # Flash: thinking off, or it eats max tokens. (The SDK sends nested config fields in snake_case.)
    assert _either(config["thinkingConfig"], "thinkingBudget", "thinking_budget") == 0


def test_function_call_comes_back_as_tool_call(server: GeminiServer) -> None:
    server.script("my order", Reply.function_call("get_order", {"order_id": "O-C0001-01"}, text="Checking."))
    server.script("ticket", Reply.function_call("get_ticket", {"id": 7}, call_id="fc-7"))
    calls = [_call(0, "where is my order?", (ORDER_TOOL,)), _call(1, "my ticket?", (ORDER_TOOL,))]
    first, second = _run(_handler(server), calls)
    [tool_call] = first.inference.tool_calls
    assert isinstance(tool_call, ToolCall) and tool_call.name == "get_order"
    assert tool_call.parsed_arguments() == {"order_id": "O-C0001-01"}
    assert tool_call.id.startswith("gcall_")  # Gemini gave no id: a made-up one, never sent back
    assert first.inference.text == "Checking." and first.inference.finish_reason == "tool_calls"
    assert second.inference.tool_calls == (ToolCall(id="fc-7", name="get_ticket", arguments='{"id": 7}'),)
    assert all(r.function_declarations for r in server.requests)


def test_usage_finish_reason_and_timing(server: GeminiServer) -> None:
    server.script("long", Reply.text("cut", finish_reason="MAX_TOKENS", completion_tokens=64, thoughts_tokens=5))
    plain, cut = _run(_handler(server), [_call(0), _call(1, "long question")])
    assert (plain.inference.prompt_tokens, plain.inference.completion_tokens) == (11, 7)
    assert plain.inference.finish_reason == "stop" and plain.inference.model == GEMINI_DEFAULT_MODEL
    assert plain.model_id == GEMINI_DEFAULT_MODEL and plain.inference.model_ms > 0
    assert cut.inference.finish_reason == "length" and cut.inference.completion_tokens == 69  # candidates + thoughts


def test_blocked_prompt_is_an_error_response(server: GeminiServer) -> None:
    server.script("forbidden", Reply(body={"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}))
    [result] = _run(_handler(server), [_call(0, "forbidden words")])
    assert "blocked" in result.inference.error and "SAFETY" in result.inference.error


def test_thinking_budget_only_sent_where_it_can_be_switched_off(server: GeminiServer) -> None:
    _run(_handler(server, model="gemini-2.5-pro"), [_call(0)])
    _run(_handler(server, thinking_budget=512), [_call(1)])
    pro, explicit = server.requests
    assert pro.model == "gemini-2.5-pro" and "thinkingConfig" not in pro.generation_config
    assert _either(explicit.generation_config["thinkingConfig"], "thinkingBudget", "thinking_budget") == 512


def test_to_contents_merges_turns_and_skips_empty_messages() -> None:
    system, contents = to_contents(
        (ChatMessage("user", "a"), ChatMessage("user", "b"), ChatMessage("assistant", ""), ChatMessage("user", "c"))
    )
    assert system is None
    assert [(c.role, [p.text for p in c.parts]) for c in contents] == [("user", ["a", "b", "c"])]


# ---------------------------------------------------------------------------
# Retries, deadlines and per-element errors
# ---------------------------------------------------------------------------


def test_429_with_retry_info_waits_the_hinted_delay(server: GeminiServer) -> None:
    server.script("busy", Reply.rate_limited(retry_delay_s=0.6))
    start = time.monotonic()
    [result] = _run(_handler(server), [_call(0, "busy now?")])
    elapsed = time.monotonic() - start
    assert result.inference.ok and result.inference.text == "echo: busy now?"
    first, second = server.requests_for("busy")
    assert second.received_at - first.received_at >= 0.6  # back-off alone would be ~0.02 s
    assert elapsed >= 0.6 and result.inference.model_ms >= 600


def test_429_with_retry_after_header_is_honoured(server: GeminiServer) -> None:
    server.script("busy", Reply.rate_limited(retry_after="1"))
    [result] = _run(_handler(server), [_call(0, "busy now?")])
    assert result.inference.ok
    first, second = server.requests_for("busy")
    assert second.received_at - first.received_at >= 1.0


def test_retry_hint_beyond_the_deadline_gives_up_at_once(server: GeminiServer) -> None:
    server.script("quota", Reply.rate_limited(retry_delay_s=30))
    start = time.monotonic()
    [result] = _run(_handler(server, deadline_s=2.0), [_call(0, "quota gone")])
    assert time.monotonic() - start < 1.0
    assert "429" in result.inference.error and "gave up after 1 attempt" in result.inference.error
    assert len(server.requests) == 1


def test_a_stretch_of_503s_is_retried(server: GeminiServer) -> None:
    server.script("overloaded", Reply.unavailable(), Reply.unavailable(), Reply.error(500), Reply.unavailable())
    [result] = _run(_handler(server), [_call(0, "overloaded?")])
    assert result.inference.ok and result.inference.text == "echo: overloaded?"
    assert len(server.requests) == 5


def test_retries_exhausted_is_an_error_response(server: GeminiServer) -> None:
    server.script("down", *[Reply.unavailable()] * 10)
    [result] = _run(_handler(server, max_attempts=3), [_call(0, "down again")])
    assert not result.inference.ok and result.inference.text == ""
    assert "gave up after 3 attempt(s)" in result.inference.error and "503" in result.inference.error
    assert len(server.requests) == 3


def test_malformed_json_is_retried(server: GeminiServer) -> None:
    server.script("garbled", Reply.malformed())
    server.script("always garbled", *[Reply.malformed()] * 3)
    ok, bad = _run(_handler(server, max_attempts=3), [_call(0, "garbled?"), _call(1, "always garbled")])
    assert ok.inference.ok and ok.inference.text == "echo: garbled?"
    assert "malformed" in bad.inference.error


@pytest.mark.parametrize("status", [400, 403, 404])
def test_non_retryable_errors_fail_only_their_element(server: GeminiServer, status: int) -> None:
    server.script("bad", Reply.error(status, "Request contains an invalid argument."))
    results = _run(_handler(server), [_call(0), _call(1, "bad request"), _call(2)])
    assert [r.example.payload for r in results] == ["t0", "t1", "t2"]
    good0, bad, good2 = (r.inference for r in results)
    assert good0.ok and good2.ok and good0.text == "echo: question 0" and good2.text == "echo: question 2"
    assert bad.error.startswith(f"gemini {status} ") and "invalid argument" in bad.error and bad.text == ""
    assert len(server.requests_for("bad")) == 1  # not retried


def test_deadline_exceeded_is_an_error_not_a_hang(server: GeminiServer) -> None:
    server.script("slow", *[Reply.slow(10)] * 10)
    handler = _handler(server, attempt_timeout_s=0.4, deadline_s=1.0, max_attempts=10)
    start = time.monotonic()
    fast, slow = _run(handler, [_call(0), _call(1, "slow answer")])
    elapsed = time.monotonic() - start
    assert elapsed < 2.0
    assert fast.inference.ok
    assert not slow.inference.ok and "timeout" in slow.inference.error and "gave up" in slow.inference.error
    assert 1 < len(server.requests_for("slow")) < 10  # retried, within the deadline
    # Each attempt told the server how long the client waits.
    assert all(r.header("X-Server-Timeout") for r in server.requests)


def test_concurrency_is_bounded_and_order_kept(server: GeminiServer) -> None:
    server.responder = lambda r: Reply.slow(0.2, Reply.text(f"echo: {r.last_user_text()}"))
    handler = _handler(server, max_concurrency=3)
    batch = [_call(i) for i in range(9)]
    start = time.monotonic()
    results = _run(handler, batch)
    elapsed = time.monotonic() - start
    assert [r.example for r in results] == batch
    assert [r.inference.text for r in results] == [f"echo: question {i}" for i in range(9)]
    assert server.max_in_flight == 3
    assert 0.55 <= elapsed < 1.75  # 3 waves of 0.2 s, not 9 in a row (1.8 s)


# ---------------------------------------------------------------------------
# In a Beam pipeline: batches of several elements, one result each
# ---------------------------------------------------------------------------


def _check_results(results: list[tuple[str, str, str]]) -> None:
    by_id: dict[str, list[tuple[str, str]]] = {}
    for payload, text, error in results:
        by_id.setdefault(payload, []).append((text, error))
    expected_ids = {f"t{i}" for i in range(12)}
    if set(by_id) != expected_ids or any(len(v) != 1 for v in by_id.values()):
        raise AssertionError(
            f"want exactly one result per element, got {sorted((k, len(v)) for k, v in by_id.items())}"
        )
    for payload, [(text, error)] in by_id.items():
        i = int(payload[1:])
        if i == 5:
            if "400" not in error or text:
                raise AssertionError(f"t5 should carry the 400 error, got {(text, error)}")
        elif error or text != f"echo: question {i}":
            raise AssertionError(f"{payload}: unexpected {(text, error)}")


def _triple(result: PredictionResult) -> tuple[str, str, str]:
    return result.example.payload, result.inference.text, result.inference.error


def test_pipeline_one_result_per_element_with_faults_in_the_batch(server: GeminiServer) -> None:
    server.script("question 3", Reply.rate_limited(retry_delay_s=0.3))
    server.script("question 5", Reply.error(400, "Request contains an invalid argument."))
    server.script("question 8", Reply.unavailable(), Reply.unavailable())
    handler = _handler(server, min_batch_size=4, max_batch_size=4)
    calls = [_call(i) for i in range(12)]

    pipeline = beam.Pipeline(runner="FnApiRunner")
    out = pipeline | beam.Create(calls, reshuffle=False) | RunInference(handler) | beam.Map(_triple)
    assert_that(out, _check_results)
    result = pipeline.run()
    result.wait_until_finish()

    metrics = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in metrics["counters"]}
    assert counters["gemini_requests"] == 12
    assert counters["gemini_retries"] == 3 and counters["gemini_rate_limited"] == 1
    assert counters["gemini_errors"] == 1
    sizes = [d.committed for d in metrics["distributions"] if d.key.metric.name == "inference_request_batch_size"]
    assert sizes and sizes[0].max == 4 and sizes[0].count == 3  # really batches of several elements
    assert len(server.requests) == 12 + 3


# ---------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------


def test_api_key_never_in_logs_repr_or_errors(
    server: GeminiServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # everything: httpx, httpcore, google_genai, ours
    server.script("busy", Reply.rate_limited(retry_delay_s=0.05))
    server.script("bad", Reply.error(400, "API key not valid. Please pass a valid API key."))
    handler = _handler(server)
    model = handler.load_model()
    results = list(handler.run_inference([_call(0, "busy"), _call(1, "bad")], model))
    assert results[0].inference.ok and "API key not valid" in results[1].inference.error
    assert any(r.header("x-goog-api-key") == API_KEY for r in server.requests)  # it was really used
    assert any("retrying" in rec.getMessage() for rec in caplog.records)  # retries are logged...
    captured = capfd.readouterr()
    texts = [repr(handler), str(handler), repr(model), caplog.text, captured.out, captured.err]
    texts += [repr(r.inference) for r in results]
    assert not [t for t in texts if API_KEY in t]  # ...without the key


def test_credentials_come_from_the_environment(server: GeminiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "env-key-123")
    handler = _handler(server, api_key=None)
    assert "env-key-123" not in pickle.dumps(handler).decode("latin-1")  # read on the worker, not pickled
    [result] = _run(handler, [_call(0)])
    assert result.inference.ok and server.requests[0].header("x-goog-api-key") == "env-key-123"

    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(ValueError, match="GOOGLE_API_KEY"):
        handler.load_model()


def test_retry_hint_parsing() -> None:
    class _Err(Exception):
        def __init__(self, details: Any = None, headers: dict[str, str] | None = None) -> None:
            self.details = details
            self.response = type("R", (), {"headers": headers or {}})()

    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
    assert retry_hint_s(_Err({"error": {"details": [{"@type": "x.ErrorInfo"}, retry_info]}})) == 1.5
    nested = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": {"seconds": 2, "nanos": 5e8}}
    assert retry_hint_s(_Err({"error": {"details": [nested]}})) == 2.5
    assert retry_hint_s(_Err({}, {"retry-after": "3"})) == 3.0
    assert retry_hint_s(_Err({}, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # in the past
    assert retry_hint_s(_Err({"error": {"details": []}})) is None
    assert retry_hint_s(None) is None
