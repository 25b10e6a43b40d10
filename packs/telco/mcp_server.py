"""The telco pack's MCP server: its support tools over its own SQLite store, on the official ``mcp`` SDK.

    python -m packs.telco.mcp_server --db PATH                 # stdio (the worker starts it)
    python -m packs.telco.mcp_server --db PATH --http --port N  # streamable HTTP on 127.0.0.1:N/mcp

It owns the store (``packs.telco.data``; created and seeded if ``--db`` does not exist) and every rule
over it. Who a call is for travels out of band, in the request's ``_meta`` (``META_CUSTOMER``,
``META_SESSION``, ``META_TURN``, set by ``tools.mcp`` from the session's bound customer); no tool has
an account argument, so a model cannot name another account. A call without a customer in ``_meta`` is
``denied``; a customer with no account here is ``not_found``.

Every tool returns one JSON object with a ``status`` (``ok``, ``not_found``, ``denied``, ``done``,
``handed_off``, or ``error`` when the store fails) as the result's structured content, and the same
object as JSON text. Data-changing calls commit together with their audit row in ``actions``; the
idempotent ones (``add_data_pack``, ``open_ticket``, ``handoff_to_human``) are keyed by (account,
session, turn, tool, identifying arguments), so a replay returns the stored result with
``replayed: true`` instead of acting twice. ``order_sim_replacement`` is not idempotent: each call
orders a SIM (and is audited).

Test hooks (tests only, off unless their variables are set): ``TELCO_MCP_DELAY_TOOL`` names a tool
that first sleeps ``TELCO_MCP_DELAY_S`` seconds; ``TELCO_MCP_MALFORMED_TOOL`` names a tool that
returns text that is not a JSON object and no structured content; ``TELCO_MCP_FAIL_TOOL`` names a tool that
raises (the SDK turns that into an ``isError`` result).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sqlite3
import sys
import uuid
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from packs.telco import data

logger = logging.getLogger(__name__)

# The request `_meta` keys that carry the caller's scope (the same strings as tools.mcp sends).
META_CUSTOMER = "supportflow/customer_id"
META_SESSION = "supportflow/session_id"
META_TURN = "supportflow/turn_id"

SERVER_NAME = "supportflow-telco"
MAX_INVOICES = 6
ACTIVE_OUTAGE = frozenset({"investigating", "repairing"})
SIM_DELIVERY_DAYS = 2

READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
ACT_IDEMPOTENT = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
ACT_ONCE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

HandoffReason = Literal[
    "customer_request", "billing_dispute", "technical_fault", "cancel_or_switch", "complaint", "other"
]
SimReason = Literal["lost", "damaged", "stolen"]


@dataclass(frozen=True)
class Caller:
    """Who a call is for, from the request's ``_meta`` (never from its arguments)."""

    account_id: str
    session_id: str
    turn_id: str


def caller_from_meta(meta: Mapping[str, Any] | None) -> Caller | None:
    """The caller named in ``_meta``, or None when it names no customer."""
    meta = meta or {}
    account = meta.get(META_CUSTOMER)
    if not isinstance(account, str) or not account.strip():
        return None
    session, turn = meta.get(META_SESSION), meta.get(META_TURN)
    return Caller(account.strip(), session if isinstance(session, str) else "", turn if isinstance(turn, str) else "")


def _denied(reason: str, message: str) -> dict[str, Any]:
    return {"status": "denied", "reason": reason, "message": message}


_NOT_FOUND = {"status": "not_found", "message": "No account for this customer."}


