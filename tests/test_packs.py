"""Packs (tools/packs.py): every tool declares every fact, and a tool added in a pack needs no other file.

The second test writes a new pack into a temporary folder (the shop plus a ``cancel_subscription``
tool and one route for it), finds it through ``SUPPORTFLOW_PACK_PATH``, and checks that with no
other file changed the tool is declared to the models, routed, narrowed, run on the real Firestore
emulator, rendered and guarded.
"""

from __future__ import annotations

import json
import pickle
import shutil
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.cloud import firestore

from agents import embedding_router, guardrails
from agents.backends import registry
from agents.model_io import ModelRequest, ModelResponse
from agents.route_table import load_routes
from agents.state import StepConfig
from agents.steps import advance, start
from contract.turn import EnrichedTurn, Turn, UserMessage
from packs.shop.seed import REFERENCE_TIME
from stack.emulators import LocalStack
from tests.test_tools import clone_customer, context_of, delete_clones
from tools.packs import PACK_PATH_ENV, PackError, available_packs, load_pack
from tools.registry import FirestoreToolExecutor
from tools.toolbox import tool_declarations

VERSION = registry.get("smollm2").prompt_version  # the routed small model's prompt version


def _all_packs() -> list[str]:
    return [name for name in available_packs() if _loads(name)]


def _loads(name: str) -> bool:
    try:
        load_pack(name)
    except PackError:
        return False
    return True


@pytest.mark.parametrize("name", _all_packs())
def test_every_tool_declares_every_fact(name: str) -> None:
    pack = load_pack(name)
    versions = sorted(p.stem for p in (pack.root / "routes").glob("*.yaml"))
    tables = [t for t in (load_routes(v, name) for v in versions) if t is not None]
    for spec in pack.tools:
        assert len(spec.description) >= 20, spec.name
        assert spec.effect in ("reads", "changes")
        assert callable(spec.render)
        if spec.changes_data:
            assert spec.actions and spec.idempotency_key is not None, spec.name
            for action in spec.actions:
                assert action.offer and (action.terms or not action.consent), (spec.name, action.name)
                assert action.claim_words or not action.consent
        assert {*spec.text_args, *spec.span_args} <= spec.pii_args
        assert set(spec.id_args.values()) <= set(pack.ids)
        for routes in tables:
            routed = {r.tool for r in routes.routes.values()} | {r.then.tool for r in routes.routes.values() if r.then}
            # The core's answer route (agents.retrieval over Pack.help_articles) stands in for a pack's
            # article search: a read tool that takes only the customer's words.
            searches = bool(spec.text_args) and not spec.id_args and not spec.changes_data
            answered = "answer" in routed and pack.help_articles is not None
            if not (searches and answered):
                assert spec.name in routed, f"{routes.version}: {spec.name}: no route or follow-up reaches it"
    assert pack.customer_id.regex.fullmatch(pack.customer_id.example)


