"""The local runner's DoFn spec cache (pipeline/local_runner.py): same answers as Beam, computed once."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import StrUtf8Coder
from apache_beam.runners.direct import transform_evaluator
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipeline import local_runner
from pipeline.session import SessionConfig, SessionDoFn


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
    """Counts its own setups: the local runner now reuses one instance, with setup/teardown per bundle."""

    def __init__(self) -> None:
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1
        self.ready = True

    def teardown(self) -> None:
        self.ready = False

    def process(self, x: int) -> object:
        assert self.ready, "process before setup"
        yield (x, id(self))


def test_dofns_are_reused_across_bundles_with_their_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.runners import common

    monkeypatch.setattr(transform_evaluator._ParDoEvaluator, "__init__", transform_evaluator._ParDoEvaluator.__init__)
    monkeypatch.setattr(common, "DoFnSignature", common.DoFnSignature)
    monkeypatch.delattr(transform_evaluator._ParDoEvaluator, "_supportflow_reuse", raising=False)
    assert local_runner.use_reused_dofns()
    fn = Lifecycle()
    assert common.DoFnSignature(fn) is common.DoFnSignature(fn)  # built once per instance
    events = TestStream().add_elements([1, 2]).add_elements([3]).advance_watermark_to_infinity()
    options = beam.options.pipeline_options.PipelineOptions(streaming=True)
    with beam.Pipeline(runner="BundleBasedDirectRunner", options=options) as p:
        out = p | events | beam.ParDo(fn) | beam.Map(lambda pair: pair[0])
        assert_that(out, equal_to([1, 2, 3]))
    assert fn.setups >= 2, "the pipeline's own instance ran its bundles (setup per bundle)"
