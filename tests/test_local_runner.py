"""The local runner's patches (pipeline/local_runner.py): same answers as Beam, computed once; applied in one
place, by the local entry point only, undone completely, and refused when a hook they replace is gone.

The canaries at the end pin down the Beam behaviour each patch works around: one fails when Beam changes it, and
then the patch is re-checked (and dropped if Beam fixed it)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import apache_beam as beam
import pytest
from apache_beam.coders import StrUtf8Coder
from apache_beam.runners.direct import transform_evaluator
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipeline import local_output, local_runner
from pipeline.session import SessionConfig, SessionDoFn


@pytest.fixture(autouse=True)
def own_patch_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that patch through monkeypatch (undone by it) keep their records out of the module's list."""
    monkeypatch.setattr(local_runner, "_APPLIED", [])
    monkeypatch.setattr(local_output, "_ACTIVE", [])


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch) -> object:
    original = userstate.get_dofn_specs
    monkeypatch.setattr(userstate, "get_dofn_specs", original)
    monkeypatch.setattr(transform_evaluator, "get_dofn_specs", original)
    monkeypatch.setattr(local_runner, "_SPECS", {})
    assert local_runner.use_cached_dofn_specs()
    return original


class Counting(beam.DoFn):
    COUNT = ReadModifyWriteStateSpec("count", StrUtf8Coder())

    def process(self, kv: tuple[str, str], count: object = beam.DoFn.StateParam(COUNT)) -> object:
        seen = int(count.read() or 0) + 1  # type: ignore[attr-defined]
        count.write(str(seen))  # type: ignore[attr-defined]
        yield f"{kv[0]}:{seen}"


def test_cached_specs_equal_beams_and_are_computed_once(cached: object) -> None:
    session = SessionDoFn(SessionConfig())
    expected = cached(session)  # type: ignore[operator]
    assert userstate.get_dofn_specs(session) == expected and userstate.is_stateful_dofn(session)
    assert transform_evaluator.get_dofn_specs(session) == expected
    # A second instance of the same class (the runner's pickled copy per bundle) hits the cache.
    assert userstate.get_dofn_specs(SessionDoFn(SessionConfig())) == expected
    assert len(local_runner._SPECS) == 1


def test_wrapped_callables_are_told_apart_by_their_code(cached: object) -> None:
    plain = beam.Map(lambda x: x).dofn
    with_key = beam.Map(lambda kv, key=beam.DoFn.KeyParam: kv).dofn
    assert userstate.get_dofn_specs(plain) == (set(), set())
    assert userstate.get_dofn_specs(with_key) == (set(), set())
    assert len(local_runner._SPECS) == 2 and not userstate.is_stateful_dofn(plain)


def test_a_stateful_pipeline_still_keeps_state_on_the_local_runner(cached: object) -> None:
    events = TestStream().add_elements([("a", "x"), ("b", "y"), ("a", "z")]).advance_watermark_to_infinity()
    options = beam.options.pipeline_options.PipelineOptions(streaming=True)
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
        out = p | events | beam.ParDo(Counting())
        assert_that(out, equal_to(["a:1", "b:1", "a:2"]))


class Lifecycle(beam.DoFn):
    """Records which instance processed each element (the runner runs in this process)."""

    SEEN: list[int] = []  # noqa: RUF012 - the test's record

    def setup(self) -> None:
        self.ready = True

    def teardown(self) -> None:
        self.ready = False

    def process(self, x: int) -> object:
        assert self.ready, "process before setup"
        Lifecycle.SEEN.append(id(self))
        yield (x, id(self))


