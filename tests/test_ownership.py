"""Session ownership (pipeline/ownership.py, contract/binding.py): bindings refused case by case, and the
Firestore registry on the emulator. The leak across kills is tested on the real pipeline in
tests/test_faults_restart.py."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from contract.binding import BindingRefused, mint_session_id, parse_keys, verify_session_binding
from contract.messages import DeadLetter, InboundMessage
from pipeline.ownership import NOT_OWNER_REASON, STAGE, CheckSessionOwner
from stack.emulators import LocalStack

KEY = parse_keys("k" * 32)
OTHER_KEY = parse_keys("o" * 32)
NOW = 1_800_000_000.0


def test_a_binding_verifies_for_its_customer_only_before_expiry() -> None:
    sid = mint_session_id(KEY, "C0001", ttl_s=60, now=NOW)
    assert len(sid) <= 128 and sid.startswith("b1.")
    verify_session_binding(KEY, sid, "C0001", now=NOW + 59)
    # Key rotation: minted with the old key, verified while both are configured.
    verify_session_binding(OTHER_KEY + KEY, sid, "C0001", now=NOW)


def test_a_binding_claimed_by_another_customer_is_refused() -> None:
    sid = mint_session_id(KEY, "C0001", ttl_s=60, now=NOW)
    with pytest.raises(BindingRefused, match="another customer"):
        verify_session_binding(KEY, sid, "C0002", now=NOW)


def test_a_binding_made_with_another_key_is_refused() -> None:
    sid = mint_session_id(OTHER_KEY, "C0001", ttl_s=60, now=NOW)
    with pytest.raises(BindingRefused, match="forged"):
        verify_session_binding(KEY, sid, "C0001", now=NOW)


def test_an_expired_binding_is_refused() -> None:
    sid = mint_session_id(KEY, "C0001", ttl_s=60, now=NOW)
    with pytest.raises(BindingRefused, match="expired"):
        verify_session_binding(KEY, sid, "C0001", now=NOW + 60)


def test_an_altered_expiry_or_a_plain_session_id_is_refused() -> None:
    prefix, nonce, expires, tag = mint_session_id(KEY, "C0001", ttl_s=60, now=NOW).split(".")
    with pytest.raises(BindingRefused, match="forged"):  # the expiry is inside the tag
        verify_session_binding(KEY, f"{prefix}.{nonce}.{int(expires) + 86400}.{tag}", "C0001", now=NOW)
    with pytest.raises(BindingRefused, match="no binding"):
        verify_session_binding(KEY, "web-0123456789abcdef", "C0001", now=NOW)
    with pytest.raises(BindingRefused, match="malformed"):
        verify_session_binding(KEY, f"{prefix}.{nonce}.soon.{tag}", "C0001", now=NOW)
    with pytest.raises(ValueError, match="at least"):
        parse_keys("short")


def message(session: str, customer: str) -> InboundMessage:
    return InboundMessage(session_id=session, customer_id=customer, message_id=f"m-{uuid.uuid4().hex[:8]}",
                          text="where is my order?", sent_at=datetime.now(UTC))  # fmt: skip


def run(stage: CheckSessionOwner, msg: InboundMessage) -> tuple[list[InboundMessage], list[DeadLetter]]:
    out = list(stage.process(msg))
    dead = [o.value for o in out if hasattr(o, "tag")]
    return [o for o in out if not hasattr(o, "tag")], dead


@pytest.fixture
def collection() -> str:
    return f"owners_{uuid.uuid4().hex[:8]}"


@pytest.mark.e2e
def test_the_first_customer_owns_the_session_in_every_worker(local_stack: LocalStack, collection: str) -> None:
    first, second = (CheckSessionOwner(local_stack.project, collection) for _ in range(2))
    first.setup()
    second.setup()  # another worker (or the same one after a restart): nothing cached, the registry decides
    try:
        session = f"s-{uuid.uuid4().hex[:8]}"
        a = message(session, "C0001")
        assert run(first, a) == ([a], [])
        b = message(session, "C0002")
        for stage in (first, second):
            passed, dead = run(stage, b)
            assert passed == [] and len(dead) == 1
            assert dead[0].stage == STAGE and dead[0].reason == NOT_OWNER_REASON
            assert dead[0].message_ids == [b.message_id] and dead[0].session_id == session
        again = message(session, "C0001")
        assert run(second, again) == ([again], [])
    finally:
        first.teardown()
        second.teardown()


@pytest.mark.e2e
def test_with_a_key_unbound_and_forged_sessions_are_dead_lettered(local_stack: LocalStack, collection: str) -> None:
    stage = CheckSessionOwner(local_stack.project, collection, binding_keys="k" * 32)
    stage.setup()
    try:
        bound = mint_session_id(KEY, "C0003")
        ok = message(bound, "C0003")
        assert run(stage, ok) == ([ok], [])
        cases = {
            "another customer": message(bound, "C0004"),
            "forged": message(mint_session_id(OTHER_KEY, "C0003"), "C0003"),
            "expired": message(mint_session_id(KEY, "C0003", ttl_s=-1, now=time.time()), "C0003"),
            "no binding": message(f"plain-{uuid.uuid4().hex[:8]}", "C0003"),
        }
        for reason, msg in cases.items():
            passed, dead = run(stage, msg)
            assert passed == [] and len(dead) == 1, reason
            assert reason in dead[0].reason and dead[0].message_ids == [msg.message_id], dead[0]
    finally:
        stage.teardown()


@pytest.mark.e2e
def test_a_bundles_new_sessions_are_claimed_together_with_the_same_verdicts(
    local_stack: LocalStack, collection: str
) -> None:
    """Within a bundle, messages of sessions not seen before wait for one batched claim (finish_bundle): the
    verdicts are those of claims one at a time, and each message keeps its timestamp and window."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    other, stage = (CheckSessionOwner(local_stack.project, collection) for _ in range(2))
    other.setup()
    stage.setup()
    try:
        s1, s2, s3 = (f"s-{uuid.uuid4().hex[:8]}" for _ in range(3))
        assert run(other, message(s3, "C0004"))[1] == []  # another worker claimed s3 before
        msgs = [message(s1, "C0001"), message(s1, "C0002"), message(s2, "C0003"), message(s3, "C0005")]
        stage.start_bundle()
        held = [o for i, m in enumerate(msgs) for o in stage.process(m, Timestamp.of(100 + i), GlobalWindow())]
        assert held == []  # nothing known yet: all four wait for the claim
        out = list(stage.finish_bundle())
        passed = [o for o in out if not hasattr(o, "tag")]
        dead = [o.value for o in out if hasattr(o, "tag")]
        assert [(wv.value, wv.timestamp) for wv in passed] == [(msgs[0], Timestamp.of(100)), (msgs[2], 102)]
        assert [(wv.value.message_ids, wv.value.reason, wv.timestamp) for wv in dead] == [
            ([msgs[1].message_id], NOT_OWNER_REASON, Timestamp.of(101)),
            ([msgs[3].message_id], NOT_OWNER_REASON, Timestamp.of(103)),
        ]
        assert all(wv.windows == (GlobalWindow(),) for wv in passed + dead)
        # Known now: the next bundle decides at once, and another worker reads the same owners.
        stage.start_bundle()
        assert [type(o) for o in stage.process(message(s2, "C0003"), Timestamp.of(104), GlobalWindow())] == [
            InboundMessage
        ]
        assert list(stage.finish_bundle()) == []
        assert run(other, message(s1, "C0002"))[0] == [] and run(other, message(s2, "C0003"))[1] == []
    finally:
        other.teardown()
        stage.teardown()
