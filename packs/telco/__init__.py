"""The telco pack: a broadband and mobile provider, served by its own MCP server over its own data.

Its tools are not Python functions of this process: ``packs.telco.mcp_server`` serves them over MCP
from its own SQLite store (``packs.telco.data``). The worker starts it over stdio (or reaches it at
``SUPPORTFLOW_TELCO_MCP_URL`` over streamable HTTP); the store's path is ``SUPPORTFLOW_TELCO_DB``
(default: a file in the system's temporary folder, created and seeded on first start).
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from packs.telco import data, replies
from packs.telco.evals import TelcoEvals
from packs.telco.phrasing import PHRASING
from tools.actions import ActionSpec
from tools.mcp import McpServer
from tools.packs import Pack
from tools.spec import IdFormat, ToolSpec

SERVER = "telco"
DB_ENV = "SUPPORTFLOW_TELCO_DB"
URL_ENV = "SUPPORTFLOW_TELCO_MCP_URL"
ROOT = Path(__file__).resolve().parent


def _server() -> McpServer:
    url = os.environ.get(URL_ENV)
    if url:
        return McpServer(SERVER, url=url)
    return server_for(os.environ.get(DB_ENV) or str(Path(tempfile.gettempdir()) / "supportflow-telco.sqlite"))


def server_for(db: str) -> McpServer:
    """The pack's MCP server over the store at ``db`` (stdio; the worker starts it)."""
    return McpServer(
        SERVER,
        command=(sys.executable, "-m", "packs.telco.mcp_server", "--db", db),
        cwd=str(ROOT.parent.parent),
    )


DATA_PACK = ActionSpec(
    "data_pack",
    ("data pack", "add pack", "gb pack", "add data", "more data", "extra data", "data add-on", "top up", "buy data"),
    "add a one-off data pack (1, 5, 10 or 20 GB) for the rest of this cycle; ask me to and say which size",
    claims=("data pack", "added", "top up"),
)
SIM = ActionSpec(
    "sim_replacement",
    (
        "replacement sim",
        "new sim",
        "replace sim",
        "sim card",
        "sim replacement",
        "block sim",
        "bar sim",
        "replace",
        "replacement",
        "new one",
        "block",
    ),
    "order a replacement SIM with the same number (a lost or stolen one is barred at once); ask me to",
    claims=("sim",),
)
TICKET = ActionSpec(
    "ticket",
    ("ticket", "open case", "log it", "log this", "log fault", "report fault", "report", "complaint", "look into"),
    "open a support ticket so the team follows this up; ask me to and tell me what happened",
    claims=("ticket",),
)
HANDOFF = ActionSpec("handoff", (), "connect you with a person", consent=False)


def _seed(client: Any, customers: int) -> int:
    from packs.telco.seed import seed_firestore  # google-cloud-firestore only where the stack seeds

    return seed_firestore(client, customers)


def _mcp(name: str, description: str, effect: str, render, **facts) -> ToolSpec:  # noqa: ANN001, ANN003
    return ToolSpec(name, description, effect, render, mcp_server=SERVER, **facts)  # type: ignore[arg-type]


PACK = Pack(
    name="telco",
    title="Broadband and mobile provider (demo, tools over MCP)",
    tools=(
        _mcp(
            "get_plan_usage",
            "The customer's plan and this cycle's mobile data: allowance, used, left.",
            "reads",
            replies.usage,
        ),
        _mcp(
            "list_invoices",
            "The customer's most recent invoices, newest first, with their totals.",
            "reads",
            replies.invoices,
        ),
        _mcp(
            "explain_bill_change",
            "Why the newest bill differs from the one before, item by item.",
            "reads",
            replies.bill_change,
        ),
        _mcp("check_outage", "Outages in the postcode area of the customer's address.", "reads", replies.outage),
        _mcp(
            "add_data_pack",
            "Add a one-off mobile data pack for the rest of this cycle (charged on the next bill).",
            "changes",
            replies.data_pack,
            actions=(DATA_PACK,),
            idempotency_key=("size_gb",),
        ),
        _mcp(
            "order_sim_replacement",
            "Order a replacement SIM with the same number.",
            "changes",
            replies.sim,
            actions=(SIM,),
            idempotency_key=("reason",),
        ),
        _mcp(
            "open_ticket",
            "Open a support ticket for something no other tool can settle now.",
            "changes",
            replies.ticket,
            actions=(TICKET,),
            idempotency_key=(),
            pii_args=frozenset({"subject", "details"}),
            text_args=frozenset({"subject", "details"}),
        ),
        _mcp(
            "handoff_to_human",
            "Hand the conversation to a human agent.",
            "changes",
            replies.handoff,
            actions=(HANDOFF,),
            idempotency_key=(),
            pii_args=frozenset({"summary"}),
            text_args=frozenset({"summary"}),
            handoff=True,
        ),
    ),  # fmt: skip
    id_formats=(
        IdFormat("customer", r"ACC-\d{6}", "ACC-100001"),
        IdFormat("invoice", r"INV-\d{4}-\d{6}", "INV-2026-000123"),
        # References the tools mint (data packs, SIM orders, tickets, hand-offs): they must come from this session.
        IdFormat("reference", r"(?:DP|SIM|TKT)-[0-9A-F]{10}|H-[0-9A-F]{12}", "DP-0123456789", minted=True),
    ),
    root=ROOT,
    # context=(): its records live in the MCP server's store, which the tools read; Firestore holds only the
    # profiles (packs/telco/seed.py), so a turn's context is the customer's profile.
    help_topics=(
        "your plan and the data you have left",
        "your invoices and why a bill changed",
        "outages where you live",
        "adding a data pack",
        "a replacement SIM",
        "opening a ticket",
        "connecting you with a person",
    ),
    texts={
        "greeting": "Hello! I'm the support assistant for your broadband and mobile services.",
        "closing": "You're welcome! If anything else comes up with your services, just write here.",
    },
    phrasing=PHRASING,
    mcp_servers={SERVER: _server()},
    seed=_seed,
    demo_customer="ACC-100001",
    default_customers=60,
    reference_time=datetime.combine(data.REFERENCE_DATE, time(12), UTC),  # the store's "today", at noon
    evals=TelcoEvals(server_for),  # the offline evals: a store per trial, its rows as documents (packs/telco/evals.py)
)
