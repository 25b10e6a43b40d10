"""The support tools (tools/) against the real Firestore emulator with the seed data.

Read-only tools run on the seeded customers C0001..C0006, whose newest orders are
placed, shipped, delayed, delivered, returned and refunded (packs/shop/seed.py). Tools
that change data run on clones of those customers written under fresh ids
(C9001, ...) and deleted at the end of the module, so the shared seed set other
suites read stays as seeded. The
policy clock is the seed's ``REFERENCE_TIME``.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from contract.tool_calls import ToolCall
from packs.shop import eligibility as policy
from packs.shop.policy import default_policy
from packs.shop.records import REFUNDS, RETURNS
from packs.shop.seed import REFERENCE_TIME, build_customer, build_customers, customer_id, order_id
from stack.emulators import LocalStack
from tools.packs import load_pack
from tools.registry import FirestoreToolExecutor, ToolResult, openai_function
from tools.scope import AUDIT, ToolContext, is_transient, plain
from tools.toolbox import tool_declarations

STATUS_OF = {1: "placed", 2: "shipped", 3: "delayed", 4: "delivered", 5: "returned", 6: "refunded"}
_clones = itertools.count(9001)
_cloned: list[str] = []


# ---------------------------------------------------------------------------
# Helpers (also used by tests/test_steps.py)
# ---------------------------------------------------------------------------


def newest_order_id(index: int) -> str:
    return list(build_customer(index).orders)[-1]


def clone_customer(db: firestore.Client, index: int) -> str:
    """Write seed customer ``index`` again under a fresh id (orders renamed to match); returns the id."""
    src = build_customer(index)
    cid = customer_id(next(_clones))
    ref = db.collection("customers").document(cid)
    batch = db.batch()
    batch.set(ref, src.profile)
    for n, order in enumerate(src.orders.values(), start=1):
        batch.set(ref.collection("orders").document(order_id(cid, n)), order)
    batch.commit()
    _cloned.append(cid)
    return cid


def delete_clones(db: firestore.Client) -> None:
    """Remove the clones (and everything the tools wrote under them): the shared seed set stays as seeded."""
    while _cloned:
        db.recursive_delete(db.collection("customers").document(_cloned.pop()))


def context_of(db: firestore.Client, cid: str) -> dict[str, Any]:
    """The customer's context as the enrichment stage shapes it (profile, orders newest first, tickets)."""
    ref = db.collection("customers").document(cid)
    orders = ref.collection("orders").order_by("placed_at", direction=firestore.Query.DESCENDING).stream()
    return {
        "customer_id": cid,
        "profile": plain(ref.get().to_dict() or {}),
        "orders": [{"order_id": o.id, **plain(o.to_dict() or {})} for o in orders],
        "tickets": [{"ticket_id": t.id, **plain(t.to_dict() or {})} for t in ref.collection("tickets").stream()],
    }


def ctx_for(cid: str, turn: int = 1, session: str | None = None) -> ToolContext:
    session = session or f"s-{uuid.uuid4().hex[:8]}"
    return ToolContext(customer_id=cid, session_id=session, turn_id=f"{session}#{turn}")


def call(name: str, call_id: str = "call-1", **args: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=json.dumps(args))


def docs(db: firestore.Client, cid: str, collection: str) -> list[dict[str, Any]]:
    return [d.to_dict() or {} for d in db.collection("customers").document(cid).collection(collection).stream()]


@pytest.fixture(scope="module")
def db(seeded_stack: LocalStack) -> Iterator[firestore.Client]:
    client = firestore.Client(project=seeded_stack.project)
    yield client
    delete_clones(client)


@pytest.fixture(scope="module")
def executor(db: firestore.Client) -> FirestoreToolExecutor:
    return FirestoreToolExecutor(db, clock=lambda: REFERENCE_TIME)


def run(executor: FirestoreToolExecutor, ctx: ToolContext, name: str, **args: Any) -> ToolResult:
    return executor.execute(ctx, call(name, **args))


SHOP = load_pack("shop")
TOOL_NAMES, MUTATING_TOOLS, PII_ARGS = SHOP.tool_names, SHOP.mutating_tools, SHOP.pii_args
SUPPORT_TOOLS = [s.tool for s in SHOP.tools]


# ---------------------------------------------------------------------------
# Declarations (no stack needed)
# ---------------------------------------------------------------------------