def test_a_pack_that_contradicts_itself_does_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "__init__.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import replace
            from packs.shop import PACK as SHOP
            # An id argument of a kind the pack never declares.
            tools = (replace(SHOP.tools[0], id_args={"order_id": "parcel"}), *SHOP.tools[1:])
            PACK = replace(SHOP, name="broken", tools=tools)
            """
        )
    )
    monkeypatch.setenv(PACK_PATH_ENV, str(tmp_path))
    load_pack.cache_clear()
    with pytest.raises(PackError, match="undeclared kinds \\['parcel'\\]"):
        load_pack("broken")
    with pytest.raises(PackError, match="no pack named 'nosuch'"):
        load_pack("nosuch")
    load_pack.cache_clear()


# ---------------------------------------------------------------------------
# A new tool in a temporary pack
# ---------------------------------------------------------------------------

NEW_PACK = '''
"""The shop, plus a subscription tool: written by tests/test_packs.py into a temporary folder."""
import dataclasses
from pathlib import Path
from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg, StructuredTool
from pydantic import BaseModel, Field

from packs.shop import PACK as SHOP
from packs.shop import records
from tools.actions import ActionSpec
from tools.scope import CustomerScope
from tools.spec import ToolSpec


class CancelArgs(BaseModel):
    order_id: str = Field(min_length=1, max_length=64, description="The order whose refill subscription ends.")


def cancel_subscription(order_id: str, *, scope: Annotated[CustomerScope, InjectedToolArg]) -> dict[str, Any]:
    ref = records.order_ref(scope, order_id)
    if ref is None:
        return {"status": "not_found", "order_id": order_id}

    def body(txn, aid):
        if scope.read_in(txn, ref) is None:
            return {"status": "not_found", "order_id": ref.id}
        txn.update(ref, {"subscription": "cancelled"})
        return {"status": "done", "order_id": ref.id}

    done = scope.run_action("cancel_subscription", {"order_id": ref.id}, {"order_id": ref.id}, body)
    return {**done.result, "replayed": True} if done.replayed else done.result


DESCRIPTION = "Cancel the refill subscription attached to one of the customer's orders."
CANCEL = ActionSpec(
    "subscription_cancel",
    ("cancel subscription", "unsubscribe", "end subscription", "stop subscription"),
    "cancel the refill subscription on one of your orders",
    claims=("subscription",),
)
SPEC = ToolSpec(
    "cancel_subscription",
    DESCRIPTION,
    "changes",
    lambda r: f"I've cancelled the refill subscription on order {r.get('order_id')}.",
    tool=StructuredTool.from_function(
        func=cancel_subscription, name="cancel_subscription", description=DESCRIPTION, args_schema=CancelArgs
    ),
    actions=(CANCEL,),
    idempotency_key=("order_id",),
    id_args={"order_id": "order"},
)
PACK = dataclasses.replace(SHOP, name="subs", tools=(*SHOP.tools, SPEC), root=Path(__file__).parent)
'''

SUBSCRIPTION_ROUTE = {
    "name": "subscription",
    "tool": "cancel_subscription",
    "examples": [
        "Please cancel my refill subscription.",
        "Stop the subscription on my order.",
        "I want to unsubscribe from the refills.",
        "End my subscription please.",
    ],
}


@pytest.fixture()
def subs_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    folder = tmp_path / "subs"
    (folder / "routes").mkdir(parents=True)
    (folder / "__init__.py").write_text(NEW_PACK)
    shop = load_pack("shop")
    table = yaml.safe_load((shop.root / "routes" / f"{VERSION}.yaml").read_text())
    table["routes"].append(SUBSCRIPTION_ROUTE)
    (folder / "routes" / f"{VERSION}.yaml").write_text(yaml.safe_dump(table))
    shutil.copytree(shop.root / "prompts", folder / "prompts")  # a pack brings its prompts (the shop's, here)
    monkeypatch.setenv(PACK_PATH_ENV, str(tmp_path))
    load_pack.cache_clear()
    load_routes.cache_clear()
    yield "subs"
    load_pack.cache_clear()
    load_routes.cache_clear()


@pytest.fixture(scope="module")
def db(seeded_stack: LocalStack) -> Iterator[firestore.Client]:
    client = firestore.Client(project=seeded_stack.project)
    yield client
    delete_clones(client)


def _bag_embed(texts: list[str]) -> np.ndarray:
    """A stand-in for the model's embeddings: hashed bags of content words (routing adds its lexical part)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in embedding_router.content_words(text):
            out[i, hash(word) % 256] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def _enriched(db: firestore.Client, cid: str, text: str) -> EnrichedTurn:
    t0 = datetime(2026, 11, 20, 11, 59, tzinfo=UTC)
    turn = Turn(
        session_id=f"s-{uuid.uuid4().hex[:8]}",
        customer_id=cid,
        turn_index=1,
        messages=(UserMessage("m-1", text, t0),),
        history=(),
        omitted_history=0,
        released_at=t0,
    )
    return EnrichedTurn(turn=turn, context=context_of(db, cid), enrich_ms=1.0)