class TelcoStore:
    """The tools' reads and actions over one SQLite store; each call opens its own connection."""

    def __init__(self, path: str | Path, today: date = data.REFERENCE_DATE) -> None:
        self.path = data.ensure_database(path)
        self.today = today

    # -- reads ---------------------------------------------------------------

    def _account(self, conn: sqlite3.Connection, caller: Caller) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM accounts WHERE account_id = ?", (caller.account_id,)).fetchone()

    def plan_usage(self, caller: Caller) -> dict[str, Any]:
        with closing(data.connect(self.path)) as conn:
            acc = self._account(conn, caller)
        if acc is None:
            return dict(_NOT_FOUND)
        return {"status": "ok", **_usage(acc, self.today)}

    def invoices(self, caller: Caller, limit: int) -> dict[str, Any]:
        with closing(data.connect(self.path)) as conn:
            if self._account(conn, caller) is None:
                return dict(_NOT_FOUND)
            rows = conn.execute(
                "SELECT * FROM invoices WHERE account_id = ? ORDER BY issued_on DESC LIMIT ?",
                (caller.account_id, limit),
            ).fetchall()
        return {"status": "ok", "invoices": [_invoice(r) for r in rows]}

    def bill_change(self, caller: Caller) -> dict[str, Any]:
        with closing(data.connect(self.path)) as conn:
            if self._account(conn, caller) is None:
                return dict(_NOT_FOUND)
            rows = conn.execute(
                "SELECT * FROM invoices WHERE account_id = ? ORDER BY issued_on DESC LIMIT 2", (caller.account_id,)
            ).fetchall()
        if len(rows) < 2:
            return {"status": "ok", "changes": [], "message": "There is no earlier bill to compare with."}
        newest, previous = _invoice(rows[0]), _invoice(rows[1])
        difference = round(newest["total"] - previous["total"], 2)
        return {
            "status": "ok",
            "newest": {k: newest[k] for k in ("invoice_id", "issued_on", "total", "currency")},
            "previous": {k: previous[k] for k in ("invoice_id", "issued_on", "total", "currency")},
            "difference": difference,
            "direction": "higher" if difference > 0 else "lower" if difference < 0 else "same",
            "changes": _item_changes(previous["items"], newest["items"]),
        }

    def outages(self, caller: Caller) -> dict[str, Any]:
        with closing(data.connect(self.path)) as conn:
            acc = self._account(conn, caller)
            if acc is None:
                return dict(_NOT_FOUND)
            rows = conn.execute(
                "SELECT * FROM outages WHERE postcode_area = ? ORDER BY started_at DESC", (acc["postcode_area"],)
            ).fetchall()
        outages = [dict(r) for r in rows]
        return {
            "status": "ok",
            "postcode_area": acc["postcode_area"],
            "active": any(o["status"] in ACTIVE_OUTAGE for o in outages),
            "outages": outages,
        }

    # -- actions -------------------------------------------------------------

    def _act(
        self,
        caller: Caller,
        tool: str,
        key: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        body: Callable[[sqlite3.Connection, sqlite3.Row, str], dict[str, Any]],
    ) -> dict[str, Any]:
        """Run ``body(conn, account, action_id)`` and its audit row in one transaction.

        ``key`` None: not idempotent (a fresh action id each call). Otherwise the action id is a hash of
        (account, session, turn, tool, key), and a stored action is returned with ``replayed: true``.
        """
        if not caller.session_id or not caller.turn_id:
            return _denied("missing_scope", "Actions need the conversation's session and turn.")
        if key is None:
            aid = uuid.uuid4().hex[:24]
        else:
            material = {"account": caller.account_id, "session": caller.session_id, "turn": caller.turn_id,
                        "tool": tool, "key": dict(key)}  # fmt: skip
            aid = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
        with closing(data.connect(self.path)) as conn, data.transaction(conn):
            acc = self._account(conn, caller)
            if acc is None:
                return dict(_NOT_FOUND)
            stored = conn.execute(
                "SELECT result FROM actions WHERE action_id = ? AND account_id = ?", (aid, caller.account_id)
            ).fetchone()
            if stored is not None:
                conn.execute("UPDATE actions SET replays = replays + 1 WHERE action_id = ?", (aid,))
                return {**json.loads(stored["result"]), "replayed": True}
            result = body(conn, acc, aid)
            conn.execute(
                "INSERT INTO actions (action_id, account_id, session_id, turn_id, tool, args, result, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (aid, caller.account_id, caller.session_id, caller.turn_id, tool, json.dumps(dict(args)),
                 json.dumps(result), _now()),
            )  # fmt: skip
            return result

    def add_data_pack(self, caller: Caller, size_gb: int) -> dict[str, Any]:
        def body(conn: sqlite3.Connection, acc: sqlite3.Row, aid: str) -> dict[str, Any]:
            packs = conn.execute(
                "SELECT COUNT(*) FROM data_packs WHERE account_id = ? AND cycle_end = ?",
                (acc["account_id"], acc["cycle_end"]),
            ).fetchone()[0]
            if packs >= data.MAX_DATA_PACKS_PER_CYCLE:
                return _denied(
                    "pack_limit", f"At most {data.MAX_DATA_PACKS_PER_CYCLE} data packs can be added in one cycle."
                )
            price = data.DATA_PACKS_GB[size_gb]
            pack_id = f"DP-{aid[:10].upper()}"
            conn.execute(
                "INSERT INTO data_packs VALUES (?, ?, ?, ?, ?, ?)",
                (pack_id, acc["account_id"], size_gb, price, acc["cycle_end"], _now()),
            )
            conn.execute(
                "UPDATE accounts SET extra_data_gb = extra_data_gb + ? WHERE account_id = ?",
                (size_gb, acc["account_id"]),
            )
            updated = self._account(conn, caller)
            assert updated is not None
            return {"status": "done", "pack_id": pack_id, "size_gb": size_gb, "price": price,
                    "currency": data.CURRENCY, "charged_on": "next bill", "valid_until": acc["cycle_end"],
                    "data_left_gb": _usage(updated, self.today)["data_left_gb"]}  # fmt: skip

        return self._act(caller, "add_data_pack", {"size_gb": size_gb}, {"size_gb": size_gb}, body)

    def order_sim_replacement(self, caller: Caller, reason: str) -> dict[str, Any]:
        def body(conn: sqlite3.Connection, acc: sqlite3.Row, aid: str) -> dict[str, Any]:
            order_id = f"SIM-{aid[:10].upper()}"
            barred = reason in ("lost", "stolen")
            delivery_by = (self.today + timedelta(days=SIM_DELIVERY_DAYS)).isoformat()
            conn.execute(
                "INSERT INTO sim_orders VALUES (?, ?, ?, ?, ?, ?)",
                (order_id, acc["account_id"], reason, acc["sim_iccid"], delivery_by, _now()),
            )
            if barred:
                conn.execute("UPDATE accounts SET sim_status = 'barred' WHERE account_id = ?", (acc["account_id"],))
            return {"status": "done", "order_id": order_id, "reason": reason, "old_sim_barred": barred,
                    "delivery_by": delivery_by, "number_kept": True}  # fmt: skip

        return self._act(caller, "order_sim_replacement", None, {"reason": reason}, body)

    def open_ticket(self, caller: Caller, subject: str, details: str) -> dict[str, Any]:
        def body(conn: sqlite3.Connection, acc: sqlite3.Row, aid: str) -> dict[str, Any]:
            ticket_id = f"TKT-{aid[:10].upper()}"
            conn.execute(
                "INSERT INTO tickets VALUES (?, ?, ?, ?, 'open', ?, ?, ?)",
                (ticket_id, acc["account_id"], subject, details, caller.session_id, caller.turn_id, _now()),
            )
            return {"status": "done", "ticket_id": ticket_id, "ticket_status": "open"}

        # One ticket per turn: a replay with reworded text still finds the same action.
        return self._act(caller, "open_ticket", {}, {"subject": subject, "details": details}, body)

    def handoff(self, caller: Caller, reason: str, summary: str) -> dict[str, Any]:
        def body(conn: sqlite3.Connection, acc: sqlite3.Row, aid: str) -> dict[str, Any]:
            handoff_id = f"H-{aid[:12].upper()}"
            conn.execute(
                "INSERT INTO handoffs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (handoff_id, acc["account_id"], reason, summary, caller.session_id, caller.turn_id, _now()),
            )
            return {"status": "handed_off", "handoff_id": handoff_id, "reason": reason}

        return self._act(caller, "handoff_to_human", {}, {"reason": reason, "summary": summary}, body)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _usage(acc: sqlite3.Row, today: date) -> dict[str, Any]:
    allowance, extra, used = acc["data_allowance_gb"], acc["extra_data_gb"], acc["data_used_gb"]
    cycle_end = date.fromisoformat(acc["cycle_end"])
    return {
        "plan": {
            "name": acc["plan_name"],
            "monthly_price": acc["monthly_price"],
            "currency": data.CURRENCY,
            "data_allowance_gb": allowance,
        },  # fmt: skip
        "data_used_gb": used,
        "extra_data_gb": extra,
        "data_left_gb": round(max(0.0, allowance + extra - used), 1),
        "cycle_end": cycle_end.isoformat(),
        "days_left": max(0, (cycle_end - today).days),
    }


