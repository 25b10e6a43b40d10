"""Two requests in one message (agents/requests.py, the constrained protocol's several-requests path).

The splitting is tested on its own (pure). Then whole turns: a scripted router ranks the message and
its parts by keywords (as the backend ranks them by embeddings), a scripted model decodes any argument
left open, and the real tools run on clones of seeded customers over the Firestore emulator.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore

from agents.constrained import FLAG_SEVERAL_REQUESTS, FLAG_WHICH_RECORD
from agents.model_io import ModelRequest, ModelResponse
from agents.protocol import FUNCTION_CALLING_PREAMBLE
from agents.requests import Requests, focused, split
from agents.router import router_for
from agents.state import AgentState, Outcome, StepConfig, passage_index
from agents.steps import advance, start
from contract.turn import EnrichedTurn, Turn, UserMessage
from packs.shop.seed import REFERENCE_TIME
from stack.emulators import LocalStack
from tests.test_consent import RecordingExecutor
from tests.test_tools import clone_customer, context_of, delete_clones
from tools.registry import FirestoreToolExecutor

VERSION = "support_tools_v2"
T0 = datetime(2026, 11, 20, 11, 59, tzinfo=UTC)

# (keyword, route): the scripted router's table; the first keyword in the text wins, none: a vague match.
KEYWORDS = (
    ("supervisor", "escalate"),
    ("how long", "help"),
    ("return", "return_start"),
    ("where", "shipment"),
    ("late", "shipment"),
    ("thank", "closing"),
    ("address", "address"),
)


# ---------------------------------------------------------------------------
# Splitting (pure)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "my parcel is late and I also want to return the boots",
            ("my parcel is late", "I also want to return the boots"),
        ),
        ("Where is my tent? Please refund the boots.", ("Where is my tent?", "Please refund the boots.")),
        ("where is my tent; also refund the boots", ("where is my tent", "refund the boots")),
        ("my bottle is late, and could I return it?", ("my bottle is late", "could I return it?")),
        (
            "show me my orders plus what does the pro plan give me",
            ("show me my orders", "what does the pro plan give me"),
        ),
        ("my parcel is late\nalso I want to return the boots", ("my parcel is late", "I want to return the boots")),
    ],
)
def test_a_message_of_two_requests_splits_at_its_clause_boundary(text: str, parts: tuple[str, ...]) -> None:
    assert split(text) == parts


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order O-C0001-05?",
        "Cancel my purchase and reimburse me.",  # one request with two verbs
        "If it's late, can I get a refund?",  # a condition, not a request
        "Hi, where is my parcel?",  # a greeting is no request of its own
        "Where is O-C0001-05? Thanks!",
        "I also want a refund",  # "also" inside a clause
        "Can I still return the poles? They arrived a week ago.",  # the second says more about the first
        "I can't log in to my account. What should I do?",  # the second names nothing of its own
        "the tent plus the boots",
        "I bought boots. The box came late. The lid was wet. Now the laces squeak.",  # a story is routed whole
    ],
)
def test_a_message_of_one_request_does_not_split(text: str) -> None:
    assert split(text) == ()


def test_a_part_between_two_tools_is_no_clear_request() -> None:
    router = router_for(VERSION, "shop")
    assert router is not None
    clear = (("ticket", 1.05), ("human", 0.90))
    between = (("ticket", 0.972), ("refund_start", 0.970))  # a statement near two tools' examples
    same_tool = (("return_start", 0.99), ("return_check", 0.989))  # one tool's two routes: still clear
    parts = ("a b", "c d")
    assert [r.name for _, r in router.several(parts, (clear, same_tool), 2)] == ["ticket", "return_start"]
    assert router.several(parts, (between, same_tool), 2) == ()
    assert router.several(parts, (clear, (("ticket", 1.1),)), 2) == ()  # the same call twice: one request
    assert router.several(parts, (clear, (("greeting", 1.1),)), 2) == ()  # a conversational reply answers nothing
    assert router.several(parts, (clear,), 2) == ()  # the backend ranked no (or other) parts


def test_a_focused_turn_reads_only_its_part_and_keeps_its_ids() -> None:
    turn = Turn("s-1", "C0001", 1, (UserMessage("m-1", "a and b", T0), UserMessage("m-2", "c", T0)), (), 0, T0)
    enriched = EnrichedTurn(turn=turn, context={})
    part = focused(enriched, "b")
    assert [m.text for m in part.turn.messages] == ["b", ""]
    assert part.turn.turn_id == turn.turn_id and part.turn.message_ids == turn.message_ids


def test_requests_move_on_keeping_the_replies() -> None:
    parts = Requests(("a", "b"), ("shipment", "return_start"))
    moved = parts.next("reply a", first_result=2)
    assert (moved.part, moved.last, moved.first_result, moved.replies) == ("b", True, 2, ("reply a",))
    with pytest.raises(ValueError):
        Requests(("a",), ())


# ---------------------------------------------------------------------------
# Whole turns with a scripted router
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(seeded_stack: LocalStack) -> Iterator[firestore.Client]:
    client = firestore.Client(project=seeded_stack.project)
    yield client
    delete_clones(client)


@pytest.fixture
def executor(db: firestore.Client) -> RecordingExecutor:
    return RecordingExecutor(FirestoreToolExecutor(db, clock=lambda: REFERENCE_TIME))


@pytest.fixture
def customer(db: firestore.Client) -> tuple[str, str, str]:
    """A fresh clone of a customer with a shipped order and a recently delivered one: (id, shipped, delivered)."""
    cid = clone_customer(db, 53)
    orders = context_of(db, cid)["orders"]
    shipped = next(o["order_id"] for o in orders if o["status"] == "shipped")
    delivered = next(o["order_id"] for o in orders if o["status"] == "delivered")
    return cid, shipped, delivered


def _ranking(text: str) -> tuple[tuple[str, float], ...]:
    label = next((route for word, route in KEYWORDS if word in text.lower()), "clarify")
    return ((label, 1.0 if label != "clarify" else 0.5),)


def scripted(pick: str = "", part_routes: bool = True) -> Callable[[ModelRequest], ModelResponse]:
    """A router ranking by keyword (the parts too, unless ``part_routes`` is off), and a model that decodes
    the first value each argument allows (``pick`` where it is one of them)."""

    def answer(request: ModelRequest) -> ModelResponse:
        if request.route is not None:
            parts = tuple(_ranking(p) for p in request.route.parts) if part_routes else ()
            return ModelResponse(text="", route=_ranking(request.route.text), part_routes=parts, model="scripted")
        schema = request.response_schema or {}
        variant = (schema.get("anyOf") or [schema])[0]
        params = variant["properties"]["parameters"]["properties"]
        args = {}
        for name, prop in params.items():
            values = [prop["const"]] if "const" in prop else list(prop.get("enum") or [])
            args[name] = pick if pick in values else values[0]
        name = variant["properties"]["name"]["const"]
        return ModelResponse(text=json.dumps({"name": name, "parameters": args}), model="scripted")

    return answer


def enriched(db: firestore.Client, cid: str, text: str) -> EnrichedTurn:
    turn = Turn(f"s-{uuid.uuid4().hex[:8]}", cid, 1, (UserMessage("m-1", text, T0),), (), 0, T0)
    return EnrichedTurn(turn=turn, context=context_of(db, cid), enrich_ms=1.0)


def run(state: AgentState, answer: Callable[[ModelRequest], ModelResponse], executor: RecordingExecutor) -> AgentState:
    while not state.done:
        state = pickle.loads(pickle.dumps(state))  # Beam moves the state between stages
        state = advance(state, answer(state.request), executor)
    return state


def turn(db: firestore.Client, cid: str, text: str, answer: Any, executor: RecordingExecutor, **cfg: Any) -> AgentState:
    config = StepConfig(tool_mode="constrained", **cfg)
    return run(start(enriched(db, cid, text), VERSION, config), answer, executor)


def names(executor: RecordingExecutor) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments)) for c in executor.calls]


def test_two_requests_run_two_tool_chains_and_answer_both(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    cid, shipped, delivered = customer
    text = f"Where is my order {shipped}? Also I want to return order {delivered}, it doesn't fit."
    state = turn(db, cid, text, scripted(), executor)
    assert state.outcome == Outcome.ANSWERED
    # Each chain reads its own words: the return's reason is the second request, not the whole message.
    second = f"I want to return order {delivered}, it doesn't fit."
    assert names(executor) == [
        ("get_shipment_status", {"order_id": shipped}),
        ("check_refund_eligibility", {"order_id": delivered, "kind": "return"}),
        ("start_refund_or_return", {"order_id": delivered, "kind": "return", "reason": second}),
    ]
    assert state.actions == ("return",)
    assert state.step == 1  # both chains ran from the one routing step: no argument was left to decode
    assert {FLAG_SEVERAL_REQUESTS, "route_shipment", "route_return_start", "reply_rendered"} <= set(state.flags)
    # One reply: the shipment's status first, then the return, each rendered from its own results.
    first, then = state.reply_text.split("\n", 1)
    assert shipped in first and delivered not in first
    assert delivered in then and "return" in then.lower()


def test_a_request_that_could_mean_several_records_asks_which_and_the_other_is_answered(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    cid, shipped, delivered = customer
    state = turn(db, cid, f"where is my parcel? also I want to return order {delivered}", scripted(shipped), executor)
    # "my parcel" names none of the customer's orders: the first request asks which one instead of letting the
    # model guess, and no model step is spent on it; the second request runs its chain as it would alone.
    assert [n for n, _ in names(executor)] == ["check_refund_eligibility", "start_refund_or_return"]
    assert state.step == 1 and state.outcome == Outcome.ANSWERED and state.actions == ("return",)
    assert FLAG_WHICH_RECORD in state.flags
    question, then = state.reply_text.split("\n", 1)
    assert question.startswith("Which order do you mean") and shipped in question
    assert delivered in then and "return" in then.lower()


def test_one_confident_request_is_answered_exactly_as_before(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    """A message whose second part routes to no request (a thanks) runs as if no part had been ranked."""
    cid, shipped, _ = customer
    text = f"Where is my order {shipped}? Thanks so much for the quick help."
    state = turn(db, cid, text, scripted(), executor)
    before = turn(db, cid, text, scripted(part_routes=False), executor)  # today's path: the whole message only
    assert FLAG_SEVERAL_REQUESTS not in state.flags and state.requests is None
    assert (state.reply_text, state.flags, state.step) == (before.reply_text, before.flags, before.step)
    assert [c.name for c in state.tool_calls] == [c.name for c in before.tool_calls] == ["get_shipment_status"]


def test_a_second_request_that_only_mentions_an_action_does_not_run_it(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    cid, shipped, delivered = customer
    text = f"Where is my order {shipped}? Also I might return {delivered} later, not sure yet."
    state = turn(db, cid, text, scripted(), executor)
    assert FLAG_SEVERAL_REQUESTS in state.flags
    assert [n for n, _ in names(executor)] == ["get_shipment_status", "check_refund_eligibility"]  # checked only
    assert not state.actions and state.outcome == Outcome.ANSWERED
    assert shipped in state.reply_text and delivered in state.reply_text


def test_the_same_request_twice_is_one_request(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    cid, shipped, _ = customer
    state = turn(db, cid, f"My order {shipped} is late. Where is it?", scripted(), executor)
    assert FLAG_SEVERAL_REQUESTS not in state.flags
    assert [n for n, _ in names(executor)] == ["get_shipment_status"]


def test_a_policy_question_is_answered_from_its_own_passage(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    cid, shipped, _ = customer
    state = turn(
        db, cid, f"Where is my order {shipped}? Also, how long do I have to return an item?", scripted(), executor
    )
    assert FLAG_SEVERAL_REQUESTS in state.flags and "reply_article" in state.flags
    first, then = state.reply_text.split("\n", 1)
    assert shipped in first and then.startswith('From our help article "Returning an item"')


def test_an_article_request_no_article_answers_is_no_request(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    cid, shipped, _ = customer
    question = "how long is a zorblax quux?"
    assert not passage_index(start(enriched(db, cid, question), VERSION)).search(question)
    state = turn(db, cid, f"Where is my order {shipped}? Also {question}", scripted(), executor)
    assert FLAG_SEVERAL_REQUESTS not in state.flags


def test_a_request_for_a_person_beside_another_routes_the_message_whole(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    """A hand-off is no answer beside another (a misread fragment would end the turn): the whole message routes."""
    cid, shipped, _ = customer
    text = f"Where is my order {shipped}? And I'd like this escalated to a supervisor."
    state = turn(db, cid, text, scripted(), executor)
    assert FLAG_SEVERAL_REQUESTS not in state.flags
    assert state.outcome == Outcome.HANDOFF and [n for n, _ in names(executor)] == ["handoff_to_human"]


def test_a_budget_too_small_for_two_requests_routes_the_message_whole(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    """Each request may take a decision step and the last step runs no tools: three steps hold one request."""
    cid, shipped, delivered = customer
    text = f"Where is my order {shipped}? Also I want to return order {delivered}."
    state = turn(db, cid, text, scripted(), executor, max_steps=3)
    assert FLAG_SEVERAL_REQUESTS not in state.flags
    assert "get_shipment_status" not in [n for n, _ in names(executor)]  # one route, the whole message's


def test_an_argument_left_to_decode_is_asked_with_only_the_records_it_names(
    db: firestore.Client, executor: RecordingExecutor, customer: tuple[str, str, str]
) -> None:
    """The decision after a route reads the records its values name, not the whole system prompt."""
    cid, shipped, delivered = customer
    # A street with its number after the name reads two ways; the model picks, the records it needs beside it.
    text = f"Please change the delivery address of order {shipped} to Hauptstrasse 5, 10115 Berlin"
    config = StepConfig(tool_mode="constrained")
    state = advance(start(enriched(db, cid, text), VERSION, config), _route(text), executor)
    request = state.request
    assert request is not None and request.response_schema is not None and not executor.calls
    system = request.messages[0].content
    name = context_of(db, cid)["profile"]["name"]
    assert shipped in system and delivered not in system and name not in system
    assert system.startswith(FUNCTION_CALLING_PREAMBLE)
    assert request.messages[-1].content == text
    full = start(enriched(db, cid, text), VERSION, config).messages[0].content
    assert len(system) < len(full)


def _route(text: str) -> ModelResponse:
    return ModelResponse(text="", route=_ranking(text), model="scripted")
