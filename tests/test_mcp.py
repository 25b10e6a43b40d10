"""MCP tools against the real telco MCP server process (stdio and streamable HTTP): nothing of the SDK is faked.

Covers ``tools.mcp.McpToolSource`` (declarations from annotations, out-of-band scope, argument refusal,
timeouts, malformed and failed results, retries and reconnects) and ``packs.telco.mcp_server`` (the
account from ``_meta`` only, idempotent replays). The server's test hooks (environment variables) make
one tool slow, malformed or failing; the kill tests send SIGKILL to the real subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from contract.tool_calls import ToolCall
from packs.telco import data
from packs.telco import mcp_server as telco
from tools import mcp as mcp_tools
from tools.mcp import McpServer, McpToolSource
from tools.scope import ToolContext

ROOT = Path(__file__).resolve().parents[1]
SEED = data.build_seed()
ACCOUNTS = {a["account_id"]: a for a in SEED.accounts}
A, B = "ACC-100002", "ACC-100003"  # Manchester (an active mobile outage, roaming on the newest bill); Birmingham
TOOLS = {
    "get_plan_usage": (True, True),
    "list_invoices": (True, True),
    "explain_bill_change": (True, True),
    "check_outage": (True, True),
    "add_data_pack": (False, True),
    "order_sim_replacement": (False, False),
    "open_ticket": (False, True),
    "handoff_to_human": (False, True),
}

pytestmark = pytest.mark.e2e  # real MCP server processes, killed, slowed and restarted: the stack lane


def _server_command(db: Path, *extra: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "packs.telco.mcp_server", "--db", str(db), *extra)


def _stdio(db: Path, env: dict[str, str] | None = None, **kw: Any) -> McpServer:
    return McpServer("telco", command=_server_command(db), env=env, cwd=str(ROOT), **kw)


def _ctx(customer: str = A, session: str = "S-1", turn: str = "T-1") -> ToolContext:
    return ToolContext(customer, session, turn)


def _call(name: str, args: str = "{}") -> ToolCall:
    return ToolCall(f"call-{name}", name, args)


def _server_pids(db: Path) -> list[int]:
    """The telco server processes this test process started for ``db`` (from /proc: parent and command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"packs.telco.mcp_server" in cmdline and str(db).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def _one_server_pid(db: Path) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = _server_pids(db)
        if len(pids) == 1:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"expected one server process for {db}, found {_server_pids(db)}")


