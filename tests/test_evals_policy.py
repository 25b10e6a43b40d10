"""A scenario's own shop policy (``seed.policy``) reaches the world, the prompt and the tools alike.

The shipped scenario ``returns-window-shortened-by-policy`` shortens the return window to 5 days. On the
Firestore emulator, with the Gemini backend against ``tests/gemini_server.py`` scripted to ask the
eligibility tool: the trial's help article says 5 days, the system prompt's policy digest says 5 days (and
not the shipped 30), and the tool's verdict for a delivery of a week ago is "not eligible". A scripted agent
that quotes the shipped window fails the scenario; one that says 5 days passes.
"""

from __future__ import annotations

import json
import os

import pytest
from google.cloud import firestore

from evals.harness import run_trial
from evals.packworld import scenarios_folder
from evals.run import build_agent
from evals.scenario import load_scenarios, parse_scenarios
from evals.scoring import score
from evals.world import World
from stack.emulators import LocalStack
from tests.gemini_server import GeminiServer, Reply

DEFAULT_SCENARIOS = scenarios_folder("shop")  # the default pack's dev split

pytestmark = pytest.mark.timeout(300)
ASK = "Can I still return the trekking poles from order O-C0004-05? They arrived a week ago."


@pytest.fixture(scope="module")
def emulator(local_stack: LocalStack) -> str:
    return os.environ["FIRESTORE_EMULATOR_HOST"]


def test_the_scenarios_policy_is_the_worlds_the_prompts_and_the_tools(emulator: str) -> None:
    [scenario] = load_scenarios([DEFAULT_SCENARIOS], ids=["returns-window-shortened-by-policy"])
    assert scenario.policy.returns.window_days == 5 and scenario.policy.version != load_scenarios(
        [DEFAULT_SCENARIOS], ids=["returns-already-started"])[0].policy.version  # fmt: skip

    world = World(scenario, "sfeval-policy-world")
    world.setup()
    try:
        article = firestore.Client(project="sfeval-policy-world").document("help_articles/returns").get().to_dict()
        assert "within 5 days of delivery" in article["body"] and "30 days" not in article["body"]
    finally:
        world.teardown()

    with GeminiServer() as server:
        for reply in ("Sorry, returns are only possible within 5 days of delivery, and yours was a week ago.",
                      "You can return it within 30 days."):  # fmt: skip
            server.script(ASK, Reply.function_call("check_refund_eligibility", {"order_id": "O-C0004-05",
                                                                               "kind": "return"}),
                          Reply.text(reply))  # fmt: skip
        agent = build_agent("gemini", gemini_base_url=server.url, api_key="fake-key", max_attempts=1,
                            deadline_s=10.0, max_tokens=128).load()  # fmt: skip
        right = run_trial(scenario, 1, agent, "sfeval-policy-1")
        wrong = run_trial(scenario, 2, agent, "sfeval-policy-2")
        first, after_tool = server.requests_for(ASK)[:2]
    assert not right.harness_error and not wrong.harness_error, (right.harness_error, wrong.harness_error)
    assert "within 5 days of delivery" in first.system_text and "30 days" not in first.system_text
    verdict = json.dumps(after_tool.contents[-1])  # the tool's answer, as the model got it
    assert '"eligible": false' in verdict.replace('\\"', '"'), verdict
    assert score(scenario, right).passed, score(scenario, right).failures
    # The wrong model's "within 30 days" states what neither the policy nor the tool said: the grounding check
    # (agents/grounding.py) replaced it before the customer saw it, so only the reply check fails.
    failed = {c.name for c in score(scenario, wrong).failures}
    assert failed == {"reply"}
    assert "ungrounded" in wrong.flags and "30 days" not in wrong.turns[-1].reply_text


def test_a_bad_policy_override_or_an_article_override_is_explained() -> None:
    base = {"id": "p", "category": "returns", "customer": "C0001", "goal": "g", "user": {"turns": ["hi"]},
            "expect": {}}  # fmt: skip
    bad_policy = {**base, "id": "bad-policy", "seed": {"policy": {"returns": {"window_days": -3}}}}
    unknown = {**base, "id": "unknown-key", "seed": {"policy": {"returns": {"window_dayz": 3}}}}
    article = {**base, "id": "article", "seed": {"overrides": [{"doc": "help_articles/returns", "set": {"body": "x"}}]}}
    _, problems = parse_scenarios({"scenarios": [bad_policy, unknown, article]}, "f.yaml")
    text = "\n".join(problems)
    assert "f.yaml: scenarios[0] (bad-policy): seed.policy: not a valid policy override" in text
    assert "f.yaml: scenarios[1] (unknown-key): seed.policy: not a valid policy override" in text
    assert "f.yaml: scenarios[2] (article): seed.overrides: overrides[0]: help articles are rendered" in text
