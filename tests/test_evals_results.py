"""The judge's scores and the results in BigQuery, on the real local stack (Firestore and BigQuery emulators).

The judge is the Gemini backend (the real google-genai client) against ``tests/gemini_server.py``,
scripted with the judgments; the agent is the instant stub, so what is under test is the plumbing
from a judge's answer to the report and the BigQuery rows, not a model's taste.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.judge import Judgment, parse_judgment
from evals.packworld import scenarios_folder
from evals.report import write_report
from evals.results_bq import DATASET, write_results
from evals.run import build_agent, main, run_scenarios
from evals.scenario import load_scenarios
from stack.clients import bigquery_client
from stack.emulators import LocalStack
from tests.gemini_server import GeminiServer, Reply

DEFAULT_SCENARIOS = scenarios_folder("shop")  # the default pack's dev split

pytestmark = pytest.mark.timeout(300)

SCENARIOS = ("policy-delay-threshold", "adv-system-prompt-extraction")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"helpfulness": 4, "groundedness": 5, "reason": "cites the 30 days"}', Judgment(4, 5, "cites the 30 days")),
        ('Sure! ```json\n{"helpfulness": "2", "groundedness": 1}\n```', Judgment(2, 1)),
        ("Helpfulness: 3\nGroundedness - 4", Judgment(3, 4)),
        ('{"helpfulness": 9, "groundedness": 0}', Judgment(None, None)),  # out of range: no score, not a clamp
        ("I cannot grade this.", Judgment(None, None)),
    ],
)
def test_judgments_are_parsed_or_left_empty(answer: str, expected: Judgment) -> None:
    assert parse_judgment(answer) == expected


def test_judge_scores_reach_the_report_and_bigquery(local_stack: LocalStack, tmp_path: Path) -> None:
    scenarios = load_scenarios([DEFAULT_SCENARIOS], ids=SCENARIOS)
    assert sorted(s.id for s in scenarios) == sorted(SCENARIOS)
    with GeminiServer() as server:
        # The judge's request carries the goal; script one judgment per scenario by a word of its goal.
        policy, adversarial = sorted(scenarios, key=lambda s: s.category != "policy")
        server.script(policy.goal[:40], Reply.text('{"helpfulness": 2, "groundedness": 5, "reason": "vague"}'))
        server.script(adversarial.goal[:40], Reply.text('{"helpfulness": 4, "groundedness": 4}'))
        judge = build_agent("gemini", gemini_base_url=server.url, api_key="fake-key", max_attempts=1)
        result = run_scenarios(scenarios, build_agent("instant"), k=1, run_id="judgetest", judge_agent=judge)
        judged = server.requests
    assert len(judged) == 2
    # The judge saw the policies and the conversation, never the scenario's expected end state.
    system = judged[0].system_text
    assert "within 30 days of delivery" in system and "groundedness" in system
    scores = {s.scenario_id: s.metrics for s in result.scores}
    assert (scores[policy.id]["judge_helpfulness"], scores[policy.id]["judge_groundedness"]) == (2, 5)
    assert (scores[adversarial.id]["judge_helpfulness"], scores[adversarial.id]["judge_groundedness"]) == (4, 4)
    overall = result.summary()["overall"]
    assert overall["judge_helpfulness"] == 3.0 and overall["judge_groundedness"] == 4.5
    # Never gating: the judge's low helpfulness does not change pass/fail.
    unjudged = run_scenarios(scenarios, build_agent("instant"), k=1, run_id="nojudge")
    assert [s.passed for s in unjudged.scores] == [s.passed for s in result.scores]

    json_path, md_path = write_report(result, tmp_path)
    assert "judge: helpful" in md_path.read_text()

    project = local_stack.project
    assert write_results(result.to_json(), project, local_stack.bigquery_endpoint) == (1, 2)
    assert write_results(result.to_json(), project, local_stack.bigquery_endpoint) == (0, 0)  # loaded already
    client = bigquery_client(project, local_stack.bigquery_endpoint)
    try:
        runs = list(client.query(f"SELECT * FROM `{project}.{DATASET}.eval_runs_v1` WHERE run_id = 'judgetest'"))
        trials = list(client.query(f"SELECT * FROM `{project}.{DATASET}.eval_trials_v1` WHERE run_id = 'judgetest'"))
    finally:
        client.close()
    assert len(runs) == 1 and runs[0]["k"] == 1 and runs[0]["backend"] == "instant"
    assert runs[0]["judge_model"] and runs[0]["trials"] == 2
    by_id = {t["scenario_id"]: t for t in trials}
    assert len(trials) == 2 and set(by_id) == set(SCENARIOS)
    assert by_id[policy.id]["judge_helpfulness"] == 2 and by_id[policy.id]["judge_groundedness"] == 5
    for t in trials:
        assert t["passed"] == scores_passed(result, t["scenario_id"])


def scores_passed(result, scenario_id: str) -> bool:  # noqa: ANN001 - a RunResult
    return next(s.passed for s in result.scores if s.scenario_id == scenario_id)


def test_cli_writes_results_to_bigquery(local_stack: LocalStack, tmp_path: Path) -> None:
    lines: list[str] = []
    argv = ["--backend", "instant", "--only", SCENARIOS[0], "--out", str(tmp_path), "--quiet"]
    argv += ["--bigquery-project", local_stack.project, "--bigquery-endpoint", local_stack.bigquery_endpoint]
    assert main(argv, echo=lines.append) == 0
    assert any("BigQuery: 1 run row and 1 trial rows" in line for line in lines), lines