def test_dofns_are_reused_across_bundles_with_their_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.transforms import core

    monkeypatch.setattr(transform_evaluator._ParDoEvaluator, "__init__", transform_evaluator._ParDoEvaluator.__init__)
    monkeypatch.setattr(core, "get_function_args_defaults", core.get_function_args_defaults)
    monkeypatch.setattr(transform_evaluator._ParDoEvaluator, "_supportflow_reuse", False, raising=False)
    original = core.get_function_args_defaults
    assert local_runner.use_reused_dofns()
    fn = Lifecycle()
    # Signatures: the same answers as Beam's, for methods and plain functions alike.
    assert core.get_function_args_defaults(fn.process) == original(fn.process) == (["x"], [])
    assert core.get_function_args_defaults(Counting().process) == original(Counting().process)
    events = TestStream().add_elements([1, 2]).add_elements([3]).advance_watermark_to_infinity()
    options = beam.options.pipeline_options.PipelineOptions(streaming=True)
    Lifecycle.SEEN.clear()
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
        out = p | events | beam.ParDo(fn) | beam.Map(lambda pair: pair[0])
        assert_that(out, equal_to([1, 2, 3]))
    # Every element, both bundles, one DoFn instance (Beam's pickle check hands each bundle a copy).
    assert len(Lifecycle.SEEN) == 3 and len(set(Lifecycle.SEEN)) == 1, Lifecycle.SEEN


def test_a_missing_hook_fails_at_start_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(transform_evaluator._PubSubReadEvaluator, "_get_subscriber_client")
    with pytest.raises(local_runner.UnsupportedBeamVersion, match=r"_PubSubReadEvaluator\._get_subscriber_client"):
        local_runner.apply_local_runner_patches("in", "mem", environ={})
    assert local_runner.applied_patches() == []  # nothing half-applied
    # The explicit way out: Beam's runner as it is.
    assert local_runner.apply_local_runner_patches("in", "mem", environ={local_runner.PATCHES_ENV: "off"}) == []


def test_patches_are_applied_in_one_place_and_undone_completely() -> None:
    from apache_beam.io.gcp.pubsub import _PubSubWriteDoFn
    from apache_beam.runners.direct import watermark_manager
    from apache_beam.runners.direct.evaluation_context import DirectUnmergedState, EvaluationContext
    from apache_beam.transforms import core

    evaluator = transform_evaluator._PubSubReadEvaluator
    before = (
        _PubSubWriteDoFn._flush,
        evaluator.__dict__["_get_subscriber_client"],
        transform_evaluator._ParDoEvaluator.__init__,
        transform_evaluator._ParDoEvaluator.start_bundle,
        userstate.get_dofn_specs,
        transform_evaluator.get_dofn_specs,
        core.get_function_args_defaults,
        watermark_manager._TransformWatermarks.extract_transform_timers,
        DirectUnmergedState.__dict__.get("copy"),
        EvaluationContext.handle_result,
    )
    assert local_runner.applied_patches() == [], "a patch leaked from another test"
    names = local_runner.apply_local_runner_patches("in", "mem", environ={})
    try:
        assert names == [
            "prompt-pubsub-pulls",
            "cached-dofn-specs",
            "reused-dofns",
            "setup-once",
            "lean-timer-scan",
            "shallow-state-copy",
            "skip-empty-bundles",
            "one-publish-per-bundle",
        ]
        acks = local_runner.ledger()
        assert userstate.get_dofn_specs is not before[2] and acks is not None and acks.inbound == "in"
    finally:
        assert local_runner.undo_local_runner_patches() == names
    after = (
        _PubSubWriteDoFn._flush,
        evaluator.__dict__["_get_subscriber_client"],
        transform_evaluator._ParDoEvaluator.__init__,
        transform_evaluator._ParDoEvaluator.start_bundle,
        userstate.get_dofn_specs,
        transform_evaluator.get_dofn_specs,
        core.get_function_args_defaults,
        watermark_manager._TransformWatermarks.extract_transform_timers,
        DirectUnmergedState.__dict__.get("copy"),
        EvaluationContext.handle_result,
    )
    assert after == before and not hasattr(evaluator, "_supportflow_prompt_pull")
    assert local_runner.ledger() is None and local_runner.publisher() is None and local_runner.applied_patches() == []