def _rows(db: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    conn = data.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.ensure_database(tmp_path_factory.mktemp("telco") / "telco.db")


@pytest.fixture(scope="module")
def source(db: Path) -> Iterator[McpToolSource]:
    with McpToolSource(_stdio(db, call_timeout_s=20, connect_timeout_s=30)) as src:
        yield src


# ---------------------------------------------------------------------------
# Declarations and reads
# ---------------------------------------------------------------------------


def test_tools_are_listed_with_their_annotations(source: McpToolSource) -> None:
    listed = {t["name"]: t for t in source.list_tools()}
    assert {n: (t["read_only"], t["idempotent"]) for n, t in listed.items()} == TOOLS
    for tool in listed.values():
        params = tool["parameters"]
        assert params["type"] == "object" and tool["description"]
        assert not {"customer_id", "account_id"} & set(params["properties"]), "no tool may take an account"
        assert "title" not in params and all("title" not in p for p in params["properties"].values())
    assert listed["add_data_pack"]["parameters"]["properties"]["size_gb"]["enum"] == [1, 5, 10, 20]
    assert listed["order_sim_replacement"]["parameters"]["properties"]["reason"]["enum"] == [
        "lost",
        "damaged",
        "stolen",
    ]


def test_read_tools_answer_for_the_contexts_customer(source: McpToolSource) -> None:
    usage = source.execute(_ctx(A), _call("get_plan_usage"))
    assert usage.status == "ok" and usage.ok and usage.name == "get_plan_usage" and usage.ms > 0
    assert usage.content["plan"]["name"] == ACCOUNTS[A]["plan_name"]
    assert usage.content["cycle_end"] == ACCOUNTS[A]["cycle_end"]

    change = source.execute(_ctx(A), _call("explain_bill_change"))
    assert change.status == "ok" and change.content["direction"] == "higher"
    assert [c["item"].split(":")[0] for c in change.content["changes"]] == ["EU roaming"]
    assert "abroad" in change.content["changes"][0]["why"]

    outage = source.execute(_ctx(A), _call("check_outage"))
    assert outage.content["postcode_area"] == "M" and outage.content["active"] is True
    assert [o["outage_id"] for o in outage.content["outages"]] == ["OUT-2026-0142"]


def test_two_customers_never_see_each_others_data(source: McpToolSource) -> None:
    def invoice_ids(customer: str) -> set[str]:
        result = source.execute(_ctx(customer), _call("list_invoices", '{"limit": 6}'))
        assert result.status == "ok"
        return {i["invoice_id"] for i in result.content["invoices"]}

    seeded = {cid: {i["invoice_id"] for i in SEED.invoices if i["account_id"] == cid} for cid in (A, B)}
    assert invoice_ids(A) == seeded[A] and invoice_ids(B) == seeded[B]
    assert not seeded[A] & seeded[B]
    b_usage = source.execute(_ctx(B), _call("get_plan_usage")).content
    assert b_usage["plan"]["name"] == ACCOUNTS[B]["plan_name"]
    unknown = source.execute(_ctx("ACC-999999"), _call("get_plan_usage"))
    assert unknown.status == "not_found"


def test_the_scope_travels_in_meta_and_the_server_acts_for_it(source: McpToolSource, db: Path) -> None:
    result = source.execute(_ctx(B, "S-meta", "T-7"), _call("open_ticket", '{"subject": "Router keeps rebooting"}'))
    assert result.status == "done"
    ticket = _rows(db, "SELECT * FROM tickets WHERE ticket_id = ?", result.content["ticket_id"])[0]
    assert (ticket["account_id"], ticket["session_id"], ticket["turn_id"]) == (B, "S-meta", "T-7")
    audit = _rows(db, "SELECT * FROM actions WHERE session_id = 'S-meta'")
    assert [(r["account_id"], r["tool"], r["turn_id"]) for r in audit] == [(B, "open_ticket", "T-7")]


async def _call_without_meta(db: Path) -> dict[str, Any]:
    params = StdioServerParameters(command=sys.executable, args=list(_server_command(db)[1:]), cwd=str(ROOT))
    async with Client(params, cache=None) as client:
        result = await client.call_tool("get_plan_usage", {})
        return dict(result.structured_content or {})


def test_the_server_denies_a_call_whose_meta_names_no_customer(db: Path) -> None:
    answer = asyncio.run(_call_without_meta(db))
    assert answer["status"] == "denied" and answer["reason"] == "no_customer"


def test_meta_keys_agree_between_client_and_server() -> None:
    assert (mcp_tools.META_CUSTOMER, mcp_tools.META_SESSION, mcp_tools.META_TURN) == (
        telco.META_CUSTOMER,
        telco.META_SESSION,
        telco.META_TURN,
    )


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["customer_id", "account_id"])
def test_a_model_supplied_account_is_refused_before_the_server(source: McpToolSource, db: Path, field: str) -> None:
    call = _call("add_data_pack", f'{{"size_gb": 5, "{field}": "{B}"}}')
    result = source.execute(_ctx(A, f"S-tamper-{field}", "T-1"), call)
    assert result.status == "invalid_args" and not result.ok
    assert result.rejected_args == (field,)
    assert any("only for the customer of this conversation" in e for e in result.content["errors"])
    assert _rows(db, "SELECT * FROM actions WHERE session_id = ?", f"S-tamper-{field}") == []


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("add_data_pack", '{"size_gb": 7}', "size_gb: 7 is not one of [1, 5, 10, 20]"),
        ("add_data_pack", "{}", "arguments: 'size_gb' is a required property"),
        ("order_sim_replacement", '{"reason": "bored"}', "reason: 'bored' is not one of"),
        ("list_invoices", "[1, 2]", "arguments are not a JSON object"),
    ],
)
def test_arguments_are_checked_against_the_input_schema(
    source: McpToolSource, name: str, args: str, expected: str
) -> None:
    result = source.execute(_ctx(), _call(name, args))
    assert result.status == "invalid_args" and result.rejected_args == ()
    assert result.content["errors"][0].startswith(expected), result.content


