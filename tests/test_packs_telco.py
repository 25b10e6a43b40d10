"""The second business on the same core: the telco pack's tools, served by its own MCP server process.

SmolLM2 routes each request over its own embeddings against the telco pack's routes; the tool runs in
the pack's MCP server (a real subprocess over stdio, started by the worker's toolbox) for the session's
customer, who travels out of band; the reply is rendered from the result by the pack's renderer. The
server is then killed mid-conversation: that turn ends with a tool error reply, and the next works.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.backends import registry
from agents.backends.llamacpp import LlamaCppHandler
from agents.state import AgentState, StepConfig
from agents.steps import advance, start
from contract.turn import EnrichedTurn, Turn, UserMessage
from packs.telco import DB_ENV
from tools.packs import load_pack
from tools.toolbox import Toolbox

T0 = datetime(2026, 11, 20, 11, 59, tzinfo=UTC)

pytestmark = pytest.mark.e2e  # SmolLM2 and the telco MCP server process: the stack lane


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toolbox]:
    db = tmp_path_factory.mktemp("telco") / "telco.sqlite"
    old = os.environ.get(DB_ENV)
    os.environ[DB_ENV] = str(db)
    load_pack.cache_clear()
    import importlib

    import packs.telco

    importlib.reload(packs.telco)  # the server's command names this module's store
    # A toolbox of its own (not the process's shared one, which another test may have started on another store).
    the_box = Toolbox(load_pack("telco"))
    yield the_box
    the_box.close()
    if old is None:
        os.environ.pop(DB_ENV, None)
    else:
        os.environ[DB_ENV] = old
    load_pack.cache_clear()


@pytest.fixture(scope="module")
def smollm2() -> Iterator[tuple[LlamaCppHandler, object]]:
    handler = LlamaCppHandler(max_tokens=96, threads=1)
    yield handler, handler.load_model()


def _turn(account: str, text: str) -> EnrichedTurn:
    turn = Turn(
        session_id=f"s-{uuid.uuid4().hex[:8]}",
        customer_id=account,
        turn_index=1,
        messages=(UserMessage("m-1", text, T0),),
        history=(),
        omitted_history=0,
        released_at=T0,
    )
    return EnrichedTurn(turn=turn, context={"customer_id": account, "profile": {"name": "Test"}}, enrich_ms=1.0)


def _run(box: Toolbox, smollm2: tuple[LlamaCppHandler, object], account: str, text: str) -> AgentState:
    handler, model = smollm2
    entry = registry.get("smollm2")
    config = StepConfig(max_steps=4, max_tokens=96, tool_mode=entry.tool_mode, pack="telco")
    state = start(_turn(account, text), entry.prompt_version, config)
    executor = box.executor(None)
    while not state.done:
        state = pickle.loads(pickle.dumps(state))
        [result] = list(handler.run_inference([state], model))
        state = advance(state, result.inference, executor)
    return state


@pytest.mark.parametrize(
    ("text", "tool", "words"),
    [
        ("how much data have I got left?", "get_plan_usage", ["GB of data left"]),
        ("why is my bill higher this month?", "explain_bill_change", ["Your latest bill"]),
        ("is there an outage near me?", "check_outage", ["your area"]),
        ("add a 5 GB pack", "add_data_pack", ["5 GB data pack"]),
    ],
)
def test_smollm2_answers_the_telco_customer_from_the_mcp_tools(
    box: Toolbox, smollm2: tuple[LlamaCppHandler, object], text: str, tool: str, words: list[str]
) -> None:
    account = "ACC-100002"
    state = _run(box, smollm2, account, text)
    assert [c.name for c in state.tool_calls] == [tool], (state.flags, state.reply_text)
    assert state.tool_calls[0].status in ("ok", "done"), state.reply_text
    assert all(w in state.reply_text for w in words), state.reply_text
    assert "ACC-" not in state.reply_text or account in state.reply_text


def test_a_killed_server_costs_one_turn_and_the_next_works(
    box: Toolbox, smollm2: tuple[LlamaCppHandler, object]
) -> None:
    assert _run(box, smollm2, "ACC-100003", "how much data have I got left?").tool_calls[0].status == "ok"
    found = subprocess.run(
        ["pgrep", "-f", f"packs.telco.mcp_server --db {os.environ[DB_ENV]}"], capture_output=True, text=True
    )
    servers = [int(pid) for pid in found.stdout.split()]
    assert servers, "the toolbox's stdio server is running"
    for pid in servers:
        os.kill(pid, signal.SIGKILL)
    hit = _run(box, smollm2, "ACC-100003", "how much data have I got left?")
    # Either the call found the dead connection (an error result, a reply saying so) or the reconnect was quick
    # enough: never a crashed turn, always exactly one reply.
    assert hit.done and hit.outcome.value in ("answered", "handoff")
    after = _run(box, smollm2, "ACC-100003", "how much data have I got left?")
    assert after.tool_calls[0].status == "ok" and "GB of data left" in after.reply_text
    assert Path(os.environ[DB_ENV]).is_file()
