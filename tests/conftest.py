"""Shared pytest fixtures, and the two test lanes.

A test that asks for one of ``STACK_FIXTURES`` (directly or through another fixture), or is marked ``e2e``, is
marked ``stack`` at collection: ``make test-fast`` runs the others (``-m "not stack"``: pure logic, no emulator,
no BigQuery venv), ``make test`` runs everything. A test that starts emulators of its own asks for ``bq_venv``
(or ``local_stack``), so it lands in the right lane without a marker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.emulators import DEFAULT_STATE_DIR, LocalStack, check_prerequisites, ensure_bq_venv

# ---------------------------------------------------------------------------
# Local stack (stack/): the real emulators, started once per test session.
# Tests that need Pub/Sub, Firestore or BigQuery ask for `local_stack` (resources
# created, env applied) or `seeded_stack` (plus the default Firestore seed set).
# Each session gets its own state dir under pytest's tmp dir, so a concurrent
# `make run` on .stack/ is never disturbed; logs end up in <tmp>/stack0/logs/.
# ---------------------------------------------------------------------------


STACK_FIXTURES = frozenset({"bq_venv", "local_stack", "seeded_stack"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") or STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def bq_venv() -> Path:
    """The BigQuery emulator's own virtual environment, built on first use (about a minute)."""
    return ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory, bq_venv: Path) -> Iterator[LocalStack]:
    from stack.resources import ensure_resources  # imports Beam (via pipeline.options): only when asked for

    problems = check_prerequisites(bq_venv=bq_venv)
    if problems:
        pytest.fail("the local stack cannot start:\n  - " + "\n  - ".join(problems), pytrace=False)
    stack = LocalStack(state_dir=tmp_path_factory.mktemp("stack"), bq_venv=bq_venv).start()
    try:
        stack.apply_env()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def seeded_stack(local_stack: LocalStack) -> LocalStack:
    from packs.shop.seed import DEFAULT_CUSTOMERS, seed_firestore
    from stack.clients import firestore_client

    seed_firestore(firestore_client(local_stack.project), DEFAULT_CUSTOMERS)
    return local_stack