def test_an_unknown_tool_is_refused(source: McpToolSource) -> None:
    result = source.execute(_ctx(), _call("transfer_number"))
    assert result.status == "unknown_tool"


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


def test_an_idempotent_data_pack_replayed_returns_the_stored_result_once(source: McpToolSource, db: Path) -> None:
    ctx = _ctx(B, "S-pack", "T-3")
    before = _rows(db, "SELECT extra_data_gb FROM accounts WHERE account_id = ?", B)[0][0]
    first = source.execute(ctx, _call("add_data_pack", '{"size_gb": 5}'))
    again = source.execute(ctx, _call("add_data_pack", '{"size_gb": 5}'))
    assert first.status == again.status == "done"
    assert not first.replayed and again.replayed and again.content["replayed"] is True
    assert again.content["pack_id"] == first.content["pack_id"]
    assert _rows(db, "SELECT extra_data_gb FROM accounts WHERE account_id = ?", B)[0][0] == before + 5
    assert len(_rows(db, "SELECT * FROM data_packs WHERE pack_id = ?", first.content["pack_id"])) == 1
    assert _rows(db, "SELECT replays FROM actions WHERE session_id = 'S-pack'")[0][0] == 1
    # Another turn is another action.
    later = source.execute(_ctx(B, "S-pack", "T-4"), _call("add_data_pack", '{"size_gb": 5}'))
    assert later.status == "done" and not later.replayed and later.content["pack_id"] != first.content["pack_id"]


def test_a_sim_replacement_is_not_idempotent_and_a_handoff_hands_off(source: McpToolSource, db: Path) -> None:
    ctx = _ctx(A, "S-sim", "T-1")
    first = source.execute(ctx, _call("order_sim_replacement", '{"reason": "damaged"}'))
    second = source.execute(ctx, _call("order_sim_replacement", '{"reason": "damaged"}'))
    assert first.status == second.status == "done" and first.content["order_id"] != second.content["order_id"]
    assert first.content["old_sim_barred"] is False
    handoff = source.execute(
        ctx, _call("handoff_to_human", '{"reason": "billing_dispute", "summary": "Disputes roaming"}')
    )
    assert handoff.status == "handed_off" and handoff.handed_off


def test_calls_from_many_threads_share_the_one_connection(source: McpToolSource, db: Path) -> None:
    results: list[str] = []

    def worker(i: int) -> None:
        results.append(source.execute(_ctx(A if i % 2 else B, f"S-{i}", "T-1"), _call("get_plan_usage")).status)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == ["ok"] * 8
    assert len(_server_pids(db)) == 1


# ---------------------------------------------------------------------------
# Failures: timeouts, malformed and failed results, a killed server
# ---------------------------------------------------------------------------


def test_a_slow_server_times_out_into_an_error_result(db: Path) -> None:
    env = {telco.TEST_DELAY_TOOL_ENV: "get_plan_usage", telco.TEST_DELAY_S_ENV: "30"}
    with McpToolSource(_stdio(db, env, call_timeout_s=1.0, connect_timeout_s=30)) as src:
        started = time.monotonic()
        result = src.execute(_ctx(), _call("get_plan_usage"))
        assert time.monotonic() - started < 8
        assert result.status == "error" and not result.ok
        assert "did not answer in time" in result.content["errors"][0]
        assert src.execute(_ctx(), _call("check_outage")).status == "ok"  # the connection is still good


def test_malformed_and_failed_results_become_error_results(db: Path) -> None:
    env = {telco.TEST_MALFORMED_TOOL_ENV: "list_invoices", telco.TEST_FAIL_TOOL_ENV: "check_outage"}
    with McpToolSource(_stdio(db, env, call_timeout_s=20, connect_timeout_s=30)) as src:
        malformed = src.execute(_ctx(), _call("list_invoices"))
        assert malformed.status == "error" and malformed.content["errors"] == ["the tool gave a malformed result"]
        failed = src.execute(_ctx(), _call("check_outage"))  # the server answers isError
        assert failed.status == "error" and failed.content["errors"][0].startswith("the tool failed:")
        assert src.execute(_ctx(), _call("get_plan_usage")).status == "ok"