def test_every_tool_is_declared_once_with_a_schema_and_no_customer_parameter() -> None:
    decls = tool_declarations()
    assert [d["name"] for d in decls] == list(TOOL_NAMES) and len(set(TOOL_NAMES)) == len(TOOL_NAMES) == 8
    for decl in decls:
        assert set(decl) == {"name", "description", "parameters"} and len(decl["description"]) > 20
        params = decl["parameters"]
        assert params["type"] == "object"
        names = [*params["properties"], *params.get("required", ())]
        assert not [n for n in names if re.search(r"customer|user|account|scope|tenant|session", n, re.I)], names
        text = json.dumps(params)
        assert "anyOf" not in text and '"title"' not in text
        for prop in params["properties"].values():
            assert prop.get("type") in ("string", "integer"), (decl["name"], prop)
    assert set(TOOL_NAMES) >= MUTATING_TOOLS | set(PII_ARGS)


def test_declarations_are_accepted_by_the_gemini_and_llamacpp_backends() -> None:
    from agents.backends.gemini import function_declarations
    from agents.backends.llamacpp import _tool_for_openai

    declared = function_declarations(tool_declarations())
    assert [d.name for d in declared] == list(TOOL_NAMES)
    assert declared[0].parameters_json_schema == tool_declarations()[0]["parameters"]
    wrapped = _tool_for_openai(tool_declarations()[0])
    assert wrapped["type"] == "function" and wrapped["function"]["name"] == "lookup_orders"


def test_declarations_come_from_the_langchain_tools() -> None:
    for tool in SUPPORT_TOOLS:
        assert "scope" not in tool.tool_call_schema.model_fields  # injected, not model-visible
        assert openai_function(tool)["parameters"]["properties"].keys() == tool.args_schema.model_fields.keys()


def test_policy_agrees_with_the_seeds_refundable_flag_on_every_seeded_order() -> None:
    checked = 0
    for customer in build_customers(300):
        for order in customer.orders.values():
            assert policy.is_refundable(plain(order), REFERENCE_TIME) == order["refundable"], order
            checked += 1
    assert checked > 600


# ---------------------------------------------------------------------------
# Read-only tools on the seeded customers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "status"), sorted(STATUS_OF.items()))
def test_lookup_orders_lists_the_newest_first(executor: FirestoreToolExecutor, index: int, status: str) -> None:
    cid = customer_id(index)
    result = run(executor, ctx_for(cid), "lookup_orders")
    assert result.status == "ok" and result.ok
    orders = result.content["orders"]
    assert orders[0]["order_id"] == newest_order_id(index) and orders[0]["status"] == status
    assert all(o["order_id"].startswith(f"O-{cid}-") for o in orders)
    assert "address" not in json.dumps(result.content)  # no contact data in order summaries

    one = run(executor, ctx_for(cid), "lookup_orders", order_id=newest_order_id(index).lower())
    assert one.content["order"]["order_id"] == newest_order_id(index)


def test_another_customers_order_is_not_found_like_a_missing_one(executor: FirestoreToolExecutor) -> None:
    ctx = ctx_for("C0001")
    foreign = run(executor, ctx, "lookup_orders", order_id="O-C0002-01")
    missing = run(executor, ctx, "lookup_orders", order_id="O-C0001-99")
    assert foreign.status == missing.status == "not_found"
    assert {k: v for k, v in foreign.content.items() if k != "order_id"} == {
        k: v for k, v in missing.content.items() if k != "order_id"
    }
    for name in ("get_shipment_status", "check_refund_eligibility"):
        assert run(executor, ctx, name, order_id="O-C0002-01").status == "not_found"
    # Path tricks stay inside the customer's subtree.
    for trick in ("../C0002/orders/O-C0002-01", "O-C0002-01/..", ".."):
        assert run(executor, ctx, "get_shipment_status", order_id=trick).status == "not_found"


def test_shipment_status(executor: FirestoreToolExecutor) -> None:
    placed = run(executor, ctx_for("C0001"), "get_shipment_status", order_id=newest_order_id(1)).content
    assert placed["dispatched"] is False and "tracking_id" not in placed and placed["order_status"] == "placed"

    seeded = build_customer(2).orders[newest_order_id(2)]
    shipped = run(executor, ctx_for("C0002"), "get_shipment_status", order_id=newest_order_id(2)).content
    assert shipped["dispatched"] is True and shipped["tracking_id"] == seeded["shipping"]["tracking_id"]
    assert (
        shipped["carrier"] == seeded["shipping"]["carrier"]
        and shipped["eta"] == seeded["shipping"]["eta"].date().isoformat()
    )
    assert "days_late" not in shipped

    delayed = run(executor, ctx_for("C0003"), "get_shipment_status", order_id=newest_order_id(3)).content
    assert delayed["order_status"] == "delayed" and delayed["days_late"] >= 1

    delivered = run(executor, ctx_for("C0004"), "get_shipment_status", order_id=newest_order_id(4)).content
    assert delivered["delivered_on"] and "days_late" not in delivered


