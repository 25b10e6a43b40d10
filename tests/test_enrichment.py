"""Customer-context enrichment through Beam's ``Enrichment`` against the real Firestore and Bigtable emulators.

Pipelines run on the in-process FnApiRunner (batch, ``Create``) and once on the streaming
BundleBasedDirectRunner (``TestStream``). Outputs are collected in this process (``_SINKS``);
store RPCs and batch sizes come from the pipeline's own ``enrich`` metrics.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_stream

from contract.context_layout import CONTEXT_MALFORMED, CONTEXT_UNAVAILABLE, CUSTOMER_UNKNOWN, encode_cell
from contract.turn import EnrichedTurn, Turn, UserMessage
from packs.shop.seed import DEFAULT_CUSTOMERS, build_customer, customer_id, seed_firestore
from pipeline.enrichment.bigtable import BigtableContextHandler, context_from_cells
from pipeline.enrichment.context import NO_CACHE, CachePolicy, ContextResult, TTLCache, build_context, clear_caches
from pipeline.enrichment.firestore import FirestoreContextHandler
from pipeline.enrichment.transform import ContextHandler, EnrichCustomerContext, context_handler
from pipeline.settings import Settings
from stack.bigtable import admin_client, customer_cells, ensure_table, seed_bigtable, write_rows
from stack.clients import firestore_client
from stack.emulators import Emulator, LocalStack, StackError, bigtable_emulator, firestore_emulator, free_port
from tools.context_collection import ContextCollection
from tools.packs import load_pack

# -- helpers ---------------------------------------------------------------------------------------------------------

_SINKS: dict[str, list[EnrichedTurn]] = {}
_EMULATORS: dict[str, Emulator] = {}
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SHOP = load_pack("shop").context  # the seed data's pack: what its contexts hold
ORDERS, TICKETS = SHOP


def turn(cid: str, n: int = 0) -> Turn:
    msg = UserMessage(message_id=f"m-{cid}-{n}", text="where is my order?", sent_at=NOW)
    return Turn(f"s-{cid}-{n}", cid, n, (msg,), (), 0, NOW)


class _Collect(beam.DoFn):
    def __init__(self, token: str) -> None:
        self._token = token

    def process(self, e: EnrichedTurn) -> Iterator[None]:
        _SINKS[self._token].append(e)
        return iter(())


class _StopEmulatorAt(beam.DoFn):
    """Passes turns on; stops an emulator when the ``at``-th one goes by (a store dying mid-run)."""

    def __init__(self, key: str, at: int) -> None:
        self._key, self._at, self._seen = key, at, 0

    def process(self, t: Turn) -> Iterator[Turn]:
        self._seen += 1
        if self._seen == self._at:
            _EMULATORS[self._key].stop()
        yield t


@dataclass
class Run:
    out: list[EnrichedTurn]
    counters: dict[str, int]
    batch_sizes: list[int]  # min, max of the batch_size distribution
    seconds: float

    def by_customer(self) -> dict[str, EnrichedTurn]:
        return {e.turn.customer_id: e for e in self.out}


def run_enrichment(turns: Sequence[Turn], handler: ContextHandler, stop: tuple[str, int] | None = None) -> Run:
    token = uuid.uuid4().hex
    _SINKS[token] = []
    p = beam.Pipeline(runner=FnApiRunner())
    pcoll = p | beam.Create(list(turns))
    if stop:
        pcoll = pcoll | beam.ParDo(_StopEmulatorAt(*stop))
    _ = pcoll | "EnrichCustomerContext" >> EnrichCustomerContext(handler) | beam.ParDo(_Collect(token))
    t0 = time.monotonic()
    result = p.run()
    result.wait_until_finish()
    seconds = time.monotonic() - t0
    return Run(_SINKS.pop(token), *_metrics(result), seconds)


def _metrics(result: Any) -> tuple[dict[str, int], list[int]]:
    q = result.metrics().query(MetricsFilter().with_namespace("enrich"))
    counters: dict[str, int] = {}
    for c in q["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.result
    sizes = [0, 0]
    for d in q["distributions"]:
        if d.key.metric.name == "batch_size" and d.result.count:
            sizes = [d.result.min, d.result.max]
    return counters, sizes


def expected_context(index: int) -> dict[str, Any]:
    """What enrichment must attach for seed customer ``index``, straight from the seed data."""
    c = build_customer(index)

    def plain(v: Any) -> Any:
        return json.loads(encode_cell(v))

    orders = [{**plain(d), "order_id": oid} for oid, d in c.orders.items()]
    tickets = [{**plain(d), "ticket_id": tid} for tid, d in c.tickets.items()]
    return {
        "customer_id": c.customer_id,
        "profile": plain(c.profile),
        "orders": sorted(orders, key=lambda o: (o["placed_at"], o["order_id"]), reverse=True)[: ORDERS.max_kept],
        "tickets": sorted(tickets, key=lambda t: (t["created_at"], t["ticket_id"]), reverse=True)[: TICKETS.max_kept],
    }


def fs_handler(project: str, **kw: Any) -> FirestoreContextHandler:
    kw.setdefault("cache", NO_CACHE)
    return FirestoreContextHandler(project, **kw)


def bt_handler(project: str, **kw: Any) -> BigtableContextHandler:
    kw.setdefault("cache", NO_CACHE)
    return BigtableContextHandler(project, "supportflow", "customer_context", **kw)


@pytest.fixture(scope="module")
def fs_project(seeded_stack: LocalStack) -> str:
    """A Firestore namespace of this module's own, seeded afresh: other tests' tools change the shared seed
    customers (refunds, tickets), and these tests compare contexts with the seed data itself."""
    project = f"enrich-{uuid.uuid4().hex[:8]}"
    seed_firestore(firestore_client(project), DEFAULT_CUSTOMERS)
    return project


@pytest.fixture(scope="module")
def bigtable_host(tmp_path_factory: pytest.TempPathFactory, seeded_stack: LocalStack) -> Iterator[str]:
    """A Bigtable emulator holding the same customers as the seeded Firestore (env applied for the module)."""
    emu = bigtable_emulator(free_port(), tmp_path_factory.mktemp("bigtable") / "logs")
    emu.launch()
    try:
        emu.wait_ready(30)
        host = f"127.0.0.1:{emu.port}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BIGTABLE_EMULATOR_HOST", host)
            stats = seed_bigtable(admin_client(seeded_stack.project), DEFAULT_CUSTOMERS)
            assert stats.rows == DEFAULT_CUSTOMERS
            yield host
    finally:
        emu.stop()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_caches()


# -- Firestore -------------------------------------------------------------------------------------------------------


def test_firestore_enriches_known_customers_with_their_seed_data(seeded_stack: LocalStack, fs_project: str) -> None:
    indices = range(1, 13)
    turns = [turn(customer_id(i)) for i in indices]
    run = run_enrichment(turns, fs_handler(fs_project))
    assert sorted(e.turn.turn_id for e in run.out) == sorted(t.turn_id for t in turns)  # one out per turn in
    got = run.by_customer()
    for i in indices:
        e = got[customer_id(i)]
        assert e.context_flags == ()
        assert e.context == expected_context(i)
        assert e.enrich_ms > 0
    assert run.counters["turns"] == len(turns)
    # The seed's first six customers' newest orders hold each status: the variety really reaches the turn.
    assert [got[customer_id(i)].context["orders"][0]["status"] for i in range(1, 7)] == [
        "placed", "shipped", "delayed", "delivered", "returned", "refunded",
    ]  # fmt: skip


def test_firestore_reads_are_batched(seeded_stack: LocalStack, fs_project: str) -> None:
    n = 60
    turns = [turn(customer_id(i)) for i in range(1, n + 1)]
    batched = run_enrichment(turns, fs_handler(fs_project, max_batch_size=50))
    assert len(batched.out) == n and all(e.context_flags == () for e in batched.out)
    calls = batched.counters["store_calls"]
    assert calls < n / 4 and batched.batch_sizes[1] == 50  # a bundle read in batches of up to 50
    # One get_all per call for all its customers, plus the two subcollection queries per customer.
    assert batched.counters["store_rpcs"] == calls + 2 * n

    single = run_enrichment(turns[:10], fs_handler(fs_project, max_batch_size=1))
    assert single.counters["store_calls"] == 10 and single.batch_sizes == [1, 1]
    assert single.counters["store_rpcs"] == 10 * 3


def test_firestore_cache_answers_repeat_customers(seeded_stack: LocalStack, fs_project: str) -> None:
    turns = [turn(customer_id(i), n) for n in range(4) for i in range(1, 6)]  # 5 customers, 4 turns each
    expected = {customer_id(i): expected_context(i) for i in range(1, 6)}
    cached = run_enrichment(turns, fs_handler(fs_project, max_batch_size=1, cache=CachePolicy(ttl_s=60)))
    assert len(cached.out) == 20 and all(e.context_flags == () for e in cached.out)
    assert all(e.context == expected[e.turn.customer_id] for e in cached.out)
    assert cached.counters["cache_hits"] == 15 and cached.counters["store_rpcs"] == 5 * 3  # each customer read once

    # Batched without a cache, a customer appearing several times in one batch is read once too.
    batched = run_enrichment(turns, fs_handler(fs_project, max_batch_size=50))
    assert all(e.context == expected[e.turn.customer_id] for e in batched.out)
    assert batched.counters["store_calls"] == 1 and batched.counters["store_rpcs"] == 1 + 2 * 5


def test_unknown_customer_goes_on_flagged(seeded_stack: LocalStack, fs_project: str) -> None:
    turns = [turn("C9999"), turn("NOPE-1"), turn(customer_id(1))]
    run = run_enrichment(turns, fs_handler(fs_project))
    got = run.by_customer()
    for cid in ("C9999", "NOPE-1"):
        assert got[cid].context == {} and got[cid].context_flags == (CUSTOMER_UNKNOWN,)
    assert got[customer_id(1)].context_flags == ()
    assert run.counters[CUSTOMER_UNKNOWN] == 2


def test_malformed_documents_are_dropped_and_flagged(seeded_stack: LocalStack) -> None:
    project = f"malformed-{uuid.uuid4().hex[:6]}"  # its own emulator namespace: the shared seed set stays clean
    db = firestore_client(project)
    cid = "CBAD-1"
    ref = db.collection("customers").document(cid)
    ref.set({"name": 42, "plan": "pro", "email": "x@example.com"})  # name of the wrong type
    good = build_customer(1).orders["O-C0001-01"]
    ref.collection("orders").document("O-GOOD").set(good)
    ref.collection("orders").document("O-BAD").set({**good, "items": "two shoes", "placed_at": NOW})
    ref.collection("tickets").document("T-BAD").set({"subject": None, "status": "open", "created_at": NOW})
    run = run_enrichment([turn(cid)], fs_handler(project))
    [e] = run.out
    assert e.context_flags == (CONTEXT_MALFORMED,)
    assert e.context["profile"] == {"plan": "pro", "email": "x@example.com"}
    assert [o["order_id"] for o in e.context["orders"]] == ["O-GOOD"] and e.context["tickets"] == []
    assert run.counters[CONTEXT_MALFORMED] == 1


def test_store_down_flags_every_turn_within_the_bound(
    seeded_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, fs_project: str
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    turns = [turn(customer_id(i)) for i in range(1, 9)]
    run = run_enrichment(turns, fs_handler(fs_project, timeout_s=0.5, attempts=2))
    assert len(run.out) == 8
    assert all(e.context == {} and e.context_flags == (CONTEXT_UNAVAILABLE,) for e in run.out)
    assert run.seconds < 20


def test_store_that_never_answers_times_out(
    seeded_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, fs_project: str
) -> None:
    # A socket that completes TCP handshakes (kernel backlog) but never speaks: each RPC waits for its deadline.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{hung.getsockname()[1]}")
        handler = fs_handler(fs_project, timeout_s=0.4, attempts=2)
        t0 = time.monotonic()
        with handler:
            [(_, response)] = handler([beam.Row(customer_id="C0001")])
        elapsed = time.monotonic() - t0
    assert response.context_flags == [CONTEXT_UNAVAILABLE] and response.context == {}
    assert 0.4 <= elapsed < handler.max_call_s


def test_firestore_stopped_mid_run_loses_no_turn(
    seeded_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = firestore_emulator(free_port(), tmp_path / "logs", seeded_stack.project)
    emu.launch()
    try:
        emu.wait_ready(60)
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{emu.port}")
        seed_firestore(firestore_client(seeded_stack.project), 30)
        key = uuid.uuid4().hex
        _EMULATORS[key] = emu
        turns = [turn(customer_id(i)) for i in range(1, 31)]
        run = run_enrichment(
            turns, fs_handler(seeded_stack.project, timeout_s=0.5, attempts=2, max_batch_size=10), stop=(key, 12)
        )
    finally:
        emu.stop()
    assert sorted(e.turn.turn_id for e in run.out) == sorted(t.turn_id for t in turns)
    ok = [e for e in run.out if e.context_flags == ()]
    down = [e for e in run.out if e.context_flags == (CONTEXT_UNAVAILABLE,)]
    assert len(ok) + len(down) == 30 and ok and down
    assert all(e.context == expected_context(int(e.turn.customer_id[1:])) for e in ok)
    assert run.seconds < 40


def test_streaming_enrichment_with_test_stream(seeded_stack: LocalStack, fs_project: str) -> None:
    token = uuid.uuid4().hex
    _SINKS[token] = []
    stream = (
        test_stream.TestStream()
        .add_elements([turn(customer_id(i)) for i in range(1, 4)])
        .advance_watermark_to(10)
        .add_elements([turn(customer_id(i)) for i in (4, 5)] + [turn("C9999")])
        .advance_watermark_to(20)
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | stream
            | "EnrichCustomerContext" >> EnrichCustomerContext(fs_handler(fs_project))
            | beam.ParDo(_Collect(token))
        )
    got = {e.turn.customer_id: e for e in _SINKS.pop(token)}
    assert set(got) == {customer_id(i) for i in range(1, 6)} | {"C9999"}
    assert all(got[customer_id(i)].context == expected_context(i) for i in range(1, 6))
    assert got["C9999"].context_flags == (CUSTOMER_UNKNOWN,)


# -- Bigtable --------------------------------------------------------------------------------------------------------


def test_bigtable_gives_the_same_context_as_firestore(
    seeded_stack: LocalStack, bigtable_host: str, fs_project: str
) -> None:
    turns = [turn(customer_id(i)) for i in range(1, 41)] + [turn("C9999")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGTABLE_EMULATOR_HOST", bigtable_host)
        bt = run_enrichment(turns, bt_handler(seeded_stack.project))
    fs = run_enrichment(turns, fs_handler(fs_project))
    bt_ctx = {e.turn.customer_id: (e.context, e.context_flags) for e in bt.out}
    fs_ctx = {e.turn.customer_id: (e.context, e.context_flags) for e in fs.out}
    assert bt_ctx == fs_ctx
    assert bt_ctx[customer_id(7)] == (expected_context(7), ())
    assert bt_ctx["C9999"] == ({}, (CUSTOMER_UNKNOWN,))
    # Batched: one read_rows per call (not one read_row per turn).
    assert bt.counters["store_rpcs"] == bt.counters["store_calls"] < len(turns) / 4


def test_bigtable_one_at_a_time_uses_the_builtin_read(seeded_stack: LocalStack, bigtable_host: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGTABLE_EMULATOR_HOST", bigtable_host)
        run = run_enrichment(
            [turn(customer_id(i)) for i in (3, 4)] + [turn("C9999")], bt_handler("supportflow-local", max_batch_size=1)
        )
    got = run.by_customer()
    assert got[customer_id(3)].context == expected_context(3) and got[customer_id(4)].context == expected_context(4)
    assert got["C9999"].context_flags == (CUSTOMER_UNKNOWN,)
    assert run.counters["store_rpcs"] == 3


def test_bigtable_malformed_cells_are_dropped_and_flagged(seeded_stack: LocalStack, bigtable_host: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGTABLE_EMULATOR_HOST", bigtable_host)
        table = ensure_table(admin_client(seeded_stack.project))
        cells = customer_cells(build_customer(2))
        cells["profile"]["name"] = b"{not json"
        cells["orders"]["O-BROKEN"] = b'{"status": "shipped"}'  # valid JSON, not an order
        cid = f"CBAD-{uuid.uuid4().hex[:6]}"
        write_rows(table, [(cid, cells)])
        run = run_enrichment([turn(cid)], bt_handler(seeded_stack.project))
    [e] = run.out
    assert e.context_flags == (CONTEXT_MALFORMED,)
    assert "name" not in e.context["profile"] and e.context["profile"]["plan"] == build_customer(2).profile["plan"]
    assert [o["order_id"] for o in e.context["orders"]] == [o["order_id"] for o in expected_context(2)["orders"]]


def test_bigtable_stopped_mid_run_loses_no_turn(seeded_stack: LocalStack, tmp_path: Path) -> None:
    emu = bigtable_emulator(free_port(), tmp_path / "logs")
    emu.launch()
    try:
        emu.wait_ready(30)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{emu.port}")
            seed_bigtable(admin_client(seeded_stack.project), 30)
            key = uuid.uuid4().hex
            _EMULATORS[key] = emu
            turns = [turn(customer_id(i)) for i in range(1, 31)]
            run = run_enrichment(
                turns, bt_handler(seeded_stack.project, timeout_s=0.5, attempts=2, max_batch_size=10), stop=(key, 12)
            )
    finally:
        emu.stop()
    assert sorted(e.turn.turn_id for e in run.out) == sorted(t.turn_id for t in turns)
    ok = [e for e in run.out if e.context_flags == ()]
    down = [e for e in run.out if e.context_flags == (CONTEXT_UNAVAILABLE,)]
    assert len(ok) + len(down) == 30 and ok and down
    assert all(e.context == expected_context(int(e.turn.customer_id[1:])) for e in ok)
    assert run.seconds < 40


# -- no emulator -----------------------------------------------------------------------------------------------------


def test_build_context_orders_and_bounds() -> None:
    orders = [
        (f"O-{n:02d}", expected_context(5)["orders"][0] | {"placed_at": (NOW - timedelta(days=n)).isoformat()})
        for n in range(12)
    ]
    result = build_context("C0005", {"name": "A", "plan": "free"}, {"orders": orders}, SHOP)
    assert result.flags == ()
    assert [o["order_id"] for o in result.context["orders"]] == [f"O-{n:02d}" for n in range(ORDERS.max_kept)]
    assert result.context["tickets"] == []  # a declared collection with no documents is there, empty


VISITS = ContextCollection(
    "visits", id_field="visit_id", newest_first="at", max_kept=2, fields={"at": "timestamp", "room": "str?"}
)


def test_build_context_holds_what_the_pack_declares() -> None:
    """Any pack's collections, not the shop's: keys, ids, order, bound and checks all come from the declaration."""
    docs = [(f"V{n}", {"at": (NOW - timedelta(days=n)).isoformat(), "room": f"r{n}"}) for n in range(4)]
    result = build_context("X1", {"name": "A", "plan": "p"}, {"visits": docs, "orders": docs}, (VISITS,))
    assert result.flags == ()
    assert set(result.context) == {"customer_id", "profile", "visits"}  # undeclared documents are not read
    assert result.context["visits"] == [{"at": docs[n][1]["at"], "room": f"r{n}", "visit_id": f"V{n}"} for n in (0, 1)]
    bad = build_context("X1", {"name": "A", "plan": "p"}, {"visits": [*docs, ("V9", {"at": "yesterday"})]}, (VISITS,))
    assert bad.flags == (CONTEXT_MALFORMED,) and [v["visit_id"] for v in bad.context["visits"]] == ["V0", "V1"]
    assert build_context("X1", {"name": "A", "plan": "p"}, {}, ()).context == {
        "customer_id": "X1",
        "profile": {"name": "A", "plan": "p"},
    }


def test_bigtable_cells_of_a_declared_collection() -> None:
    cells = {"profile": {"name": '"A"', "plan": '"p"'}, "visits": {"V1": '{"at": "2026-11-19T00:00:00+00:00"}'}}
    result = context_from_cells("X1", cells, (VISITS,))
    assert result.flags == () and result.context["visits"] == [{"at": "2026-11-19T00:00:00+00:00", "visit_id": "V1"}]


def test_ttl_cache_expires_and_evicts() -> None:
    now = [0.0]
    cache = TTLCache(max_entries=2, clock=lambda: now[0])
    cache.put("a", 1, ttl_s=10)
    cache.put("b", 2, ttl_s=1)
    now[0] = 2.0
    assert cache.get("a") == 1 and cache.get("b") is None
    cache.put("c", 3, ttl_s=10)
    cache.put("d", 4, ttl_s=10)  # evicts the least recently used ("a")
    assert cache.get("a") is None and len(cache) == 2


def test_failures_are_never_cached() -> None:
    policy = CachePolicy(ttl_s=30, unknown_ttl_s=5)
    assert policy.ttl_for(ContextResult({}, (CONTEXT_UNAVAILABLE,))) == 0
    assert policy.ttl_for(ContextResult({}, (CUSTOMER_UNKNOWN,))) == 5
    assert policy.ttl_for(ContextResult({"customer_id": "C1"}, (CONTEXT_MALFORMED,))) == 30


def test_context_from_an_empty_row_is_unknown() -> None:
    assert context_from_cells("C1", {}, SHOP).flags == (CUSTOMER_UNKNOWN,)


def test_pipeline_option_selects_the_store() -> None:
    fs = context_handler(Settings.local())
    bt = context_handler(Settings.local("--context_store=bigtable", "--bigtable_instance=inst-1", "--bigtable_table=t"))
    assert isinstance(fs, FirestoreContextHandler)
    assert isinstance(bt, BigtableContextHandler) and (bt._instance_id, bt._table_id) == ("inst-1", "t")
    # --pack says what a context holds: the shop's records, the telco's profile alone (its records are its MCP's).
    assert fs.collections == bt.collections == SHOP
    assert context_handler(Settings.local("--pack=telco")).collections == ()


def test_missing_bigtable_emulator_is_named(tmp_path: Path) -> None:
    stack = LocalStack(state_dir=tmp_path, bigtable=True, bigtable_bin=tmp_path / "no-cbtemulator")
    with pytest.raises(StackError, match="Bigtable emulator binary missing"):
        stack.start()