def test_building_the_pipeline_patches_nothing() -> None:
    """Only ``python -m pipeline.local_runner`` patches: building a graph in-process (a Dataflow launch, the
    Flex Template launcher, deploy/transforms.py) leaves Beam as it is."""
    from pipeline.main import build_pipeline

    before = (userstate.get_dofn_specs, transform_evaluator._ParDoEvaluator.__init__)
    build_pipeline(["--runner=BundleBasedDirectRunner", "--model_backend=instant"], environ={})
    assert local_runner.applied_patches() == [] and local_runner.ledger() is None
    assert (userstate.get_dofn_specs, transform_evaluator._ParDoEvaluator.__init__) == before


def test_the_local_stack_runs_the_patched_entry_point() -> None:
    from stack.service import pipeline_command

    assert pipeline_command("http://127.0.0.1:1", "instant")[1:3] == ["-m", "pipeline.local_runner"]


# --- Canaries: Beam still behaves the way each patch works around -------------------------------------------------


def test_beam_still_pulls_for_30_s_and_acks_at_once() -> None:
    """prompt-pubsub-pulls (apache/beam#25442, and Beam's "AutoAck"): when this fails, Beam's reader changed;
    re-check pipeline/local_runner.py's Pub/Sub patch and pipeline/local_acks.py against it."""
    source = inspect.getsource(transform_evaluator._PubSubReadEvaluator._read_from_pubsub)
    assert "max_messages=10, timeout=30" in source
    pull, ack = source.index(".pull("), source.index(".acknowledge(")
    assert pull < ack, "Beam no longer acks right after its pull"


def test_beam_still_publishes_each_message_of_a_bundle_on_its_own() -> None:
    """one-publish-per-bundle: Beam's Pub/Sub writer hands each buffered message to its client (batched per
    ordering key) and waits for every future."""
    from apache_beam.io.gcp.pubsub import _PubSubWriteDoFn

    source = inspect.getsource(_PubSubWriteDoFn._flush)
    assert "for elem in self._buffer:" in source and "self._pub_client.publish(" in source
    assert "future.result(" in source


def test_a_bundle_of_messages_is_published_in_one_request_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.io.gcp.pubsub import PubsubMessage, _PubSubWriteDoFn
    from google.pubsub_v1.services.publisher.client import PublisherClient as GapicPublisher

    calls: list[dict] = []
    monkeypatch.setattr(GapicPublisher, "publish", lambda client, **kw: calls.append({"client": client, **kw}))
    monkeypatch.setattr(_PubSubWriteDoFn, "_flush", _PubSubWriteDoFn._flush)
    monkeypatch.setattr(_PubSubWriteDoFn, "_supportflow_one_publish", False, raising=False)
    assert local_runner.use_one_publish_per_bundle()
    writer = _PubSubWriteDoFn.__new__(_PubSubWriteDoFn)
    writer.with_attributes, writer._topic, writer._pub_client = True, "projects/p/topics/replies", object()
    sent = [("s1", b"a", {"k": "1"}), ("s2", b"b", {}), ("s1", b"c", {"k": "3"})]
    writer._buffer = [
        PubsubMessage(data, attrs, ordering_key=key)._to_proto_str(for_publish=True) for key, data, attrs in sent
    ]
    writer._flush()
    writer._flush()  # nothing buffered: no request
    sent_by = local_runner.publisher()
    assert sent_by is not None
    sent_by.wait(5)
    assert (
        len(calls) == 1
        and calls[0]["client"] is writer._pub_client
        and calls[0]["topic"] == "projects/p/topics/replies"
    )
    got = [(m.ordering_key, m.data, dict(m.attributes)) for m in calls[0]["messages"]]
    assert got == sent and writer._buffer == []