def test_a_tool_added_in_a_pack_is_declared_routed_narrowed_run_rendered_and_guarded(
    subs_pack: str, db: firestore.Client
) -> None:
    pack = load_pack(subs_pack)
    # Declared to the models, with the pack's facts derived.
    names = [d["name"] for d in tool_declarations(pack=subs_pack)]
    assert names[-1] == "cancel_subscription" and "cancel_subscription" in pack.mutating_tools
    # Routed: the new route wins for a request in the customer's words.
    table = load_routes(VERSION, subs_pack)
    assert table is not None
    cid = clone_customer(db, 1)
    order = context_of(db, cid)["orders"][0]["order_id"]
    text = f"Please cancel the refill subscription on order {order}"
    ranked = embedding_router.rank(table.query(text), _bag_embed)
    assert ranked[0][0] == "subscription", ranked[:3]

    # Narrowed, run, rendered and guarded: one constrained turn, the router's answer scripted from the rank.
    executor = FirestoreToolExecutor(db, pack=pack, clock=lambda: REFERENCE_TIME)
    state = start(_enriched(db, cid, text), VERSION, StepConfig(tool_mode="constrained", pack=subs_pack))
    while not state.done:
        state = pickle.loads(pickle.dumps(state))
        request: ModelRequest = state.request
        assert request.route is not None  # the order id is narrowed to the one named: nothing left to decode
        state = advance(state, ModelResponse(text="", route=ranked, model="scripted"), executor)
    assert state.actions == ("subscription_cancel",) and state.route == "subscription"
    assert [c.name for c in state.tool_calls] == ["cancel_subscription"]
    assert state.tool_calls[0].arguments == {"order_id": order}
    assert state.reply_text == f"I've cancelled the refill subscription on order {order}."
    doc = db.collection("customers").document(cid).collection("orders").document(order).get().to_dict() or {}
    assert doc.get("subscription") == "cancelled"

    # Guarded: the same words with no action behind them are an unbacked promise of this pack's action...
    facts = guardrails.SessionFacts(cid, ids=guardrails.id_space(subs_pack))
    verdict = guardrails.check_output("I've cancelled your subscription.", facts)
    assert not verdict.ok and "unbacked_promise" in verdict.categories
    # ... and a message that only mentions it asks for nothing (the consent gate reads the pack's words).
    asked = start(_enriched(db, cid, "do my orders have a subscription?"), VERSION,
                  StepConfig(tool_mode="constrained", pack=subs_pack))  # fmt: skip
    forced = advance(asked, ModelResponse(text="", route=(("subscription", 1.0),), model="scripted"), executor)
    assert not forced.actions and "action_not_requested" in forced.flags
    assert "cancel the refill subscription" in forced.reply_text


def test_the_shop_declares_its_ids_once_and_the_core_reads_them() -> None:
    shop = load_pack("shop")
    facts = guardrails.SessionFacts("C0001", ids=guardrails.id_space("shop"))
    assert guardrails.foreign_ids("order O-C0002-01 and C0003", facts) == ["C0003", "O-C0002-01"]
    assert guardrails.foreign_ids("order O-C0001-01", facts) == []
    # Masked for routing by the pack's formats: two requests naming different ids route alike.
    table = load_routes(VERSION, "shop")
    assert table is not None
    assert table.query("where is O-C0001-02").text == table.query("where is O-C0042-07").text == "Where is it"
    assert json.loads(json.dumps(shop.pii_args["change_delivery_address"], default=sorted))


def test_refusals_are_worded_by_the_pack_or_neutrally() -> None:
    """The guardrails' refusals speak the pack's words (the shop's orders), never one business's to another."""
    asking = "show me the orders of customer C0042"
    shop = guardrails.check_input(asking, guardrails.SessionFacts("C0001", ids=guardrails.id_space("shop")),
                                  load_pack("shop").texts)  # fmt: skip
    assert shop.action == "refuse" and "your own orders" in shop.reply
    telco = guardrails.check_input("show me the invoices of ACC-100042",
                                   guardrails.SessionFacts("ACC-100001", ids=guardrails.id_space("telco")),
                                   load_pack("telco").texts)  # fmt: skip
    assert telco.action == "refuse" and telco.reply == guardrails.REFUSAL_OTHER_CUSTOMER
    assert "order" not in telco.reply
