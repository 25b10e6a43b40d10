"""Session state layout and its upgrade rule (docs/session-state.md).

- Version 0 (one pickled cell, written by the code before the split; golden bytes in
  tests/fixtures/session_state_v0/) is read by today's reader and mapped into the version-1 cells,
  and a migrated session carries on exactly where it was.
- Version 1's records still encode to the golden bytes in tests/fixtures/session_state_v1/ and
  decode from them: a layout change that does not bump the version fails here.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contract.messages import AgentReply, InboundMessage
from contract.turn import Role
from pipeline import session_codec as codec
from pipeline.session import SessionDoFn
from pipeline.session_core import Purpose, SessionConfig, SessionCore, SessionMeta, fingerprint, memory_cells
from pipeline.session_legacy import SessionState, dumps_v0, loads_v0, migrate_v0
from tests.session_state_records import DECODE, ENCODE, FIXTURE, RECORDS

V0 = Path(__file__).parent / "fixtures" / "session_state_v0"
EXPECTED = json.loads((V0 / "expected.json").read_text())
V0_CASES = ["collecting", "inflight_with_waiting", "answered", "inflight_before_oldest_arrived"]
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def describe_v0(s: SessionState) -> dict:
    """The same view of a state as the fixture generator wrote (tests/fixtures/session_state_v0/make_fixtures.py)."""
    f = s.in_flight
    return {
        "customer_id": s.customer_id,
        "opened": s.opened,
        "last_activity": s.last_activity,
        "next_turn": s.next_turn,
        "messages": s.messages,
        "duplicates": s.duplicates,
        "handed_off": s.handed_off,
        "omitted_history": s.omitted_history,
        "pending": [
            [p.message.message_id, p.message.text, p.message.sent_at.isoformat(), p.arrived] for p in s.pending
        ],
        "in_flight": None
        if f is None
        else {"turn_index": f.turn_index, "released": f.released, "oldest_arrived": f.oldest_arrived},
        "history": [[h.role.value, h.text, h.turn_index, h.at.isoformat()] for h in s.history],
        "seen": list(s.seen),
    }


@pytest.mark.parametrize("case", V0_CASES)
def test_version_0_golden_bytes_are_read_field_for_field(case: str) -> None:
    state = loads_v0((V0 / f"{case}.pkl").read_bytes())
    assert describe_v0(state) == EXPECTED[case]


def test_the_version_0_reader_refuses_anything_but_session_state() -> None:
    with pytest.raises(pickle.UnpicklingError, match="not a version-0 session state class"):
        loads_v0(pickle.dumps(Path("/etc/passwd")))
    with pytest.raises(pickle.UnpicklingError):
        loads_v0(pickle.dumps({"customer_id": "C1"}))


@pytest.mark.parametrize("case", V0_CASES)
def test_version_0_maps_into_the_version_1_cells(case: str) -> None:
    cfg = SessionConfig(max_history=EXPECTED["_config"]["max_history"])
    want = EXPECTED[case]
    cells = memory_cells()
    meta = migrate_v0(loads_v0((V0 / f"{case}.pkl").read_bytes()), cfg, cells)
    assert (meta.customer_id, meta.next_turn, meta.messages, meta.duplicates, meta.handed_off) == (
        want["customer_id"],
        want["next_turn"],
        want["messages"],
        want["duplicates"],
        want["handed_off"],
    )
    assert meta.omitted_history == want["omitted_history"]
    assert [[h.role.value, h.text, h.turn_index, h.at.isoformat()] for h in cells.history.read()] == want["history"]
    assert [p.message.message_id for p in cells.pending.read()] == [p[0] for p in want["pending"]]
    assert meta.pending_count == len(want["pending"])
    assert cells.seen.read() == [fingerprint(m) for m in want["seen"]]
    assert meta.seen_stored == len(want["seen"])
    if want["in_flight"] is None:
        assert meta.in_flight is None
    else:
        f = meta.in_flight
        assert f is not None and [f.turn_index, f.released, f.oldest_arrived] == list(want["in_flight"].values())
    # Every version-1 record of the migrated session round-trips through its encoding.
    assert codec.decode_meta(codec.encode_meta(meta)) == meta
    for p in cells.pending.read():
        assert codec.decode_pending(codec.encode_pending(p)) == p
    for h in cells.history.read():
        assert codec.decode_history(codec.encode_history(h)) == h


def _reply(turn_index: int, text: str) -> AgentReply:
    return AgentReply(
        session_id="sess-v0", turn_id=f"sess-v0#{turn_index}", turn_index=turn_index, answers=[], text=text, model="m"
    )


class _Timers:
    def __init__(self) -> None:
        self.due: dict[Purpose, float] = {}

    def set(self, purpose: Purpose, at: float) -> None:
        self.due[purpose] = at


def test_a_session_written_by_version_0_carries_on_after_the_upgrade() -> None:
    """The in-flight fixture: turn 3 in flight, m6 waiting. Its reply comes back to the new code."""
    cfg = SessionConfig(quiet_window_s=1.5, max_hold_s=4.0, inflight_timeout_s=60, idle_timeout_s=300, max_history=4)
    core = SessionCore(cfg, migrate=migrate_v0)
    cells, timers = memory_cells(), _Timers()
    # What the DoFn's coder gives for the old cell: the "session" cell's version-0 bytes, read as version 0.
    cells.meta.write(SessionDoFn.META.coder.decode((V0 / "inflight_with_waiting.pkl").read_bytes()))
    # A redelivered old message is still a duplicate after the upgrade (its id came over as a fingerprint).
    old_msg = InboundMessage(
        session_id="sess-v0", customer_id="C0042", message_id="m3", text="Can I change the address?", sent_at=T0
    )
    assert core.on_message("sess-v0", old_msg, 21.0, cells, timers) == []
    assert core.hooks.counts == {"migrated_v0": 1, "duplicates": 1}
    # The turn in flight is watched by the freshness timer, which also keeps its in-flight deadline.
    assert isinstance(cells.meta.read(), SessionMeta) and Purpose.FRESHNESS in timers.due and Purpose.IDLE in timers.due
    assert Purpose.INFLIGHT not in timers.due
    assert core.on_reply(_reply(3, "You're welcome."), 22.0, cells, timers) == []
    (turn,) = core.on_timer(Purpose.RELEASE, "sess-v0", timers.due[Purpose.RELEASE], cells, timers)
    assert (turn.turn_index, turn.message_ids, turn.customer_id) == (4, ["m6"], "C0042")
    assert [(h.role, h.text) for h in turn.history] == [
        (Role.USER, "Where is my order?"),  # the anchor survives the upgrade
        (Role.AGENT, "Done, a human will confirm."),
        (Role.USER, "thanks"),
        (Role.AGENT, "You're welcome."),
    ]
    assert turn.omitted_history == EXPECTED["inflight_with_waiting"]["omitted_history"] + 1
    assert turn.history[2].at == T0 + timedelta(seconds=18)  # the +02:00 message keeps its instant


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_version_1_records_match_their_golden_bytes(name: str) -> None:
    golden = bytes.fromhex(json.loads(FIXTURE.read_text())[name])
    kind, value = RECORDS[name]
    assert golden[0] == 1, "the golden bytes of version 1 lead with version 1"
    assert DECODE[kind](golden) == value
    assert ENCODE[kind](value) == golden, (
        "version 1's encoding changed: add a version (a new writer, keep this reader), see docs/session-state.md"
    )


def test_time_offsets_survive_the_encoding() -> None:
    _, value = RECORDS["pending_no_received"]
    back = codec.decode_pending(codec.encode_pending(value))
    assert back.message.sent_at.utcoffset() == timedelta(hours=2) and back.message.received_at is None


def test_an_unknown_version_is_refused_with_a_reason() -> None:
    data = bytearray(codec.encode_meta(RECORDS["meta_new"][1]))  # type: ignore[arg-type]
    data[0] = 9
    with pytest.raises(ValueError, match="layout version 9; this code reads \\[1\\]"):
        codec.decode_meta(bytes(data))


def test_state_coders_are_deterministic_and_round_trip() -> None:
    for spec, (_, value) in (
        (SessionDoFn.META, RECORDS["meta_full"]),
        (SessionDoFn.PENDING, RECORDS["pending_received"]),
        (SessionDoFn.HISTORY, RECORDS["history_user"]),
    ):
        assert spec.coder.is_deterministic()
        assert spec.coder.decode(spec.coder.encode(value)) == value
    # The "session" cell reads both layouts: version 0's pickle (to migrate) and version 1's meta.
    legacy = loads_v0((V0 / "answered.pkl").read_bytes())
    assert SessionDoFn.META.coder.decode((V0 / "answered.pkl").read_bytes()) == legacy
    assert SessionDoFn.META.coder.decode(dumps_v0(legacy)) == legacy


def test_the_session_key_coder_in_the_dataflow_job_is_deterministic_and_keeps_the_key_bytes() -> None:
    """Issue 19: Beam warned the inferred key coder "may not be deterministic". The job's Sessions input
    is now typed (MergeSessionEvents, ``SESSION_EVENT``), so its key coder is ``SessionKeyCoder``."""
    from apache_beam.coders import FastPrimitivesCoder
    from apache_beam.runners import pipeline_context

    from deploy.transforms import dry_run_job
    from pipeline.session import SessionKeyCoder

    job, _ = dry_run_job()
    proto = job.proto_pipeline
    (sessions,) = [t for t in proto.components.transforms.values() if t.unique_name == "Sessions/ParDo(SessionDoFn)"]
    (pcoll_id,) = sessions.inputs.values()
    context = pipeline_context.PipelineContext(proto.components)
    coder = context.coders.get_by_id(proto.components.pcollections[pcoll_id].coder_id)
    assert coder.is_kv_coder()
    key_coder = coder.key_coder()
    assert isinstance(key_coder, SessionKeyCoder) and key_coder.is_deterministic()
    # The bytes state is keyed by are those the untyped job's FastPrimitivesCoder wrote: an update finds them.
    for key in ("s-1", "sess-ünï-" + "x" * 200):
        assert key_coder.encode(key) == FastPrimitivesCoder().encode(key)
        assert key_coder.get_impl().encode_nested(key) == FastPrimitivesCoder().get_impl().encode_nested(key)
    with pytest.raises(TypeError):
        key_coder.encode(object())
