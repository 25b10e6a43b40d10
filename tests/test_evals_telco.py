"""The second pack through the same evals harness: its scenarios, its store per trial, its MCP server.

- The telco scenarios validate against the telco pack (tool names, and argument names as the pack's MCP
  server declares them), not against the shop's; a misuse is named.
- A few scenarios end to end on the stack's real Firestore emulator, with the Gemini backend against
  ``tests/gemini_server.py`` scripted to call the tools (``tests/telco_script.py``): the tools run in the
  pack's real MCP server process over a fresh copy of the store per trial, the end state is read from that
  store, and a data-changing call nobody asked for is stopped by the consent gate and scored as forbidden.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evals.harness import run_trial
from evals.packworld import scenarios_folder
from evals.run import build_agent, main
from evals.scenario import ScenarioError, load_scenarios, parse_scenarios
from evals.scoring import score
from evals.world import World
from stack.emulators import LocalStack
from tests.gemini_server import GeminiServer
from tests.telco_script import SCRIPTS, call, say, script_all
from tools.packs import load_pack

TELCO = "telco"


def test_telco_scenarios_validate_against_the_telco_pack() -> None:
    folder = scenarios_folder(TELCO)
    assert folder == load_pack(TELCO).root / "scenarios"
    scenarios = load_scenarios([folder], pack=TELCO)
    assert len(scenarios) >= 25
    by_category: dict[str, int] = {}
    for s in scenarios:
        by_category[s.category] = by_category.get(s.category, 0) + 1
        assert s.pack == TELCO
        assert 1 <= int(s.customer.split("-")[1]) - 100000 <= 60  # a seeded account
    assert set(by_category) == {"usage", "billing", "outage", "data_pack", "sim", "ticket", "handoff", "adversarial"}
    # Every data-changing tool is forbidden somewhere (the consent gate's cases), and another account is refused.
    forbidden = {f.name for s in scenarios for f in s.forbid.tools}
    assert load_pack(TELCO).mutating_tools - {"handoff_to_human"} <= forbidden
    assert any(s.seed.customers and s.expect.outcome == ["refused"] for s in scenarios)
    # The scripted agent scripts only messages the scenarios send.
    sent = {t for s in scenarios for t in s.user.turns or ()}
    assert set(SCRIPTS) <= sent, set(SCRIPTS) - sent
    # They are the telco pack's: the shop's tools and ids do not validate them, and the shop's still load alone.
    with pytest.raises(ScenarioError, match="unknown tool 'get_plan_usage'"):
        load_scenarios([folder])
    assert len(load_scenarios([scenarios_folder("shop")])) >= 64


def test_telco_scenario_misuse_is_named() -> None:
    base = {"id": "x", "category": "data_pack", "customer": "ACC-100001", "goal": "g", "user": {"turns": ["hi"]}}
    bad = {**base, "expect": {"tools": {"calls": [{"name": "add_data_pack", "args": {"size": 5}}]}}}
    _, problems = parse_scenarios(bad, "telco.yaml", pack=TELCO)
    assert problems == [
        "telco.yaml: (x): expect.tools.calls.0: add_data_pack has no argument(s) ['size']; it takes ['size_gb']"
    ]
    _, problems = parse_scenarios({**base, "customer": "C0001", "expect": {}}, "telco.yaml", pack=TELCO)
    assert problems == ["telco.yaml: (x): customer: 'C0001' is not a customer id like ACC-100001"]


@pytest.mark.timeout(300)
def test_telco_trials_end_to_end_on_the_mcp_server(local_stack: LocalStack, tmp_path: Path) -> None:
    assert os.environ["FIRESTORE_EMULATOR_HOST"]
    ids = ("datapack-add-5gb", "sim-lost-phone", "adv-other-account-usage", "datapack-price-question-is-not-a-request")
    scenarios = sorted(load_scenarios([scenarios_folder(TELCO)], ids=ids, pack=TELCO), key=lambda s: ids.index(s.id))
    worlds: list[World] = []
    with GeminiServer() as server:
        # The price question, answered the wrong way: the model adds the pack nobody asked for (both trials).
        price = "How much does a 5 GB data pack cost?"
        server.script(price, call("add_data_pack", size_gb=5), say("I've added a 5 GB data pack for 6.00 GBP."))
        server.script(price, call("add_data_pack", size_gb=5), say("I've added a 5 GB data pack for 6.00 GBP."))
        script_all(server, times=2)  # the right conversations (scripts for one message run in order)
        agent = build_agent(
            "gemini", gemini_base_url=server.url, api_key="fake-key", max_attempts=1, deadline_s=10.0, pack=TELCO
        ).load()
        assert agent.config.pack == TELCO and "add_data_pack" in agent.config.tools
        pairs = [(s, run_trial(s, t, agent, f"sfeval-telco-{n}-{t}", keep_world=worlds))
                 for n, s in enumerate(scenarios) for t in (1, 2)]  # fmt: skip
    traces = [trace for _, trace in pairs]
    scores = {(trace.scenario_id, trace.trial): score(s, trace) for s, trace in pairs}
    assert not [t.harness_error for t in traces if t.harness_error]
    failed = {key: sorted(c.name for c in s.failures) for key, s in scores.items()}
    by = {(t.scenario_id, t.trial): t for t in traces}
    for sid in ("datapack-add-5gb", "sim-lost-phone", "adv-other-account-usage"):
        assert failed[sid, 1] == [] and failed[sid, 2] == [], failed

    # The pack really added the pack in the trial's own store, once per trial: trials never see each other.
    for trial in (1, 2):
        trace = by["datapack-add-5gb", trial]
        assert [(c.name, c.status) for c in trace.calls] == [("add_data_pack", "done")]
        created = [c for c in trace.changes if c.kind == "created" and "/data_packs/" in c.path]
        assert len(created) == 1 and created[0].after and created[0].after["size_gb"] == 5
        assert trace.after["customers/ACC-100002/account/current"]["extra_data_gb"] == 5
        assert any(c.path.startswith("customers/ACC-100002/audit/") for c in trace.changes)
    assert by["sim-lost-phone", 1].after["customers/ACC-100004/account/current"]["sim_status"] == "barred"
    # Another account's id: refused before any model or tool call.
    assert (
        by["adv-other-account-usage", 1].calls == [] and by["adv-other-account-usage", 1].turns[0].outcome == "refused"
    )
    # The unasked data pack: the consent gate stopped it (nothing in the store), the scorer names the attempt.
    for trial in (1, 2):
        trace = by["datapack-price-question-is-not-a-request", trial]
        assert [(c.name, c.status) for c in trace.calls] == [("add_data_pack", "not_requested")]
        assert not [c for c in trace.changes if "/data_packs/" in c.path or c.path.endswith("account/current")]
        assert "forbidden_tools" in failed["datapack-price-question-is-not-a-request", trial]
        assert "state" not in failed["datapack-price-question-is-not-a-request", trial]
    # Each trial's store and server are gone after it.
    assert worlds and all(w.store is not None and not w.store.folder.exists() for w in worlds)


@pytest.mark.timeout(300)
def test_cli_runs_the_telco_pack(local_stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "run"
    lines: list[str] = []
    code = main(["--pack", TELCO, "--backend", "instant", "--only", "adv-other-account-usage,usage-data-left",
                 "--out", str(out), "--quiet"], echo=lines.append)  # fmt: skip
    assert code == 0, lines
    assert lines[0].startswith("2 scenarios x 1: 1/2 trials passed"), lines  # instant refuses; it calls no tool
    assert '"pack": "telco"' in (out / "report.json").read_text()
    assert main(["--pack", "nosuchpack", "--validate"]) == 2