def test_output_goes_off_the_callers_thread_in_rounds_rows_first_and_a_failure_fails_the_next_hand_over() -> None:
    import threading
    import time

    from pipeline.local_output import BackgroundOutput

    sent: list[tuple[str, list, str]] = []
    gate = threading.Event()

    def sender(key: str) -> Callable[[list], None]:
        def send(items: list) -> None:
            gate.wait(5)
            if "bad" in items:
                raise RuntimeError(f"{key} refused a request")
            sent.append((key, items, threading.current_thread().name))

        return send

    output = BackgroundOutput(max_pending=100)
    t0 = time.monotonic()
    output.add_messages("replies", sender("replies"), [0])  # the first round: only this
    time.sleep(0.2)
    output.add_messages("replies", sender("replies"), [1, 2])
    output.add_messages("handoffs", sender("handoffs"), ["h"])
    output.add_rows("turns", sender("turns"), ["row 3"])  # handed over after messages 1 and 2, sent before them
    output.add_messages("replies", sender("replies"), [3])
    assert time.monotonic() - t0 < 1 and sent == [], "a hand-over waited for the output"
    gate.set()
    output.wait(5)
    assert [(key, items) for key, items, _ in sent] == [
        ("replies", [0]),
        ("turns", ["row 3"]),
        ("replies", [1, 2, 3]),  # one round: the topic's messages in one call, in order
        ("handoffs", ["h"]),
    ]
    assert all(name.startswith("supportflow-output") for _, _, name in sent)
    output.add_messages("replies", sender("replies"), ["bad"])
    with pytest.raises(RuntimeError, match="replies refused"):
        output.wait(5)  # a flush after a failed request raises it (the runner retries that bundle)
    output.add_messages("replies", sender("replies"), [4])
    output.wait(5)
    assert sent[-1][:2] == ("replies", [4])
    output.close()


def test_a_hand_over_waits_when_too_many_items_are_unsent() -> None:
    import threading

    from pipeline.local_output import BackgroundOutput

    gate = threading.Event()
    output = BackgroundOutput(max_pending=2)
    output.add_messages("t", lambda items: gate.wait(5), [1, 2])
    done = threading.Event()
    third = threading.Thread(target=lambda: (output.add_messages("t", lambda items: None, [3]), done.set()))
    third.start()
    assert not done.wait(0.3), "a third message went in while two were unsent"
    gate.set()
    assert done.wait(5)
    third.join()
    output.close()


def test_beam_still_computes_dofn_specs_at_every_bundle() -> None:
    """cached-dofn-specs: Beam's get_dofn_specs keeps no cache, and a bundle's ParDo evaluator calls it."""
    assert not hasattr(userstate.get_dofn_specs, "cache_info")
    assert "get_dofn_specs(dofn)" in inspect.getsource(transform_evaluator._ParDoEvaluator.start_bundle)


def test_beam_still_pickles_each_dofn_at_every_bundle() -> None:
    """reused-dofns: the ParDo evaluator round-trips its DoFn through pickle per bundle unless told not to."""
    default = inspect.signature(transform_evaluator._ParDoEvaluator.__init__).parameters["perform_dofn_pickle_test"]
    assert default.default is True
    assert "pickler.roundtrip(transform.dofn)" in inspect.getsource(transform_evaluator._ParDoEvaluator.start_bundle)


def _watermarks_with_timers(now_s: float, states: dict | None = None) -> object:
    """A stateful transform's watermarks over four keys: timers due, not yet due, event-time ones, none."""
    from apache_beam.runners.direct import watermark_manager
    from apache_beam.runners.direct.evaluation_context import DirectUnmergedState
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    class Clock:  # as Beam's RealClock and TestClock: seconds, a float
        def __init__(self) -> None:
            self.now = now_s

        def time(self) -> float:
            return self.now

    states = {} if states is None else states
    for key, timers in {
        b"a": [("user/turn", TimeDomain.REAL_TIME, now_s - 1), ("user/idle", TimeDomain.REAL_TIME, now_s + 600)],
        b"b": [("user/freshness", TimeDomain.REAL_TIME, now_s)],  # due at this very microsecond
        b"c": [("user/ev", TimeDomain.WATERMARK, 5.0), ("user/late", TimeDomain.WATERMARK, 50.0)],
        b"d": [],
    }.items():
        state = DirectUnmergedState()
        for name, domain, at in timers:
            state.set_timer(GlobalWindow(), name, domain, Timestamp.of(at))
        states[key] = state
    tw = watermark_manager._TransformWatermarks(Clock(), states, "Sessions")
    tw._input_watermark = Timestamp.of(10.0)
    return tw