@pytest.mark.parametrize(
    ("index", "kind", "reason"),
    [
        (1, "refund", "not_dispatched"),
        (2, "refund", "in_transit"),
        (4, "refund", "return_required"),
        (4, "return", "within_window"),
        (5, "refund", "return_received"),
        (5, "return", "already_returned"),
        (6, "refund", "already_refunded"),
        (1, "return", "not_dispatched"),
        (2, "return", "not_delivered"),
    ],
)
def test_eligibility_follows_the_policy_articles(
    executor: FirestoreToolExecutor, index: int, kind: str, reason: str
) -> None:
    oid = newest_order_id(index)
    result = run(executor, ctx_for(customer_id(index)), "check_refund_eligibility", order_id=oid, kind=kind)
    content = result.content
    assert result.status == "ok" and content["reason"] == reason and content["kind"] == kind
    assert content["eligible"] is (
        reason in ("not_dispatched", "within_window", "return_received")
        and not (kind == "return" and reason == "not_dispatched")
    )
    # The verdict cites the articles, with their text from Firestore.
    assert content["policy"] and all(p["excerpt"] and p["title"] for p in content["policy"])
    assert [p["slug"] for p in content["policy"]] == content["articles"]


def test_eligibility_of_a_delayed_order_matches_the_seed(executor: FirestoreToolExecutor) -> None:
    seeded = build_customer(3).orders[newest_order_id(3)]
    content = run(executor, ctx_for("C0003"), "check_refund_eligibility", order_id=newest_order_id(3)).content
    assert content["eligible"] is seeded["refundable"]
    assert content["reason"] == ("late_enough" if seeded["refundable"] else "not_late_enough")
    assert "delivery-delays" in content["articles"]


def test_return_label_fee_follows_the_plan(executor: FirestoreToolExecutor) -> None:
    plan = build_customer(4).profile["plan"]
    content = run(
        executor, ctx_for("C0004"), "check_refund_eligibility", order_id=newest_order_id(4), kind="return"
    ).content
    assert content["label_fee"] == default_policy().returns.fee_for(plan)


def test_search_help_articles(executor: FirestoreToolExecutor) -> None:
    ctx = ctx_for("C0001")
    result = run(executor, ctx, "search_help_articles", query="how do I return shoes that don't fit")
    assert result.status == "ok" and result.content["articles"][0]["slug"] == "returns"
    late = run(executor, ctx, "search_help_articles", query="my parcel is delayed", limit=1).content["articles"]
    assert [a["slug"] for a in late] == ["delivery-delays"]
    assert run(executor, ctx, "search_help_articles", query="zebra xylophone").status == "not_found"


# ---------------------------------------------------------------------------
# Arguments the model cannot use to escape
# ---------------------------------------------------------------------------


def test_customer_id_in_arguments_is_refused_not_used(executor: FirestoreToolExecutor) -> None:
    result = executor.execute(ctx_for("C0001"), call("lookup_orders", order_id="O-C0002-01", customer_id="C0002"))
    assert result.status == "invalid_args" and result.rejected_args == ("customer_id",)
    assert "O-C0002" not in json.dumps(result.content).replace("O-C0002-01", "")  # nothing about C0002 comes back


def test_unknown_tools_and_bad_arguments(executor: FirestoreToolExecutor) -> None:
    ctx = ctx_for("C0001")
    assert executor.execute(ctx, call("delete_account")).status == "unknown_tool"
    assert executor.execute(ctx, ToolCall("c", "lookup_orders", "not json")).status == "invalid_args"
    assert executor.execute(ctx, ToolCall("c", "lookup_orders", "[1, 2]")).status == "invalid_args"
    bad = executor.execute(ctx, call("start_refund_or_return", order_id="O-C0001-01", kind="steal"))
    assert bad.status == "invalid_args" and any("kind" in e for e in bad.content["errors"])
    assert executor.execute(ctx, call("lookup_orders", limit=500)).status == "invalid_args"


# ---------------------------------------------------------------------------
# Tools that change data: idempotent, audited, isolated
# ---------------------------------------------------------------------------


