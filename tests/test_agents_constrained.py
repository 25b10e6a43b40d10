"""The constrained step protocol (agents/protocol.py) through real backends and real tools.

Every model step of a constrained backend must be exactly one of: a reply, a call
of one declared tool with arguments valid against its (narrowed) schema, or a
hand-off; and the tools must run for the session's own customer. Checked here
with models that cannot be trusted to produce that shape on their own:

- a random-weight tiny Gemma through transformers (llguidance masks its decoding);
- the gemma_vllm adapter, with llama.cpp's OpenAI-compatible server standing in
  for vLLM (Beam's client sends the schema as ``response_format``);
- SmolLM2 through llama.cpp, routed by its own embeddings.

The tools run against the seeded Firestore emulator (clones where data changes).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore

from agents import protocol
from agents.backends import registry
from agents.backends.hf_gemma import GemmaConfig, GemmaHandler
from agents.backends.llamacpp import LlamaCppHandler
from agents.state import TOOL_MODE_CONSTRAINED, AgentState, StepConfig
from agents.steps import advance, start
from agents.tool_calls import calls_made
from packs.shop.seed import REFERENCE_TIME
from stack.emulators import LocalStack
from tests.test_agents_vllm import StandInServerHandler, server_port  # noqa: F401 - the module's server fixture
from tests.test_steps import enriched_for
from tests.test_tools import context_of, delete_clones
from tools.registry import FirestoreToolExecutor

pytestmark = pytest.mark.timeout(600)

REQUESTS = (
    ("C0001", "Where is my order?"),
    ("C0002", "When will my order O-C0002-02 arrive?"),
    ("C0003", "I want a refund for my last order"),
    ("C0004", "Please talk to me about something else entirely"),
)


@pytest.fixture(scope="module")
def db(seeded_stack: LocalStack) -> Iterator[firestore.Client]:
    client = firestore.Client(project=seeded_stack.project)
    yield client
    delete_clones(client)


@pytest.fixture(scope="module")
def executor(db: firestore.Client) -> FirestoreToolExecutor:
    return FirestoreToolExecutor(db, clock=lambda: REFERENCE_TIME)


def own_order_ids(db: firestore.Client, cid: str) -> set[str]:
    return {o["order_id"] for o in context_of(db, cid)["orders"]}


def run_checked(state: AgentState, handler: Any, model: Any, executor: FirestoreToolExecutor) -> list[Any]:
    """Run the turn; every model step's output must be a valid decision (or routing). Returns the decisions."""
    decisions = []
    while not state.done:
        state = pickle.loads(pickle.dumps(state))  # what the pipeline does between stages
        request = state.request
        [result] = list(handler.run_inference([state], model))
        response = result.inference
        assert not response.error, response.error
        if request.route is not None:
            assert response.route and response.route[0][0] in {label for label, _ in request.route.examples}
        elif request.response_schema is not None:
            decisions.append(protocol.parse_decision(response.text, request.response_schema, "check"))
        state = advance(state, response, executor)
    decisions.append(state)
    return decisions


def check_scoped(state: AgentState, db: firestore.Client, cid: str) -> None:
    own = own_order_ids(db, cid)
    for call in calls_made(state):
        args = call.parsed_arguments()
        if "order_id" in args:
            mentioned = {"O-C0002-02"} if cid == "C0002" else set()
            assert args["order_id"] in own | mentioned, (cid, call)
    assert all(r.status not in ("invalid_args", "unknown_tool") for r in state.tool_calls), state.tool_calls


# Fewer tools keep the byte-level prompts of the random model short (CPU time).
GEMMA_TEST_TOOLS = ("lookup_orders", "get_shipment_status", "check_refund_eligibility", "handoff_to_human")


def gemma_plan(max_tokens: int) -> tuple[str, StepConfig]:
    entry = registry.get("gemma")
    assert entry.tool_mode == TOOL_MODE_CONSTRAINED
    config = StepConfig(max_steps=3, max_tokens=max_tokens, tool_mode=entry.tool_mode, tools=GEMMA_TEST_TOOLS)
    return entry.prompt_version, config


def test_every_backend_but_instant_calls_tools() -> None:
    modes = {name: b.tool_mode for name, b in registry.REGISTRY.items()}
    assert modes["instant"] == "none"
    assert all(mode != "none" for name, mode in modes.items() if name != "instant"), modes


@pytest.mark.parametrize(("cid", "text"), REQUESTS)
def test_random_gemma_steps_are_valid_decisions(
    cid: str, text: str, db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    version, config = gemma_plan(max_tokens=360)
    gemma = GemmaConfig(model_path="random:tiny", device="cpu", max_prompt_tokens=12000)
    handler = GemmaHandler(config=gemma, max_tokens=360)
    model = handler.load_model()
    out = run_checked(start(enriched_for(db, cid, text), version, config), handler, model, executor)
    *decisions, state = out
    assert decisions, "the turn made no constrained step"
    assert state.done and state.outcome.value in ("answered", "handoff")
    check_scoped(state, db, cid)


@pytest.mark.parametrize(("cid", "text"), REQUESTS[:2])
def test_vllm_adapter_steps_are_valid_decisions(
    cid: str,
    text: str,
    server_port: int,  # noqa: F811
    db: firestore.Client,
    executor: FirestoreToolExecutor,  # noqa: F811
) -> None:
    version, config = gemma_plan(max_tokens=160)
    handler = StandInServerHandler(server_port, max_tokens=160)
    model = handler.load_model()
    *decisions, state = run_checked(start(enriched_for(db, cid, text), version, config), handler, model, executor)
    assert decisions and state.done
    check_scoped(state, db, cid)


def test_smollm2_routes_and_looks_up_the_newest_order(db: firestore.Client, executor: FirestoreToolExecutor) -> None:
    entry = registry.get("smollm2")
    config = StepConfig(max_steps=4, max_tokens=96, tool_mode=entry.tool_mode)
    handler = LlamaCppHandler(max_tokens=96, threads=1)
    model = handler.load_model()
    for cid in ("C0001", "C0002", "C0003"):
        state = start(enriched_for(db, cid, "Where is my order?"), entry.prompt_version, config)
        *_, state = run_checked(state, handler, model, executor)
        check_scoped(state, db, cid)
        assert any(f.startswith("route_") for f in state.flags), state.flags
        made = calls_made(state)
        assert made, f"{cid}: no tool call for 'Where is my order?' ({state.flags})"
        newest = context_of(db, cid)["orders"][0]
        if made[-1].name in ("get_shipment_status", "lookup_orders"):
            assert newest["order_id"] in state.reply_text and str(newest["status"]) in state.reply_text
        results = [json.loads(m.content) for m in state.messages if m.role == "tool"]
        assert all(r.get("status") not in ("invalid_args", "error") for r in results)