def _firings(result: tuple) -> tuple:
    fired, realtime = result
    return sorted((f.encoded_key, f.name, f.time_domain, f.timestamp.micros) for f in fired), realtime


def test_the_lean_timer_scan_finds_what_beams_scan_finds() -> None:
    from apache_beam.runners.direct import watermark_manager

    beams = watermark_manager._TransformWatermarks.extract_transform_timers
    want = _firings(beams(_watermarks_with_timers(1_000_000.0)))
    assert [k for k, *_ in want[0]] == [b"a", b"b", b"c"] and want[1] is True
    assert local_runner.use_lean_timer_scan()
    try:
        tw = _watermarks_with_timers(1_000_000.0)
        assert _firings(tw.extract_transform_timers()) == want
        assert len(tw._fired_timers) == 3  # remembered as Beam does, for its watermark hold
    finally:
        local_runner.undo_local_runner_patches()
    assert watermark_manager._TransformWatermarks.extract_transform_timers is beams


def test_the_shallow_state_copy_is_an_independent_copy() -> None:
    from apache_beam.runners.direct.evaluation_context import DirectUnmergedState

    assert local_runner.use_shallow_state_copy()
    try:
        _check_the_copy(DirectUnmergedState)
    finally:
        local_runner.undo_local_runner_patches()
    assert "copy" not in DirectUnmergedState.__dict__


def _check_the_copy(DirectUnmergedState: type) -> None:  # noqa: N803
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.transforms.trigger import _ListStateTag
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    state, window, tag = DirectUnmergedState(), GlobalWindow(), _ListStateTag("user/pending")
    state.set_timer(window, "user/turn", TimeDomain.REAL_TIME, Timestamp.of(5))
    state.add_state(window, tag, b"m1")
    clone = state.copy()
    assert isinstance(clone, DirectUnmergedState)
    assert clone.timers == state.timers and clone.get_state(window, tag) == [b"m1"]
    clone.clear_timer(window, "user/turn", TimeDomain.REAL_TIME)
    clone.set_timer(window, "user/idle", TimeDomain.REAL_TIME, Timestamp.of(9))
    clone.add_state(window, tag, b"m2")
    assert list(state.timers[window]) == [("user/turn", TimeDomain.REAL_TIME, "")]  # the original is untouched
    assert state.get_state(window, tag) == [b"m1"] and clone.copy().get_state(window, tag) == [b"m1", b"m2"]


def test_beam_still_reads_the_clock_for_every_key_in_the_timer_scan() -> None:
    """lean-timer-scan: Beam's scan asks each key's state for its due timers with a fresh clock reading."""
    from apache_beam.runners.direct import watermark_manager

    source = inspect.getsource(watermark_manager._TransformWatermarks.extract_transform_timers)
    assert "for encoded_key, state in self._keyed_states.items():" in source
    assert "processing_time=self._clock.time()" in source


def test_beam_still_deep_copies_timers_per_key() -> None:
    """shallow-state-copy: the runner's per-bundle copy of a key's state deep-copies its timer table."""
    from apache_beam.runners.direct.evaluation_context import DirectUnmergedState
    from apache_beam.transforms.trigger import InMemoryUnmergedState

    assert DirectUnmergedState.copy is InMemoryUnmergedState.copy
    assert "copy.deepcopy(self.timers)" in inspect.getsource(InMemoryUnmergedState.copy)


