"""Policies as data (tools/policies.yaml, tools/policies.py): one definition, and everything derives from it.

The end-to-end tests change one parameter of the shipped policy and check that the article the tools serve,
the digest in the prompt and the tool's verdict all move together, on the real Firestore emulator with the
seed data, through ``agents.steps.start`` (the prompt) and the ``ToolContext`` it binds (the tools).
"""

from __future__ import annotations

import json
import pickle
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from google.cloud import firestore

from agents.state import StepConfig
from agents.steps import PROMPT_VERSION, start
from packs.shop import eligibility as rules
from packs.shop.policy import PolicyError, ShopPolicy, default_policy, parse_policy
from packs.shop.records import REFUNDS
from packs.shop.seed import DEFAULT_CUSTOMERS, REFERENCE_TIME, build_customer, help_articles, seed_firestore
from stack.emulators import LocalStack
from tests.test_steps import enriched_for
from tests.test_tools import call, clone_customer, delete_clones, docs, newest_order_id
from tools.registry import FirestoreToolExecutor

# ---------------------------------------------------------------------------
# The definition (no stack needed)
# ---------------------------------------------------------------------------


def _numeric_paths(policy: ShopPolicy) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []

    def walk(prefix: tuple[str, ...], value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk((*prefix, str(key)), item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append(prefix)

    walk((), policy.model_dump(exclude={"version", "articles"}))
    return out


def _nested(path: tuple[str, ...], value: object) -> dict:
    out: dict = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


def _texts(policy: ShopPolicy) -> list[str]:
    articles = [f"{a['title']} {a['body']}" for a in policy.articles_rendered().values()]
    return articles + [d.text for d in policy.digests]


def test_every_number_in_the_articles_and_digests_is_a_policy_parameter() -> None:
    # Give every numeric parameter a sentinel value: a number left in any text would be a second definition.
    sentinels: dict = {}
    policy = default_policy()
    for n, path in enumerate(_numeric_paths(policy)):
        sentinels = _merge(sentinels, _nested(path, 900 + n))
    changed = policy.with_overrides(sentinels)
    allowed = {str(900 + n) for n in range(len(_numeric_paths(policy)))}
    for text in _texts(changed):
        assert set(re.findall(r"\d+(?:\.\d+)?", text)) <= allowed, text


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def test_shipped_policy_texts_render_and_pickle_by_name() -> None:
    policy = default_policy()
    assert {d.slug for d in policy.digests} == {
        "returns", "refunds", "delivery-delays", "change-address", "warranty", "damaged-or-missing",
        "account-security",
    }  # fmt: skip
    assert all("${" not in t for t in _texts(policy))
    assert len(pickle.dumps(policy)) < 200 and pickle.loads(pickle.dumps(policy)) is policy
    other = policy.with_overrides({"returns": {"window_days": 14}})
    assert pickle.loads(pickle.dumps(other)) == other and other.fingerprint != policy.fingerprint
    assert other.version.startswith(policy.version + "+") and policy.with_overrides({}).version == policy.version


def test_an_invalid_policy_is_refused_with_every_problem() -> None:
    with pytest.raises(PolicyError) as err:
        default_policy().with_overrides({"returns": {"window_days": -1}, "delays": {"refund_after_days_late": "x"}})
    assert len(err.value.problems) == 2
    with pytest.raises(PolicyError, match="placeholder"):
        default_policy().with_overrides({"articles": {"returns": {"body": "Within ${returns.window_weeks} weeks."}}})
    with pytest.raises(PolicyError, match="free"):
        doc = default_policy().model_dump()
        doc["returns"]["label_fee"] = {"plus": 0.0}
        parse_policy(doc)


def test_the_verdict_rules_read_the_parameters() -> None:
    seeded = build_customer(4).orders[newest_order_id(4)]
    order = {**seeded, "delivered_at": REFERENCE_TIME - timedelta(days=20)}
    assert rules.return_eligibility(order, REFERENCE_TIME).reason == "within_window"
    shorter = default_policy().with_overrides({"returns": {"window_days": 14}})
    assert rules.return_eligibility(order, REFERENCE_TIME, policy=shorter).reason == "window_closed"
    assert rules.is_refundable(order, REFERENCE_TIME) and not rules.is_refundable(order, REFERENCE_TIME, shorter)
    pricier = default_policy().with_overrides({"returns": {"label_fee": {"free": 6.5}}})
    assert rules.return_eligibility(order, REFERENCE_TIME, "free", pricier).label_fee == 6.5


def test_seeded_articles_are_the_policys() -> None:
    policy = default_policy().with_overrides({"damaged_items": {"report_window_days": 21}})
    assert "within 21 days of delivery" in help_articles(policy)["damaged-or-missing"]["body"]
    assert help_articles()["damaged-or-missing"]["body"] == default_policy().article("damaged-or-missing")["body"]


# ---------------------------------------------------------------------------
# One parameter moves the article, the digest and the verdict together (emulator)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(seeded_stack: LocalStack) -> Iterator[firestore.Client]:
    """A Firestore namespace of this module's own, seeded afresh: the tool tests change the shared seed
    (a refund on C0003's delayed order), and these tests judge the seed's own orders."""
    client = firestore.Client(project=f"policies-{uuid.uuid4().hex[:8]}")
    seed_firestore(client, DEFAULT_CUSTOMERS)
    yield client
    delete_clones(client)


@pytest.fixture(scope="module")
def executor(db: firestore.Client) -> FirestoreToolExecutor:
    return FirestoreToolExecutor(db, clock=lambda: REFERENCE_TIME)


def _delivered_days_ago(index: int) -> float:
    order = build_customer(index).orders[newest_order_id(index)]
    return (REFERENCE_TIME - order["delivered_at"]) / timedelta(days=1)


def test_changing_the_return_window_moves_article_digest_and_verdict_together(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    age = _delivered_days_ago(4)  # C0004's newest order is delivered, a few days ago
    assert age > 1
    shorter = int(age) - 1
    text = f"Can I return my order {newest_order_id(4)}?"
    outcomes = {}
    for window in (default_policy().returns.window_days, shorter):
        config = StepConfig(policy=default_policy().with_overrides({"returns": {"window_days": window}}))
        state = start(enriched_for(db, "C0004", text), PROMPT_VERSION, config)
        system = state.request.messages[0].content
        verdict = executor.execute(
            state.ctx, call("check_refund_eligibility", order_id=newest_order_id(4), kind="return")
        ).content
        search = executor.execute(state.ctx, call("search_help_articles", query="return an item", limit=1)).content
        outcomes[window] = (system, verdict, search["articles"][0])
    for window, (system, verdict, article) in outcomes.items():
        assert f"Returns: within {window} days of delivery" in system  # the digest
        assert article["slug"] == "returns" and f"within {window} days of delivery" in article["excerpt"]
        cited = {p["slug"]: p["excerpt"] for p in verdict["policy"]}
        assert f"within {window} days of delivery" in cited["returns"]
        assert f"{window}" in verdict["explanation"]
    assert outcomes[default_policy().returns.window_days][1]["reason"] == "within_window"
    assert outcomes[shorter][1]["reason"] == "window_closed"


def test_changing_the_delay_threshold_moves_digest_and_refund_verdict(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    eta = build_customer(3).orders[newest_order_id(3)]["shipping"]["eta"]
    late = (REFERENCE_TIME - eta) / timedelta(days=1)  # C0003's newest order is delayed
    text = f"My order {newest_order_id(3)} is late, can I get a refund?"
    for threshold, eligible in ((int(late) + 1, False), (max(0, int(late) - 1), True)):
        config = StepConfig(policy=default_policy().with_overrides({"delays": {"refund_after_days_late": threshold}}))
        state = start(enriched_for(db, "C0003", text), PROMPT_VERSION, config)
        assert f"more than {threshold} days past its ETA" in state.request.messages[0].content
        verdict = executor.execute(state.ctx, call("check_refund_eligibility", order_id=newest_order_id(3))).content
        assert verdict["eligible"] is eligible and f"more than {threshold}" in verdict["explanation"]
        cited = {p["slug"]: p["excerpt"] for p in verdict["policy"]}
        assert f"more than {threshold} days late" in cited["delivery-delays"]


def test_a_damaged_delivered_item_goes_to_a_ticket_and_is_never_refunded_by_the_tools(
    db: firestore.Client, executor: FirestoreToolExecutor
) -> None:
    cid = clone_customer(db, 4)
    oid = f"O-{cid}-{len(build_customer(4).orders):02d}"
    age = _delivered_days_ago(4)
    state = start(enriched_for(db, cid, f"Order {oid} arrived damaged, refund it"), PROMPT_VERSION, StepConfig())
    verdict = executor.execute(state.ctx, call("check_refund_eligibility", order_id=oid)).content
    assert verdict["eligible"] is False and verdict["reason"] == "return_required"
    window = default_policy().damaged_items.report_window_days
    assert age <= window and f"within {window} days of delivery" in verdict["next_step"]
    assert "ticket" in verdict["next_step"] and "need not be sent back" in verdict["next_step"]
    article = default_policy().article("damaged-or-missing")["body"]
    assert f"within {window} days of delivery" in article and "photo" in article
    digest = state.request.messages[0].content  # "damaged" selects the damaged-items digest
    assert f"Damaged or missing items: report within {window} days of delivery" in digest and "ticket" in digest
    denied = executor.execute(state.ctx, call("start_refund_or_return", order_id=oid, kind="refund")).content
    assert denied["status"] == "denied" and docs(db, cid, REFUNDS) == []
    # Outside a (shortened) damage window the verdict no longer offers the damage route.
    shorter = default_policy().with_overrides({"damaged_items": {"report_window_days": max(0, int(age) - 1)}})
    state = start(enriched_for(db, cid, "refund please"), PROMPT_VERSION, StepConfig(policy=shorter))
    verdict = executor.execute(state.ctx, call("check_refund_eligibility", order_id=oid)).content
    assert "damaged" not in verdict["next_step"]
    assert json.dumps(verdict)  # still a plain JSON-able result
