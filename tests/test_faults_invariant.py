"""The delivery invariant the fault tests and the load bench rely on (``bench.harness``), checked on
hand-made replies: it must catch what it claims to catch. No emulators."""

from __future__ import annotations

from bench.harness import check_delivery, check_rejected, percentile, summary
from bench.load_plan import LoadProfile, plan_load
from contract.messages import AgentReply, ReplyKind


def reply(
    session: str, index: int, answers: list[str], kind: ReplyKind = ReplyKind.REPLY, text: str = "ok"
) -> AgentReply:
    return AgentReply(
        session_id=session, turn_id=f"{session}#{index}", turn_index=index, answers=answers, kind=kind, text=text,
        model="instant",
    )  # fmt: skip


ACCEPTED = {"m1": "s", "m2": "s", "m3": "s"}


def test_every_message_answered_once_holds() -> None:
    replies = [reply("s", 0, ["m1", "m2"]), reply("s", 1, ["m3"]), reply("s", 1, ["m3"])]  # a redelivered reply
    verdict = check_delivery(ACCEPTED, replies, [])
    assert verdict.ok, verdict.explain()
    assert verdict.duplicate_deliveries == 1


def test_a_message_answered_twice_is_caught() -> None:
    verdict = check_delivery(ACCEPTED, [reply("s", 0, ["m1", "m2"]), reply("s", 1, ["m2", "m3"])], [])
    assert any("answered twice" in v for v in verdict.violations), verdict.violations


def test_a_lost_message_is_caught_unless_dead_lettered() -> None:
    replies = [reply("s", 0, ["m1", "m2"])]
    assert any("neither answered" in v for v in check_delivery(ACCEPTED, replies, []).violations)
    dead = [{"stage": "Sessions", "reason": "customer mismatch", "message_ids": ["m3"]}]
    assert check_delivery(ACCEPTED, replies, dead).ok
    no_reason = [{"stage": "Sessions", "reason": "", "message_ids": ["m3"]}]
    assert any("without a reason" in v for v in check_delivery(ACCEPTED, replies, no_reason).violations)


def test_an_error_reply_needs_its_dead_letter() -> None:
    replies = [reply("s", 0, ["m1", "m2", "m3"], ReplyKind.ERROR)]
    assert any("no dead letter" in v for v in check_delivery(ACCEPTED, replies, []).violations)
    dead = [{"stage": "AgentTurn", "reason": "gemini gave up", "message_ids": ["m1", "m2", "m3"]}]
    assert check_delivery(ACCEPTED, replies, dead).ok


def test_a_turn_republished_with_other_content_and_gaps_in_turns_are_caught() -> None:
    changed = [reply("s", 0, ["m1", "m2", "m3"]), reply("s", 0, ["m1"], text="other")]
    assert any("different content" in v for v in check_delivery(ACCEPTED, changed, []).violations)
    gap = [reply("s", 0, ["m1"]), reply("s", 2, ["m2", "m3"])]
    assert any("not 0..n-1" in v for v in check_delivery(ACCEPTED, gap, []).violations)
    foreign = [reply("s", 0, ["m1", "m2", "m3", "zz"])]
    assert any("never published" in v for v in check_delivery(ACCEPTED, foreign, []).violations)


def test_rejected_payloads_need_one_dead_letter_with_the_reason() -> None:
    dl = {"stage": "ParseInbound", "reason": "payload is not JSON", "attributes": {"probe": "a"},
          "_attributes": {"reason": "payload is not JSON"}}  # fmt: skip
    assert check_rejected({"a": "JSON"}, [dl]) == []
    assert check_rejected({"a": "UTF-8"}, [dl])  # wrong reason
    assert check_rejected({"a": "JSON"}, [dl, dl])  # twice
    assert check_rejected({"b": "JSON"}, [dl])  # missing


def test_percentiles_and_plans() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50, 90, 99)
    assert summary([]) == {"n": 0} and summary([3.0])["max"] == 3.0
    profile = LoadProfile(sessions=50, burstiness=0.5, turns=(1, 4), chars=(10, 30))
    a, b = plan_load(profile, "x"), plan_load(profile, "y")
    assert [[[m.text for m in t] for t in s.turns] for s in a] == [[[m.text for m in t] for t in s.turns] for s in b]
    messages = [m for s in a for t in s.turns for m in t]
    assert len({m.message_id for m in messages}) == len(messages)
    assert all(10 <= len(m.text) <= 31 for m in messages)
    assert any(len(t) > 1 for s in a for t in s.turns) and all(1 <= len(s.turns) <= 4 for s in a)
    assert a[-1].start_s < profile.ramp_s * 3  # arrivals spread over about the ramp