def test_the_server_killed_mid_call_gives_an_error_and_the_next_call_reconnects(tmp_path: Path) -> None:
    db = data.ensure_database(tmp_path / "telco.db")
    env = {telco.TEST_DELAY_TOOL_ENV: "order_sim_replacement", telco.TEST_DELAY_S_ENV: "30"}
    with McpToolSource(_stdio(db, env, call_timeout_s=20, connect_timeout_s=30)) as src:
        first_pid = _one_server_pid(db)
        outcome: dict[str, Any] = {}

        def in_flight() -> None:
            outcome["result"] = src.execute(
                _ctx(A, "S-kill", "T-1"), _call("order_sim_replacement", '{"reason": "lost"}')
            )

        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(1.5)  # the call is with the server, sleeping in the delay hook
        assert thread.is_alive()
        started = time.monotonic()
        os.kill(first_pid, signal.SIGKILL)
        thread.join(timeout=20)
        assert not thread.is_alive() and time.monotonic() - started < 15
        result = outcome["result"]
        assert result.status == "error" and "unavailable" in result.content["errors"][0]
        assert _rows(db, "SELECT * FROM sim_orders") == []  # it died before acting: nothing half-done

        after = src.execute(_ctx(A, "S-kill", "T-2"), _call("get_plan_usage"))
        assert after.status == "ok"
        assert _one_server_pid(db) != first_pid  # a new server process, started by the source itself


def test_a_server_killed_while_idle_is_reconnected_without_an_error(tmp_path: Path) -> None:
    db = data.ensure_database(tmp_path / "telco.db")
    with McpToolSource(_stdio(db, call_timeout_s=20, connect_timeout_s=30)) as src:
        assert src.execute(_ctx(), _call("get_plan_usage")).status == "ok"
        pid = _one_server_pid(db)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        # Not idempotent, so never resent: the source probes the connection first and reopens it.
        sim = src.execute(_ctx(), _call("order_sim_replacement", '{"reason": "damaged"}'))
        assert sim.status == "done" and len(_rows(db, "SELECT * FROM sim_orders")) == 1
        pid2 = _one_server_pid(db)
        assert pid2 != pid
        os.kill(pid2, signal.SIGKILL)
        time.sleep(0.5)
        # Read-only: the first attempt meets the closed connection, the retry reconnects.
        assert src.execute(_ctx(), _call("get_plan_usage")).status == "ok"
        assert _one_server_pid(db) not in (pid, pid2)


def test_an_unreachable_server_fails_start_with_a_clear_error(tmp_path: Path) -> None:
    broken = McpServer("broken", command=(sys.executable, "-c", "import sys; sys.exit(3)"), connect_timeout_s=20)
    with pytest.raises(ConnectionError, match="'broken' is unreachable"):
        McpToolSource(broken).start()


# ---------------------------------------------------------------------------
# Streamable HTTP
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_server(db: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*_server_command(db, "--http", "--port", str(port))],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None, "the HTTP server exited"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the HTTP server did not listen in time")


def test_streamable_http_calls_and_recovers_after_a_server_restart(tmp_path: Path) -> None:
    db = data.ensure_database(tmp_path / "telco.db")
    port = _free_port()
    proc = _http_server(db, port)
    try:
        server = McpServer("telco-http", url=f"http://127.0.0.1:{port}/mcp", call_timeout_s=10, connect_timeout_s=10)
        with McpToolSource(server) as src:
            assert {t["name"] for t in src.list_tools()} == set(TOOLS)
            usage = src.execute(_ctx(B), _call("get_plan_usage"))
            assert usage.status == "ok" and usage.content["plan"]["name"] == ACCOUNTS[B]["plan_name"]
            refused = src.execute(_ctx(B), _call("get_plan_usage", f'{{"customer_id": "{A}"}}'))
            assert refused.status == "invalid_args" and refused.rejected_args == ("customer_id",)

            proc.kill()
            proc.wait(timeout=10)
            down = src.execute(_ctx(B), _call("check_outage"))
            assert down.status == "error" and not down.ok  # an error result, not an exception

            proc = _http_server(db, port)
            again = src.execute(_ctx(B), _call("check_outage"))
            assert again.status == "ok" and again.content["postcode_area"] == "B"
    finally:
        proc.kill()
        proc.wait(timeout=10)