def test_session_timers_fire_as_before_under_the_lean_scan_and_the_shallow_copy() -> None:
    """The session stage on the runner with both patches in: a burst released by its timer, a reply, the next
    turn, and a lost reply timed out by the freshness timer (tests/test_session.py's scripts)."""
    from tests.test_session import Script, msg, reply, run, turn_summary

    assert local_runner.use_lean_timer_scan() and local_runner.use_shallow_state_copy()
    try:
        s = Script().at(0, msg("m1", "hi", 0)).at(0.5, msg("m2", "my order", 0.5)).at(3)
        s.at(3, reply(0, "hello")).at(4, msg("m3", "thanks", 4)).at(8)
        s.at(9, msg("m4", "still there?", 9)).at(40).at(75).at(80)  # turn 1's reply is lost: timed out at 65.5
        turns = (turn_summary, [("s1", 0, ("m1", "m2")), ("s1", 1, ("m3",)), ("s1", 2, ("m4",))])
        run(s, turns=turns)
    finally:
        local_runner.undo_local_runner_patches()


class Counted(beam.DoFn):
    """Counts its setups and teardowns (class-level: the runner may hold the instance)."""

    CALLS: list[str] = []  # noqa: RUF012 - the test's record

    def setup(self) -> None:
        Counted.CALLS.append("setup")

    def teardown(self) -> None:
        Counted.CALLS.append("teardown")

    def process(self, x: int) -> object:
        yield x


def test_a_reused_dofn_is_set_up_once_and_torn_down_when_the_patches_come_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.transforms import core

    monkeypatch.setattr(transform_evaluator._ParDoEvaluator, "__init__", transform_evaluator._ParDoEvaluator.__init__)
    monkeypatch.setattr(core, "get_function_args_defaults", core.get_function_args_defaults)
    start = transform_evaluator._ParDoEvaluator.start_bundle
    assert local_runner.use_reused_dofns() and local_runner.use_setup_once()
    try:
        fn = Counted()
        Counted.CALLS.clear()
        events = TestStream().add_elements([1, 2]).add_elements([3]).add_elements([4]).advance_watermark_to_infinity()
        options = beam.options.pipeline_options.PipelineOptions(streaming=True)
        with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
            assert_that(p | events | beam.ParDo(fn), equal_to([1, 2, 3, 4]))
        assert Counted.CALLS == ["setup"]  # three bundles or more, one setup, no teardown yet
    finally:
        local_runner.undo_local_runner_patches()
    assert Counted.CALLS == ["setup", "teardown"]
    assert transform_evaluator._ParDoEvaluator.start_bundle is start and "setup" not in vars(fn)


def test_beam_still_sets_up_and_tears_down_each_dofn_per_bundle() -> None:
    """setup-once: the ParDo evaluator sets its DoFn up when a bundle starts and tears it down when it ends."""
    assert "self.runner.setup()" in inspect.getsource(transform_evaluator._ParDoEvaluator.start_bundle)
    assert "self.runner.teardown()" in inspect.getsource(transform_evaluator._ParDoEvaluator.finish_bundle)