def _invoice(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in ("invoice_id", "period_start", "period_end", "issued_on", "total", "currency", "status")}
    return {**out, "items": json.loads(row["items"])}


def _item_changes(previous: list[dict[str, Any]], newest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Line items that are new, gone or changed in amount between two bills, each with its stated reason."""
    before = {i["code"]: i for i in previous}
    after = {i["code"]: i for i in newest}
    changes = []
    for code in [*after, *(c for c in before if c not in after)]:
        old, new = before.get(code), after.get(code)
        old_amount, new_amount = (old or {}).get("amount"), (new or {}).get("amount")
        if old_amount == new_amount:
            continue
        item = new or old
        assert item is not None
        why = (
            (new or {}).get("why")
            or (old or {}).get("note")
            or ("new on this bill" if old is None else "no longer on this bill")
        )
        changes.append(
            {"item": item["description"], "before": old_amount, "after": new_amount,
             "difference": round((new_amount or 0.0) - (old_amount or 0.0), 2), "why": why}
        )  # fmt: skip
    return changes


# ---------------------------------------------------------------------------
# Test hooks (tests only): a slow tool and a malformed result, switched on by environment variables.
# ---------------------------------------------------------------------------

TEST_DELAY_TOOL_ENV = "TELCO_MCP_DELAY_TOOL"
TEST_DELAY_S_ENV = "TELCO_MCP_DELAY_S"
TEST_MALFORMED_TOOL_ENV = "TELCO_MCP_MALFORMED_TOOL"
TEST_FAIL_TOOL_ENV = "TELCO_MCP_FAIL_TOOL"


async def _test_hooks(tool: str) -> CallToolResult | None:
    if os.environ.get(TEST_DELAY_TOOL_ENV) == tool:
        await anyio.sleep(float(os.environ.get(TEST_DELAY_S_ENV) or "0"))
    if os.environ.get(TEST_MALFORMED_TOOL_ENV) == tool:
        return CallToolResult(content=[TextContent(type="text", text="this is not a JSON object")])
    if os.environ.get(TEST_FAIL_TOOL_ENV) == tool:
        raise RuntimeError("test hook: this tool fails")  # the SDK answers with an isError result
    return None


# ---------------------------------------------------------------------------
# The MCP server
# ---------------------------------------------------------------------------


def _result(payload: dict[str, Any]) -> CallToolResult:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=payload)


def build_server(store: TelcoStore) -> MCPServer:
    """The MCP server with the telco tools over ``store``."""
    app = MCPServer(SERVER_NAME, instructions="Support tools of a broadband and mobile provider.", log_level="WARNING")

    async def run(tool: str, ctx: Context, action: Callable[[Caller], dict[str, Any]]) -> CallToolResult:
        hooked = await _test_hooks(tool)
        if hooked is not None:
            return hooked
        caller = caller_from_meta(ctx.request_context.meta)
        if caller is None:
            return _result(_denied("no_customer", "The request names no customer; tools act only for one."))
        try:
            return _result(action(caller))
        except sqlite3.Error as exc:
            logger.warning("tool %s failed: %s", tool, type(exc).__name__)
            return _result({"status": "error", "errors": ["the account store is unavailable; try again later"]})

    @app.tool(annotations=READ)
    async def get_plan_usage(ctx: Context) -> CallToolResult:
        """The customer's plan and this cycle's mobile data: allowance, used, left, and when the cycle ends."""
        return await run("get_plan_usage", ctx, store.plan_usage)

    @app.tool(annotations=READ)
    async def list_invoices(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=MAX_INVOICES, description="How many recent invoices.")] = 3,
    ) -> CallToolResult:
        """The customer's most recent invoices, newest first, with their line items and totals."""
        return await run("list_invoices", ctx, lambda c: store.invoices(c, limit))

    @app.tool(annotations=READ)
    async def explain_bill_change(ctx: Context) -> CallToolResult:
        """Why the newest bill differs from the one before: each line item that changed, and its stated reason."""
        return await run("explain_bill_change", ctx, store.bill_change)

    @app.tool(annotations=READ)
    async def check_outage(ctx: Context) -> CallToolResult:
        """Outages (current, planned and recently resolved) in the postcode area of the customer's address."""
        return await run("check_outage", ctx, store.outages)

    @app.tool(annotations=ACT_IDEMPOTENT)
    async def add_data_pack(
        ctx: Context,
        size_gb: Annotated[Literal[1, 5, 10, 20], Field(description="Size of the one-off data pack in GB.")],
    ) -> CallToolResult:
        """Add a one-off mobile data pack for the rest of this cycle; it is charged on the next bill."""
        return await run("add_data_pack", ctx, lambda c: store.add_data_pack(c, size_gb))

    @app.tool(annotations=ACT_ONCE)
    async def order_sim_replacement(
        ctx: Context, reason: Annotated[SimReason, Field(description="Why the SIM must be replaced.")]
    ) -> CallToolResult:
        """Order a replacement SIM with the same number; a lost or stolen SIM is barred at once."""
        return await run("order_sim_replacement", ctx, lambda c: store.order_sim_replacement(c, reason))

    @app.tool(annotations=ACT_IDEMPOTENT)
    async def open_ticket(
        ctx: Context,
        subject: Annotated[str, Field(min_length=1, max_length=120, description="A short subject line.")],
        details: Annotated[str, Field(max_length=2000, description="What the customer reported.")] = "",
    ) -> CallToolResult:
        """Open a support ticket for the customer, for something no other tool can settle now."""
        return await run("open_ticket", ctx, lambda c: store.open_ticket(c, subject, details))

    @app.tool(annotations=ACT_IDEMPOTENT)
    async def handoff_to_human(
        ctx: Context,
        reason: Annotated[HandoffReason, Field(description="Why a human is needed.")],
        summary: Annotated[str, Field(max_length=500, description="One or two sentences for the human agent.")] = "",
    ) -> CallToolResult:
        """Hand the conversation to a human agent."""
        return await run("handoff_to_human", ctx, lambda c: store.handoff(c, reason, summary))

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m packs.telco.mcp_server", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the SQLite store (created and seeded if missing)")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP on 127.0.0.1 instead of stdio")
    parser.add_argument("--port", type=int, default=8765, help="the HTTP port (with --http)")
    args = parser.parse_args(argv)
    app = build_server(TelcoStore(args.db))
    if args.http:
        app.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        app.run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
