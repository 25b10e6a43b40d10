"""Reply deltas: the guarded releaser, the delta contract, and text steps streaming onto the real Pub/Sub emulator.

The releaser runs the real output guardrails (``agents.guardrails``) with a seeded customer's facts; the
backends are the real ones (SmolLM2 on llama.cpp; Gemini's client against ``tests/gemini_server.py``
streaming with ``alt=sse``); deltas are published by the pipeline's own publisher to the emulator and
pulled back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from google.cloud import firestore

from agents import steps, stream_turn
from agents.backends.gemini import GeminiHandler
from agents.backends.llamacpp import LlamaCppHandler
from agents.backends.registry import get as backend
from agents.model_io import ModelResponse, ToolCall
from agents.state import AgentState, StepConfig
from agents.streaming import GuardedReleaser
from contract.deltas import DeltaKind, ReplyDelta, parse_delta
from contract.messages import ContractError
from contract.turn import EnrichedTurn, Turn, UserMessage
from pipeline.deltas import PubSubDeltaStreamer, SettleDeltas, first_text_ms
from stack.clients import publisher_client, subscriber_client
from stack.emulators import LocalStack
from stack.resources import create_subscription, delete_subscription, ensure_topic
from tests.gemini_server import GeminiServer, Reply
from tests.test_tools import context_of

T0 = datetime(2026, 11, 20, 11, 59, tzinfo=UTC)
OTHER_EMAIL = "dana.other@example.org"


def enriched_for(db: firestore.Client, cid: str, text: str) -> EnrichedTurn:
    turn = Turn(
        session_id=f"s-{uuid.uuid4().hex[:8]}",
        customer_id=cid,
        turn_index=1,
        messages=(UserMessage("m-1", text, T0),),
        history=(),
        omitted_history=0,
        released_at=T0,
    )
    return EnrichedTurn(turn=turn, context=context_of(db, cid), enrich_ms=3.0)


@pytest.fixture(scope="module")
def db(seeded_stack: LocalStack) -> firestore.Client:
    return firestore.Client(project=seeded_stack.project)


def gemini_state(db: firestore.Client, text: str, cid: str = "C0001") -> AgentState:
    entry = backend("gemini")
    return steps.start(enriched_for(db, cid, text), entry.prompt_version, StepConfig(tool_mode=entry.tool_mode))


def releases(state: AgentState, pieces: list[str], final: str | None) -> list[str]:
    out: list[str] = []
    r = stream_turn.releaser_for(state, out.append)
    for p in pieces:
        r.feed(p)
    r.finish(final)
    return out


def words(text: str) -> list[str]:
    """The text cut the way a model writes it: a word (with its leading space) at a time."""
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


# ---------------------------------------------------------------------------
# The releaser, with the real guardrails
# ---------------------------------------------------------------------------


def test_released_by_clause_and_put_together_equal_the_final(db: firestore.Client) -> None:
    state = gemini_state(db, "hi there")
    text = "Hello, thanks for writing in. I can help with orders, returns and refunds; what do you need?"
    out = releases(state, ["\n", *words(text)], text)
    assert out == ["Hello,", " thanks for writing in.", " I can help with orders,", " returns and refunds;",
                   " what do you need?"]  # fmt: skip
    assert "".join(out) == text


def test_another_customers_email_is_never_released(db: firestore.Client) -> None:
    state = gemini_state(db, "hi there")
    text = f"Sure, I can look. The other account uses {OTHER_EMAIL} as its address. Anything else?"
    out = releases(state, words(text), text)
    assert out == ["Sure,", " I can look."]
    assert all("@" not in piece and "dana" not in piece for piece in out)
    # The final reply (redacted) differs from what was shown: the turn will be retracted before it.
    final = steps.advance(state, ModelResponse(text=text, finish_reason="stop"), executor=None)  # type: ignore[arg-type]
    assert OTHER_EMAIL not in final.reply_text and final.reply_text != "".join(out)


def test_an_email_split_across_pieces_is_checked_whole(db: firestore.Client) -> None:
    state = gemini_state(db, "hi there")
    pieces = ["Write to dana", ".other@", "example", ".org, ", "please."]
    assert releases(state, pieces, "".join(pieces)) == []


def test_a_function_call_halts_the_release(db: firestore.Client) -> None:
    state = gemini_state(db, "where is my order?")
    out: list[str] = []
    r = stream_turn.releaser_for(state, out.append)
    r.feed("Let me check that for you. ")
    r.halt()
    r.feed("More text, never shown. ")
    r.finish(None)
    assert out == ["Let me check that for you."]


def test_a_refused_prefix_stops_for_good() -> None:
    out: list[str] = []
    r = GuardedReleaser(lambda prefix: "bad" not in prefix, out.append)
    for piece in ["One, ", "bad two, ", "three, ", "four."]:
        r.feed(piece)
    r.finish("One, bad two, three, four.")
    assert out == ["One,"] and r.stop_reason == "guardrails"


# SmolLM2-135M's greedy reply to "that's all, thanks" (support_tools_v1's chat route, customer C0001, 64 tokens,
# the first generation of a freshly loaded model: llama.cpp reusing a cached prompt decodes slightly differently):
# three conversational sentences, then one that states what the turn never had.
SMOL_CLOSING = (
    "You're welcome! I'm glad to help. If you have any more questions or need further assistance with your order "
    "please don't hesitate to ask. Good luck on the next delivery of a new shipment from Jonas Jones. Enjoy exploring "
    "your favorite destination and enjoying some fun in-flight entertainment at the latest Disney+ movie"
)


def smol_chat_state(db: firestore.Client, text: str) -> AgentState:
    """A SmolLM2 turn of support_tools_v1 routed to its chat route: the text step, before the model writes."""
    routed = steps.start(enriched_for(db, "C0001", text), "support_tools_v1",
                         StepConfig(tool_mode=backend("smollm2").tool_mode))  # fmt: skip
    return steps.advance(routed, ModelResponse(text="", route=(("chat", 0.9),), finish_reason="route"), None)  # type: ignore[arg-type]


def test_a_smollm2_closing_releases_its_conversational_sentences_and_stops_at_a_claim(db: firestore.Client) -> None:
    state = smol_chat_state(db, "that's all, thanks")
    out = releases(state, words(SMOL_CLOSING), SMOL_CLOSING)
    assert out == ["You're welcome!", " I'm glad to help.",
                   " If you have any more questions or need further assistance with your order please don't hesitate"
                   " to ask."]  # fmt: skip
    # The whole reply fails the same check; as small talk (no tool result, no passage) its grounded first
    # sentences are the final, the very text the deltas showed, so no retraction is needed.
    final = steps.advance(state, ModelResponse(text=SMOL_CLOSING, finish_reason="length"), None)  # type: ignore[arg-type]
    assert {"ungrounded", "grounded_lead_kept", "reply_rendered"} <= set(final.flags)
    assert final.reply_text == "".join(out)


def test_which_steps_stream(db: firestore.Client) -> None:
    gem = gemini_state(db, "hi there")
    assert stream_turn.streams(gem)
    routed = steps.start(enriched_for(db, "C0001", "hi, how are you?"), "support_tools_v1",
                         StepConfig(tool_mode=backend("smollm2").tool_mode))  # fmt: skip
    assert not stream_turn.streams(routed), "the routing step is no text step"
    assert stream_turn.streams(smol_chat_state(db, "hi, how are you?")), "the chat route's reply is a text step"
    assert not stream_turn.streams(steps.start(enriched_for(db, "C0001", "hi"), "support_system_v1",
                                               StepConfig(max_steps=1, tools=(), tool_mode="none")))  # fmt: skip


# ---------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------


def test_delta_wire_shape() -> None:
    d = ReplyDelta(session_id="s-1", turn_id="s-1#abc", seq=3, text="Hello,")
    back = parse_delta(d.to_bytes())
    assert back == d and back.key == ("s-1#abc", 3) and back.kind == DeltaKind.DELTA
    assert d.attributes() == {"session_id": "s-1", "turn_id": "s-1#abc", "kind": "delta", "seq": "3"}
    for bad in (b"{}", b'{"session_id": "s", "turn_id": "t", "seq": 0}', b"not json",
                b'{"session_id": "s 1", "turn_id": "t", "seq": 1}'):  # fmt: skip
        with pytest.raises(ContractError):
            parse_delta(bad)


# ---------------------------------------------------------------------------
# Streaming onto the emulator
# ---------------------------------------------------------------------------


@pytest.fixture()
def delta_topic(local_stack: LocalStack) -> Iterator[tuple[str, str]]:
    """A fresh delta topic and a subscription on it: (topic path, subscription path)."""
    name = f"deltas-{uuid.uuid4().hex[:8]}"
    with publisher_client() as pub:
        topic = ensure_topic(pub, local_stack.project, name)
    sub = create_subscription(local_stack.project, f"{name}-test", name)
    yield topic, sub
    delete_subscription(local_stack.project, f"{name}-test")


def pull_all(subscription: str, timeout_s: float = 10.0) -> list[ReplyDelta]:
    out: list[ReplyDelta] = []
    with subscriber_client() as sub:
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            resp = sub.pull(request={"subscription": subscription, "max_messages": 100}, timeout=5)
            if not resp.received_messages:
                quiet += 1 if out else 0
                time.sleep(0.2)
                continue
            quiet = 0
            out.extend(parse_delta(m.message.data) for m in resp.received_messages)
            ack_ids = [m.ack_id for m in resp.received_messages]
            sub.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
    return sorted(out, key=lambda d: d.seq)


def test_smollm2_chat_reply_streams_in_increments(db: firestore.Client, delta_topic: tuple[str, str]) -> None:
    topic, sub = delta_topic
    handler = LlamaCppHandler(threads=1, max_tokens=96)
    assert handler.stream_deltas(PubSubDeltaStreamer(topic))
    model = handler.load_model()
    smol = backend("smollm2")
    # "that's all, thanks": SmolLM2's greedy reply opens with three conversational sentences (SMOL_CLOSING);
    # most of its small talk states an unsourced fact by the second sentence, where the release stops.
    state = steps.start(enriched_for(db, "C0001", "that's all, thanks"), "support_tools_v1",
                        StepConfig(tool_mode=smol.tool_mode))  # fmt: skip
    [routed] = handler.run_inference([state], model)
    state = steps.advance(routed.example, routed.inference, None)  # type: ignore[arg-type]
    assert state.route == "chat" and stream_turn.streams(state)
    [result] = handler.run_inference([state], model)
    done = steps.advance(result.example, result.inference, None)  # type: ignore[arg-type]
    # Three sentences show before the final (the releaser stops at the first ungrounded sentence).
    assert done.done and done.stream.deltas >= 3, (result.inference.text, done.stream)
    deltas = pull_all(sub)
    assert [d.seq for d in deltas] == list(range(1, done.stream.deltas + 1))
    assert {d.turn_id for d in deltas} == {done.turn_id} and all(d.kind == DeltaKind.DELTA for d in deltas)
    shown = "".join(d.text for d in deltas)
    assert shown == done.stream.shown
    # What was shown passed the same checks as the final (guardrails and grounding): the final starts with it,
    # unless the model's later sentences made the whole reply fail and be replaced.
    assert done.reply_text.startswith(shown) or "ungrounded" in done.flags or "degenerate_output" in done.flags
    # The promise: the deltas equal the final, or the turn is retracted before it.
    [settled] = SettleDeltas(PubSubDeltaStreamer(topic)).process(done)
    assert (shown == done.reply_text) == (settled.stream.retractions == 0)
    # Deltas never touch the reply itself; they only record how far they got.
    plain = steps.advance(state, result.inference, None)  # type: ignore[arg-type]
    assert plain.reply_text == done.reply_text


def test_gemini_streams_through_the_real_client(db: firestore.Client, delta_topic: tuple[str, str]) -> None:
    topic, sub = delta_topic
    text = "Hello, good to hear from you. I can look up orders, returns and refunds. What can I do for you today?"
    with GeminiServer() as server:
        server.script("stream me", Reply.text(text))
        handler = GeminiHandler(base_url=server.url, api_key="test-key", max_tokens=128, max_attempts=1)
        assert handler.stream_deltas(PubSubDeltaStreamer(topic))
        model = handler.load_model()
        state = gemini_state(db, "stream me please")
        [result] = handler.run_inference([state], model)
        assert any(r.rpc == "streamGenerateContent" for r in server.requests)
    assert result.inference.text == text and not result.inference.error
    done = steps.advance(result.example, result.inference, None)  # type: ignore[arg-type]
    assert done.reply_text == text
    deltas = pull_all(sub)
    assert len(deltas) >= 3 and "".join(d.text for d in deltas) == text
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
    assert first_text_ms(done, 10_000.0) <= 10_000.0


def test_retraction_before_the_final_when_it_differs(db: firestore.Client, delta_topic: tuple[str, str]) -> None:
    topic, sub = delta_topic
    text = f"Sure, I can look. The other account uses {OTHER_EMAIL} as its address. Anything else?"
    with GeminiServer() as server:
        server.script("leak", Reply.text(text))
        handler = GeminiHandler(base_url=server.url, api_key="test-key", max_tokens=128, max_attempts=1)
        handler.stream_deltas(PubSubDeltaStreamer(topic))
        [result] = handler.run_inference([gemini_state(db, "leak it")], handler.load_model())
    done = steps.advance(result.example, result.inference, None)  # type: ignore[arg-type]
    assert done.stream.shown == "Sure, I can look."
    [settled] = list(SettleDeltas(PubSubDeltaStreamer(topic)).process(done))
    assert settled.stream.shown == "" and settled.stream.retractions == 1
    deltas = pull_all(sub)
    assert [d.kind for d in deltas] == [DeltaKind.DELTA, DeltaKind.DELTA, DeltaKind.RETRACT]
    assert all(OTHER_EMAIL not in d.text for d in deltas)
    # A finished turn whose deltas equal its reply is not retracted.
    clean = replace(done, reply_text=done.stream.shown)
    assert list(SettleDeltas(PubSubDeltaStreamer(topic)).process(clean)) == [clean]


def test_a_tool_step_retracts_what_it_showed(db: firestore.Client, delta_topic: tuple[str, str]) -> None:
    topic, sub = delta_topic
    with GeminiServer() as server:
        server.script(
            "where is my",
            Reply.function_call("lookup_orders", {}, text="Let me check your orders, one moment. "),
        )
        handler = GeminiHandler(base_url=server.url, api_key="test-key", max_tokens=128, max_attempts=1)
        handler.stream_deltas(PubSubDeltaStreamer(topic))
        [result] = handler.run_inference([gemini_state(db, "where is my order?")], handler.load_model())
    assert result.inference.tool_calls and isinstance(result.inference.tool_calls[0], ToolCall)
    progress = result.example.stream
    assert progress.shown == "" and progress.retractions == (1 if progress.deltas else 0)
    kinds = [d.kind for d in pull_all(sub, timeout_s=5)]
    assert kinds in ([], [DeltaKind.DELTA, DeltaKind.DELTA, DeltaKind.RETRACT])


# ---------------------------------------------------------------------------
# Gemma (transformers) on the CPU, random weights: the batch-wide streamer and the JSON reply adapter
# ---------------------------------------------------------------------------


class Recorder:
    """A ``TextSink`` that keeps what it was fed (the backend's side of the protocol, nothing faked)."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.halted = False

    def feed(self, piece: str) -> None:
        self.pieces.append(piece)

    def halt(self) -> None:
        self.halted = True


def test_gemma_streams_each_rows_text_as_generated() -> None:
    from agents import protocol
    from agents.backends.hf_gemma import GemmaConfig, GemmaHandler
    from agents.model_io import ChatMessage, ModelRequest
    from agents.streaming import bind

    handler = GemmaHandler(config=GemmaConfig(model_path="random:tiny", device="cpu"), max_tokens=40)
    assert handler.STREAMS_TEXT
    model = handler.load_model()
    # Random weights write arbitrary bytes; the decision schema (llguidance) keeps them readable text.
    schema = protocol.decision_schema([protocol.reply_variant(True)])
    requests = [
        ModelRequest(messages=(ChatMessage("user", f"hello {i}"),), max_tokens=40, response_schema=schema)
        for i in range(3)
    ]
    sinks = {0: Recorder(), 2: Recorder()}
    with bind(sinks):
        responses = handler.answer(model, requests, [40, 40, 24], {})
    for i, sink in sinks.items():
        assert len(sink.pieces) >= 10, sink.pieces  # token by token, not at the end
        assert "".join(sink.pieces) == responses[i].text, (sink.pieces, responses[i].text)
    assert len(responses[2].text) < len(responses[0].text)  # each row stops at its own cap


def test_reply_json_sink_streams_only_a_replys_text() -> None:
    out: list[str] = []
    r = GuardedReleaser(lambda prefix: True, out.append)
    sink = stream_turn.ReplyJsonSink(r)
    raw = '{"name": "reply", "parameters": {"text": "Hi there, welcome back. Your \\"order\\" ships today!"}}'
    for i in range(0, len(raw), 5):
        sink.feed(raw[i : i + 5])
    assert "".join(out) == 'Hi there, welcome back. Your "order" ships today!'
    out2: list[str] = []
    r2 = GuardedReleaser(lambda prefix: True, out2.append)
    sink2 = stream_turn.ReplyJsonSink(r2)
    for piece in ['{"name": "get_', 'shipment_status", "parameters": {"order_id": "O-C0001-05"}}']:
        sink2.feed(piece)
    assert out2 == [] and r2.stopped
    schema = {"anyOf": [{"properties": {"name": {"const": "reply"}, "parameters": {"properties": {"text": {}}}}}]}
    assert stream_turn.replies_in_words(schema)
    assert not stream_turn.replies_in_words(
        {"properties": {"name": {"const": "reply"}, "parameters": {"properties": {}}}}
    )


def test_terminal_delta_view_follows_the_clients_rules() -> None:
    from stack.delta_view import DeltaView

    waiting = [True]
    view = DeltaView("s-1", waiting=lambda: waiting[0])

    def d(seq: int, text: str = "", turn: str = "s-1#t", session: str = "s-1", kind: DeltaKind = DeltaKind.DELTA):
        return ReplyDelta(session_id=session, turn_id=turn, seq=seq, text=text, kind=kind)

    assert view.add(d(2, " two,")) is None  # past a gap: nothing shown yet
    assert view.add(d(1, "One,")) == "One, two,"
    assert view.add(d(1, "One,")) is None  # duplicate
    assert view.add(d(3, kind=DeltaKind.RETRACT)) == ""  # emptied in place
    assert view.add(d(4, "Fresh.")) == "Fresh."
    assert view.add(d(6, " six.")) is None  # gap at 5
    assert view.add(d(1, "x", session="s-2", turn="s-2#t")) is None
    assert view.final("s-1#t") == "Fresh."
    assert view.add(d(7, " late.")) is None
    waiting[0] = False
    assert view.add(d(1, "stray", turn="s-1#other")) is None
    reasons = [r for r, _, _ in view.dropped]
    assert reasons == ["duplicate", "another session", "seq gap", "after the final", "unknown turn"], view.dropped