def test_the_tracked_scan_finds_what_beams_scan_finds_as_keys_are_written_and_time_passes() -> None:
    """With the keyed states that note their writes (what the patched runner makes), a scan looks at the keys
    written since the last one and those due by now; step by step it reports what Beam's full scan does."""
    from apache_beam.runners.direct import watermark_manager
    from apache_beam.runners.direct.evaluation_context import DirectUnmergedState
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    beams = watermark_manager._TransformWatermarks.extract_transform_timers
    t0 = 1_000_000.0
    plain = _watermarks_with_timers(t0)
    assert local_runner.use_lean_timer_scan()
    try:
        tracked = _watermarks_with_timers(t0, local_runner._TrackedStates())
        steps = []

        def both_agree() -> None:
            want, got = _firings(beams(plain)), _firings(tracked.extract_transform_timers())
            steps.append(got)
            assert got == want

        both_agree()
        both_agree()  # a due timer is reported again until its firing clears it
        for tw in (plain, tracked):  # a bundle commits: a's due timer cleared, e opens with one due
            a = DirectUnmergedState()
            a.set_timer(GlobalWindow(), "user/idle", TimeDomain.REAL_TIME, Timestamp.of(t0 + 600))
            tw._keyed_states[b"a"] = a
            e = DirectUnmergedState()
            e.set_timer(GlobalWindow(), "user/turn", TimeDomain.REAL_TIME, Timestamp.of(t0 - 0.5))
            tw._keyed_states[b"e"] = e
            tw._keyed_states.pop(b"b")
            tw._input_watermark = Timestamp.of(60.0)  # c's late event-time timer is due now
        both_agree()
        plain._clock.now = tracked._clock.now = t0 + 601  # a's idle timer is due
        both_agree()
        assert [k for k, *_ in steps[-1][0]] == [b"a", b"c", b"c", b"e"]
        for tw in (plain, tracked):  # everything cleared: no real-time timer left
            for key in list(tw._keyed_states):
                tw._keyed_states[key] = DirectUnmergedState()
        both_agree()
        assert steps[-1] == ([], False)
    finally:
        local_runner.undo_local_runner_patches()


class SplitOdd(beam.DoFn):
    """Evens on the main output, odds on "odd": the test stream sends evens only, so every "odd" bundle is empty."""

    def process(self, x: int) -> object:
        yield x if x % 2 == 0 else beam.pvalue.TaggedOutput("odd", x)


class CountBundles(beam.DoFn):
    BUNDLES: list[str] = []  # noqa: RUF012 - the test's record, one entry per bundle started

    def __init__(self, name: str) -> None:
        self.name = name

    def start_bundle(self) -> None:
        CountBundles.BUNDLES.append(self.name)

    def process(self, x: int) -> object:
        yield x


def _bundles_per_consumer() -> dict[str, int]:
    """Run evens through ``SplitOdd`` on the local runner; bundles each consumer started, outputs checked."""
    CountBundles.BUNDLES = []
    events = TestStream()
    for i in range(4):  # four bundles of input
        events = events.add_elements([2 * i]).advance_processing_time(1)
    events = events.advance_watermark_to_infinity()
    options = beam.options.pipeline_options.PipelineOptions(streaming=True)
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
        split = p | events | beam.ParDo(SplitOdd()).with_outputs("odd", main="even")
        evens = split.even | "Evens" >> beam.ParDo(CountBundles("even"))
        odds = split.odd | "Odds" >> beam.ParDo(CountBundles("odd"))
        assert_that(evens, equal_to([0, 2, 4, 6]), label="evens")
        assert_that(odds, equal_to([]), label="odds")
    return {name: CountBundles.BUNDLES.count(name) for name in ("even", "odd")}


def test_beam_still_schedules_consumers_for_empty_bundles() -> None:
    """skip-empty-bundles: Beam commits a ParDo's empty output bundles and runs their consumers for them."""
    counts = _bundles_per_consumer()
    assert counts["odd"] >= 4, counts  # one empty "odd" bundle per input bundle, each run by its consumer


def test_empty_bundles_are_dropped_and_the_pipeline_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.runners.direct.evaluation_context import EvaluationContext

    monkeypatch.setattr(EvaluationContext, "handle_result", EvaluationContext.handle_result)
    monkeypatch.setattr(EvaluationContext, "_supportflow_skip_empty", False, raising=False)
    assert local_runner.use_skipped_empty_bundles()
    counts = _bundles_per_consumer()  # same outputs (asserted inside), and the run still ends at +infinity
    assert counts["odd"] == 0 and counts["even"] >= 1, counts