def test_refund_replay_refunds_once_and_the_audit_says_replay(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    cid = clone_customer(db, 1)  # newest order: placed
    oid = order_id(cid, len(build_customer(1).orders))
    ctx = ctx_for(cid)
    first = run(executor, ctx, "start_refund_or_return", order_id=oid, kind="refund", reason="changed my mind")
    # The replay (a retried bundle) rewords the free-text reason: still the same action.
    again = run(executor, ctx, "start_refund_or_return", order_id=oid, kind="refund", reason="no longer needed")
    assert first.status == again.status == "done" and not first.replayed and again.replayed
    assert again.content["refund_id"] == first.content["refund_id"] and first.content["order_cancelled"] is True

    refunds = docs(db, cid, REFUNDS)
    assert len(refunds) == 1 and refunds[0]["order_id"] == oid and refunds[0]["state"] == "requested"
    [audit] = docs(db, cid, AUDIT)
    assert audit["tool"] == "start_refund_or_return" and audit["replays"] == 1 and audit["status"] == "done"
    assert audit["session_id"] == ctx.session_id and audit["turn_id"] == ctx.turn_id
    assert audit["args"]["reason"] == "changed my mind"
    order = db.collection("customers").document(cid).collection("orders").document(oid).get().to_dict()
    assert order["status"] == "cancelled" and order["refund"]["refund_id"] == first.content["refund_id"]

    # A later turn asking again is a new action, and the policy says it was already requested.
    later = run(executor, ctx_for(cid, turn=2, session=ctx.session_id), "start_refund_or_return", order_id=oid,
                kind="refund")  # fmt: skip
    assert later.status == "denied" and later.content["reason"] == "already_requested"
    assert len(docs(db, cid, REFUNDS)) == 1 and len(docs(db, cid, AUDIT)) == 2


def test_concurrent_replays_still_refund_once(db: firestore.Client, executor: FirestoreToolExecutor) -> None:
    cid = clone_customer(db, 5)  # newest order: returned, refund due
    oid = order_id(cid, len(build_customer(5).orders))
    ctx = ctx_for(cid)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda _: run(executor, ctx, "start_refund_or_return", order_id=oid, kind="refund"), range(4))
        )
    assert {r.status for r in results} == {"done"} and len({r.content["refund_id"] for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(docs(db, cid, REFUNDS)) == 1
    [audit] = docs(db, cid, AUDIT)
    assert audit["replays"] == 3


def test_concurrent_replays_in_one_process_decide_in_one_transaction(
    db: firestore.Client, executor: FirestoreToolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads of one process do not run one action's transaction together: one decides, the others wait and
    replay the stored result (together they could abort each other on every retry)."""
    cid = clone_customer(db, 5)
    oid = order_id(cid, len(build_customer(5).orders))
    ctx = ctx_for(cid)
    started: list[int] = []
    transaction = db.transaction

    def counted(**kwargs: Any) -> firestore.Transaction:
        started.append(1)
        return transaction(**kwargs)

    monkeypatch.setattr(db, "transaction", counted)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda _: run(executor, ctx, "start_refund_or_return", order_id=oid, kind="refund"), range(8))
        )
    assert len(started) == 1 and sum(not r.replayed for r in results) == 1
    assert len({r.content["refund_id"] for r in results}) == 1


@pytest.mark.parametrize("round_", range(3))
def test_many_concurrent_replays_all_settle_on_the_one_stored_result(
    db: firestore.Client, executor: FirestoreToolExecutor, round_: int
) -> None:
    """Twelve replays at once, three times: Firestore's transaction wrapper gives up on a contended commit with
    a ValueError (and the emulator with "409 Transaction lock timeout"); each is retried, none is raised."""
    cid = clone_customer(db, 5)
    oid = order_id(cid, len(build_customer(5).orders))
    ctx = ctx_for(cid)
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(
            pool.map(lambda _: run(executor, ctx, "start_refund_or_return", order_id=oid, kind="refund"), range(12))
        )
    assert {r.status for r in results} == {"done"} and len({r.content["refund_id"] for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(docs(db, cid, REFUNDS)) == 1
    [audit] = docs(db, cid, AUDIT)
    assert audit["replays"] == 11


def test_a_transaction_given_up_on_contention_is_transient() -> None:
    try:
        try:
            raise gexc.Aborted("contention")
        except gexc.Aborted as exc:
            raise ValueError("Failed to commit transaction in 5 attempts.") from exc
    except ValueError as given_up:
        assert is_transient(given_up)
    assert is_transient(gexc.Conflict("Transaction lock timeout"))
    assert not is_transient(ValueError("a bug")) and not is_transient(KeyError("x"))


def test_refund_denied_by_policy_writes_nothing_but_the_audit(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    cid = clone_customer(db, 2)  # shipped
    oid = order_id(cid, len(build_customer(2).orders))
    result = run(executor, ctx_for(cid), "start_refund_or_return", order_id=oid, kind="refund")
    assert result.status == "denied" and result.content["reason"] == "in_transit"
    assert docs(db, cid, REFUNDS) == []
    [audit] = docs(db, cid, AUDIT)
    assert audit["status"] == "denied"


def test_return_of_a_delivered_order(db: firestore.Client, executor: FirestoreToolExecutor) -> None:
    cid = clone_customer(db, 4)  # delivered 9 days before the reference time
    oid = order_id(cid, len(build_customer(4).orders))
    result = run(executor, ctx_for(cid), "start_refund_or_return", order_id=oid, kind="return", reason="too big")
    assert result.status == "done" and result.content["return_id"].startswith("RMA-")
    [rma] = docs(db, cid, RETURNS)
    assert rma["state"] == "label_sent" and rma["order_id"] == oid
    check = run(executor, ctx_for(cid), "check_refund_eligibility", order_id=oid, kind="return").content
    assert check["eligible"] is False and check["reason"] == "already_requested"


def test_change_address_only_before_dispatch(db: firestore.Client, executor: FirestoreToolExecutor) -> None:
    cid = clone_customer(db, 1)
    oid = order_id(cid, len(build_customer(1).orders))
    new = {"line1": "5 Mill Road", "city": "Leeds", "postcode": "ls1 4ab"}
    result = run(executor, ctx_for(cid), "change_delivery_address", order_id=oid, **new)
    assert result.status == "done" and result.content["address"]["postcode"] == "LS1 4AB"
    order = db.collection("customers").document(cid).collection("orders").document(oid).get().to_dict()
    assert order["shipping"]["address"]["line1"] == "5 Mill Road"
    assert order["shipping"]["address"]["country"] == build_customer(1).profile["address"]["country"]

    shipped_cid = clone_customer(db, 2)
    shipped = order_id(shipped_cid, len(build_customer(2).orders))
    denied = run(executor, ctx_for(shipped_cid), "change_delivery_address", order_id=shipped, **new)
    assert denied.status == "denied" and denied.content["reason"] == "already_dispatched"
    order = db.collection("customers").document(shipped_cid).collection("orders").document(shipped).get().to_dict()
    assert order["shipping"]["address"] == build_customer(2).orders[newest_order_id(2)]["shipping"]["address"]


def test_open_ticket_and_handoff_are_idempotent_and_audited(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    cid = clone_customer(db, 3)
    oid = order_id(cid, 1)
    ctx = ctx_for(cid)
    ticket = run(executor, ctx, "open_ticket", subject="Parcel trace", details="Please trace it", order_id=oid)
    again = run(executor, ctx, "open_ticket", subject="Trace my parcel", order_id=oid)
    assert ticket.status == "done" and again.replayed and again.content["ticket_id"] == ticket.content["ticket_id"]
    tickets = [t for t in docs(db, cid, "tickets") if t.get("source") == "agent"]
    assert len(tickets) == 1 and tickets[0]["subject"] == "Parcel trace" and tickets[0]["status"] == "open"

    handoff = run(executor, ctx, "handoff_to_human", reason="customer_request", summary="Wants a person")
    assert handoff.status == "handed_off" and handoff.handed_off and handoff.content["handoff_id"].startswith("H-")
    assert len(docs(db, cid, "handoffs")) == 1
    assert sorted(a["tool"] for a in docs(db, cid, AUDIT)) == ["handoff_to_human", "open_ticket"]

    assert run(executor, ctx, "open_ticket", subject="x" * 5, order_id="O-C0002-01").status == "not_found"


def test_a_customer_cannot_change_another_customers_order(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    attacker, victim = clone_customer(db, 4), clone_customer(db, 1)
    victim_order = order_id(victim, len(build_customer(1).orders))
    before = db.collection("customers").document(victim).collection("orders").document(victim_order).get().to_dict()
    ctx = ctx_for(attacker)
    for name, args in [
        ("start_refund_or_return", {"order_id": victim_order, "kind": "refund"}),
        ("change_delivery_address", {"order_id": victim_order, "line1": "1 Evil St", "city": "X", "postcode": "X1"}),
        ("open_ticket", {"subject": "hello", "order_id": victim_order}),
    ]:
        assert run(executor, ctx, name, **args).status == "not_found", name
    after = db.collection("customers").document(victim).collection("orders").document(victim_order).get().to_dict()
    assert after == before
    for collection in (AUDIT, REFUNDS, RETURNS, "handoffs"):
        assert docs(db, victim, collection) == []
    # The attempt is audited under the attacker's own account.
    assert {a["status"] for a in docs(db, attacker, AUDIT)} == {"not_found"}
