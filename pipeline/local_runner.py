"""Beam's local streaming runner, patched for supportflow: every patch, in one place, for local runs only.

``python -m pipeline.local_runner [options]`` is how the local stack (``stack/service.py``), the benchmarks and
the end-to-end tests run the service: ``pipeline.main`` with these patches applied between building the graph and
running it. ``pipeline.main`` itself (a Dataflow launch, the Flex Template launcher, any in-process caller of
``build_pipeline``) never applies them. ``apply_local_runner_patches`` applies them, ``undo_local_runner_patches``
puts Beam back as it was, ``applied_patches()`` names what is in.

Each patch works around one behaviour of the ``BundleBasedDirectRunner`` and names a canary in
``tests/test_local_runner.py`` that fails when Beam changes that behaviour: then re-check the patch, and drop it
if Beam fixed what it works around.

- ``prompt-pubsub-pulls``: ``_PubSubReadEvaluator._read_from_pubsub`` pulls with ``timeout=30``, 10 messages,
  on the runner's single executor thread (apache/beam#25442): with two subscriptions one idle pull stalled the
  whole pipeline, session timers included (turns came back after 30-60 s). It also acks every pull at once,
  before any stage has seen it (Beam's own "AutoAck" comment there; no Python issue is filed, apache/beam#34000
  asks the same of Java's PubsubIO): a kill lost what was pulled but not answered. The patched client
  (``pipeline.local_acks.PromptPullClient``) pulls at once and holds inbound acks until each message's outcome is
  read back. Canary: ``test_beam_still_pulls_for_30_s_and_acks_at_once``.
- ``cached-dofn-specs``: the runner recomputes each DoFn's state and timer specs (``get_dofn_specs``, an
  ``inspect.signature`` of every method) when it schedules a bundle and when it starts one, on a fresh copy
  (~64% of the pipeline's CPU under load; no upstream issue found). Canary:
  ``test_beam_still_computes_dofn_specs_at_every_bundle``.
- ``reused-dofns``: ``_ParDoEvaluator`` round-trips each DoFn through pickle at every bundle and re-reads its
  methods' signatures (~40% of the CPU once the specs were cached; the TODO "Consider storing the serialized
  form" dates from apache/beam#1346). Canary: ``test_beam_still_pickles_each_dofn_at_every_bundle``.
- ``setup-once``: the runner calls each DoFn's ``setup`` at the start of every bundle and ``teardown`` at its end.
  Beam's Pub/Sub writer has no ``teardown``, so every bundle of replies started a publisher client whose
  commit thread was never stopped; the owner check and the enrichment built a Firestore client per bundle and
  lost their caches with it. With the DoFns reused (``reused-dofns``), the patch runs ``setup`` once per DoFn
  and its ``teardown`` when the patches are undone (or the process ends), as Dataflow does between the two.
  Canary: ``test_beam_still_sets_up_and_tears_down_each_dofn_per_bundle``.
- ``lean-timer-scan``: after every update the runner's monitor scans every key's timers for due ones
  (``_TransformWatermarks.extract_transform_timers``), reading the clock once per key and comparing ``Timestamp``
  objects through their Python operators: a third of the pipeline's CPU at 1,000 sessions. The patched scan reads
  the clock once, looks only at the keys written since the last scan or due by now (each transform's keyed
  states note their writes), and compares integers; it finds the same timers. Canary:
  ``test_beam_still_reads_the_clock_for_every_key_in_the_timer_scan``.
- ``shallow-state-copy``: the first touch of a key in a bundle copies its state, and the copy deep-copies every
  timer's ``Timestamp`` (``InMemoryUnmergedState.copy``). Timestamps and windows are immutable, so the patched
  copy copies the dicts that hold them and nothing else. Canary: ``test_beam_still_deep_copies_timers_per_key``.
- ``skip-empty-bundles``: a ParDo's evaluator opens an output bundle for every output tag at the start of each
  bundle (``_ParDoEvaluator.start_bundle``), and the runner commits and schedules each consumer for each of them,
  empty or not. Most are empty (the dead-letter outputs, the hand-offs, the agent's failure branches), and each
  cost a task on the runner's one thread: at 1,000 sessions, about 1,200 empty bundles in 11 s through the
  dead-letter branch alone, and the agent's flatten of four branches quadrupled the bundles of every stage
  after it. The patched commit drops an output bundle with no element (one feeding a side input is kept);
  what has elements is committed and scheduled as before. Canary:
  ``test_beam_still_schedules_consumers_for_empty_bundles``.
- ``one-publish-per-bundle``: ``WriteToPubSub`` hands each message to its client, which batches per ordering
  key (one request per session's reply, each after 10 ms), and waits for every future on the runner's one
  thread. The patched flush sends a bundle's messages in one request, in order, from a thread of its own
  (``pipeline.local_output``, with the eval rows' inserts, in rounds), so the runner's thread goes on meanwhile. Canary:
  ``test_beam_still_publishes_each_message_of_a_bundle_on_its_own``.

A patch checks that each hook it replaces is still there and refuses to start otherwise
(``UnsupportedBeamVersion`` names the hook); ``SUPPORTFLOW_LOCAL_PATCHES=off`` runs Beam's runner unpatched.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import types
from typing import TYPE_CHECKING, Any

import apache_beam as beam

from pipeline import local_output
from pipeline.local_acks import AckLedger, PromptPullClient
from pipeline.local_output import BackgroundOutput
from pipeline.options import DEAD_LETTER_SETTLE_SUBSCRIPTION

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_SIGNATURES = 10_000  # function signatures kept (a pipeline's DoFns have a few hundred methods)
PATCHES_ENV = "SUPPORTFLOW_LOCAL_PATCHES"  # "off": run Beam's local runner unpatched (stalls, losses at a kill)


class UnsupportedBeamVersion(RuntimeError):
    """A hook a patch replaces is missing from the installed Beam: refuse to start rather than run unpatched."""


def _missing(what: str, patch: str) -> UnsupportedBeamVersion:
    return UnsupportedBeamVersion(
        f"apache-beam {beam.__version__} has no {what}, which the local runner patch {patch!r} replaces "
        f"(pipeline/local_runner.py): re-check the patch against this Beam and its canary test in "
        f"tests/test_local_runner.py; {PATCHES_ENV}=off runs the local runner unpatched (idle pulls stall it "
        "30 s, a kill loses every message in flight)."
    )


def _hook(owner: Any, attribute: str, patch: str) -> Any:
    """``owner.attribute`` as Beam has it, or ``UnsupportedBeamVersion`` naming what is missing."""
    if not hasattr(owner, attribute):
        raise _missing(f"{getattr(owner, '__name__', type(owner).__name__)}.{attribute}", patch)
    return getattr(owner, attribute)


# ------------------------------------------------------------------------------------------------
# The one place patches go in and come out
# ------------------------------------------------------------------------------------------------

_MISSING = object()
_APPLIED: list[tuple[str, Any, str, Any]] = []  # (patch, owner, attribute, original), in order applied
_LEDGER: list[AckLedger] = []  # the ledger of the applied Pub/Sub patch, if any


def _patch(name: str, owner: Any, attribute: str, value: Any) -> None:
    """Set ``owner.attribute``, remembering the original for ``undo_local_runner_patches``."""
    _APPLIED.append((name, owner, attribute, owner.__dict__.get(attribute, _MISSING)))
    setattr(owner, attribute, value)


def applied_patches() -> list[str]:
    return list(dict.fromkeys(name for name, *_ in _APPLIED))


def ledger() -> AckLedger | None:
    """The held acks of the applied Pub/Sub patch (None when it is not in)."""
    return _LEDGER[-1] if _LEDGER else None


def publisher() -> BackgroundOutput | None:
    """The output thread of the applied writer patch (None when it is not in)."""
    return local_output.active()


def apply_local_runner_patches(
    inbound_subscription: str | None = None,
    memory_subscription: str | None = None,
    *,
    dead_letter_subscription: str | None = None,
    dead_letter_topic: str | None = None,
    environ: dict[str, str] | None = None,
) -> list[str]:
    """Every local-runner patch, for a local run only; returns their names. Raises ``UnsupportedBeamVersion``.

    Subscriptions as in ``use_prompt_pubsub_pulls``. ``SUPPORTFLOW_LOCAL_PATCHES=off`` applies none (and says so).
    """
    environ = os.environ if environ is None else environ
    if environ.get(PATCHES_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        log.warning("%s=off: Beam's local runner runs unpatched (idle pulls stall it, a kill loses messages)",
                    PATCHES_ENV)  # fmt: skip
        return []
    try:
        use_prompt_pubsub_pulls(
            inbound_subscription,
            memory_subscription,
            dead_letter_subscription=dead_letter_subscription,
            dead_letter_topic=dead_letter_topic,
        )
        use_cached_dofn_specs()
        use_reused_dofns()
        use_setup_once()
        use_lean_timer_scan()
        use_shallow_state_copy()
        use_skipped_empty_bundles()
        use_one_publish_per_bundle()
    except UnsupportedBeamVersion:
        undo_local_runner_patches()  # nothing half-applied
        raise
    names = applied_patches()
    log.info("local runner patches applied (Beam %s): %s", beam.__version__, ", ".join(names))
    return names


def undo_local_runner_patches() -> list[str]:
    """Put every patched attribute back as Beam had it, newest first; returns the names undone."""
    names = applied_patches()
    while _APPLIED:
        _, owner, attribute, original = _APPLIED.pop()
        if original is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(owner, attribute)
        else:
            setattr(owner, attribute, original)
    local_output.close()  # what is queued is sent first
    while _LEDGER:
        _LEDGER.pop().close()
    tear_down_dofns()
    return names


def use_prompt_pubsub_pulls(
    inbound_subscription: str | None = None,
    memory_subscription: str | None = None,
    *,
    dead_letter_subscription: str | None = None,
    dead_letter_topic: str | None = None,
) -> bool:
    """Patch the local runner's Pub/Sub reader (``pipeline.local_acks``).

    With both subscription ids, acks of inbound messages are held until their reply is read back from
    ``memory_subscription``, or their dead letter from ``dead_letter_subscription`` (full path, created on
    ``dead_letter_topic`` if missing); without, the runner acks on pull as Beam does.
    """
    from apache_beam.runners.direct import transform_evaluator as te

    evaluator = _hook(te, "_PubSubReadEvaluator", "prompt-pubsub-pulls")
    original = _hook(evaluator, "_get_subscriber_client", "prompt-pubsub-pulls").__func__
    if getattr(evaluator, "_supportflow_prompt_pull", False):
        return True
    acks = AckLedger()
    acks.configure(inbound_subscription, memory_subscription, dead_letter_subscription, dead_letter_topic)
    _LEDGER.append(acks)

    def prompt_client(cls: type, transform: Any) -> PromptPullClient:
        return PromptPullClient(original(cls, transform), acks)

    _patch("prompt-pubsub-pulls", evaluator, "_get_subscriber_client", classmethod(prompt_client))
    _patch("prompt-pubsub-pulls", evaluator, "_supportflow_prompt_pull", True)
    return True


PUBLISH_TIMEOUT_S = 60.0  # one publish request, retries included
PUBLISH_MAX_MESSAGES = 1000  # Pub/Sub's limit per request


def use_one_publish_per_bundle() -> bool:
    """Make ``WriteToPubSub`` publish a bundle's buffered messages in one Pub/Sub request.

    Beam's writer hands each message to its publisher client in ``_flush`` and waits for every future. With
    ordering keys (the replies, the hand-offs: one key per session) the client batches per key, so a bundle
    of n replies was n requests, each on a thread of its own and each started only after the client's
    10 ms batching latency, all while the runner's one thread waited. One request carries the same messages
    in the same order (Pub/Sub keeps a key's order within a request). The messages go to the process's
    ``BackgroundOutput`` (``pipeline.local_output``): sent from a thread of its own in the order handed
    over, with the other bundles' messages for the topic handed over meanwhile, so the runner's thread goes on
    with other stages' bundles; a failed request fails the next flush (the bundle is retried, as when a future
    failed). Safe because the local runner holds each inbound
    ack until the message's outcome is read back (``pipeline.local_acks``).
    """
    from apache_beam.io.gcp import pubsub as beam_pubsub

    writer = _hook(beam_pubsub, "_PubSubWriteDoFn", "one-publish-per-bundle")
    _hook(writer, "_flush", "one-publish-per-bundle")
    if getattr(writer, "_supportflow_one_publish", False):
        return True
    from google.pubsub_v1.services.publisher.client import PublisherClient as GapicPublisher
    from google.pubsub_v1.types import PubsubMessage as PubsubMessageProto

    output = local_output.install()

    def flush(self: Any) -> None:
        if not self._buffer:
            return
        messages = []
        for elem in self._buffer:
            msg = beam_pubsub.PubsubMessage._from_proto_str(elem)
            attributes = dict(msg.attributes or {}) if self.with_attributes else {}
            messages.append(
                PubsubMessageProto(data=msg.data, attributes=attributes, ordering_key=msg.ordering_key or "")
            )
        client, topic = self._pub_client, self._topic

        def send(round_messages: list[Any]) -> None:
            # The client's own GAPIC publish (its default retries): one request per 1,000 messages (Pub/Sub's
            # limit), no per-key batching.
            for start in range(0, len(round_messages), PUBLISH_MAX_MESSAGES):
                chunk = round_messages[start : start + PUBLISH_MAX_MESSAGES]
                GapicPublisher.publish(client, topic=topic, messages=chunk, timeout=PUBLISH_TIMEOUT_S)

        output.add_messages(topic, send, messages)
        self._buffer = []

    _patch("one-publish-per-bundle", writer, "_flush", flush)
    _patch("one-publish-per-bundle", writer, "_supportflow_one_publish", True)
    return True


def patch_for(settings: Settings) -> list[str]:
    """The patches a local run of ``settings`` needs; none on Dataflow."""
    if settings.on_dataflow:
        return []
    names = apply_local_runner_patches(
        settings.inbound_subscription,
        settings.reply_memory_subscription,
        dead_letter_subscription=settings.subscription_path(DEAD_LETTER_SETTLE_SUBSCRIPTION),
        dead_letter_topic=settings.topic_path(settings.dead_letter_topic),
    )
    freeze_startup_heap()
    return names


def freeze_startup_heap() -> int:
    """Move every object alive now (modules, the graph, clients) out of the garbage collector's reach; returns
    how many. Not a patch: the runner's one thread stops for every full collection, and a full collection
    scanned this startup heap each time (~450,000 objects: 100-240 ms a pause, two or three a minute at 1,000
    sessions). What the run creates later is still collected (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.local_runner``: ``pipeline.main`` on the patched local runner."""
    from pipeline import main as service

    try:
        service.main(argv, prepare=patch_for)
    except UnsupportedBeamVersion as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


# ------------------------------------------------------------------------------------------------
# DoFn specs, computed once per DoFn shape instead of per bundle
# ------------------------------------------------------------------------------------------------

_SPECS: dict[Any, tuple[set, set]] = {}
_SPECS_LOCK = threading.Lock()


def _specs_key(dofn: Any) -> Any:
    """What a DoFn's state and timer specs depend on, or None when it is not safe to say.

    The specs are read from the defaults of its methods' parameters: for a class, its methods (and
    any method bound on the instance); for a wrapped callable (``beam.Map``), that callable's code.
    """
    from apache_beam.transforms.core import DoFn

    bound = tuple(sorted(k for k, v in vars(dofn).items() if isinstance(v, types.MethodType)))
    if type(dofn)._process_argspec_fn is DoFn._process_argspec_fn:
        return (type(dofn), bound)
    code = getattr(getattr(dofn, "_fn", None), "__code__", None)
    return None if code is None else (type(dofn), bound, code)


def use_cached_dofn_specs() -> bool:
    """Make the local runner compute each DoFn's state/timer specs once, not at every bundle.

    The BundleBasedDirectRunner asks ``get_dofn_specs`` (an ``inspect.signature`` of every method of
    the DoFn) when it schedules a bundle and again when it starts one, on a fresh pickled copy each
    time: profiled under load, that was ~64% of the pipeline's CPU. The answer depends only on the
    DoFn's shape (``_specs_key``). A callable-wrapping DoFn found stateful is not cached (its specs
    are objects the runner keys state by). Local runs only, like the Pub/Sub patch.
    """
    from apache_beam.runners.direct import transform_evaluator as te
    from apache_beam.transforms import userstate

    _hook(te, "get_dofn_specs", "cached-dofn-specs")
    beams = _hook(userstate, "get_dofn_specs", "cached-dofn-specs")
    original = getattr(beams, "_supportflow_original", beams)

    def cached_get_dofn_specs(dofn: Any) -> tuple[set, set]:
        key = _specs_key(dofn)
        if key is None:
            return original(dofn)
        with _SPECS_LOCK:
            hit = _SPECS.get(key)
        if hit is not None:
            return set(hit[0]), set(hit[1])
        specs = original(dofn)
        if len(key) == 2 or not (specs[0] or specs[1]):
            with _SPECS_LOCK:
                _SPECS[key] = (set(specs[0]), set(specs[1]))
        return specs

    cached_get_dofn_specs._supportflow_original = original  # type: ignore[attr-defined]
    # userstate.is_stateful_dofn looks get_dofn_specs up in its module at call time; the runner's
    # evaluator imported the name itself.
    _patch("cached-dofn-specs", userstate, "get_dofn_specs", cached_get_dofn_specs)
    _patch("cached-dofn-specs", te, "get_dofn_specs", cached_get_dofn_specs)
    return True


def use_reused_dofns() -> bool:
    """Let the local runner reuse each ParDo's DoFn across bundles, and read method signatures once.

    Per bundle, the BundleBasedDirectRunner round-trips the DoFn through pickle (a check that it is
    serialisable) and builds a ``DoFnRunner`` whose method wrappers call ``inspect.signature`` on every
    DoFn method: together ~40% of the pipeline's CPU under load once the spec cache was in. Reusing
    the instance is what Dataflow and the portable runners do between ``setup`` and ``teardown``;
    serialisability is still checked where it matters (building a Dataflow job pickles every DoFn,
    tests/test_deploy_dataflow.py, and the FnApiRunner tests run pickled copies). The signatures of
    functions and bound methods are cached by the function object (``DoFnRunner`` is compiled, so the
    cache sits in ``core.get_function_args_defaults``, which it calls). Local runs only.
    """
    import inspect

    from apache_beam.runners.direct import transform_evaluator as te
    from apache_beam.transforms import core

    evaluator = _hook(te, "_ParDoEvaluator", "reused-dofns")
    original_args_defaults = _hook(core, "get_function_args_defaults", "reused-dofns")
    if "perform_dofn_pickle_test" not in inspect.signature(evaluator.__init__).parameters:
        raise _missing("_ParDoEvaluator(perform_dofn_pickle_test=...)", "reused-dofns")
    if getattr(evaluator, "_supportflow_reuse", False):
        return True
    original_init = evaluator.__init__

    def init_without_pickle_test(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["perform_dofn_pickle_test"] = False
        original_init(self, *args, **kwargs)

    _patch("reused-dofns", evaluator, "__init__", init_without_pickle_test)
    _patch("reused-dofns", evaluator, "_supportflow_reuse", True)
    _patch("reused-dofns", core, "get_function_args_defaults", _cached_args_defaults(original_args_defaults))
    return True


def _cached_args_defaults(original: Any) -> Any:
    """``get_function_args_defaults`` memoised for plain functions and bound methods (by the function)."""
    cache: dict[tuple[Any, bool], tuple[list[str], list[Any]]] = {}
    lock = threading.Lock()

    def cached(f: Any) -> tuple[list[str], list[Any]]:
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
            key = (f.__func__, True)
        elif isinstance(f, types.FunctionType):
            key = (f, False)
        else:
            return original(f)
        with lock:
            hit = cache.get(key)
        if hit is None:
            hit = original(f)
            with lock:
                if len(cache) > MAX_SIGNATURES:  # functions made per bundle somewhere: start over
                    cache.clear()
                cache[key] = hit
        return list(hit[0]), list(hit[1])

    cached._supportflow_original = original  # type: ignore[attr-defined]
    return cached


# ------------------------------------------------------------------------------------------------
# DoFn setup once, not per bundle
# ------------------------------------------------------------------------------------------------

_SET_UP: list[tuple[Any, Any]] = []  # (dofn, its own teardown), in the order set up
_SET_UP_LOCK = threading.Lock()


def _lifecycle_once(dofn: Any) -> None:
    """Give ``dofn`` a ``setup`` that runs its own once, and a per-bundle ``teardown`` that does nothing.

    Instance attributes: the runner's ``DoFnRunner`` looks both up on the instance at every bundle.
    """
    if "_supportflow_setup_once" in vars(dofn):
        return
    own_setup, own_teardown = dofn.setup, dofn.teardown
    done = threading.Event()

    def setup() -> None:
        with _SET_UP_LOCK:
            if done.is_set():
                return
            own_setup()
            done.set()
            _SET_UP.append((dofn, own_teardown))

    def teardown() -> None:
        """Nothing at a bundle's end: ``tear_down_dofns`` calls the DoFn's own."""

    dofn.setup, dofn.teardown, dofn._supportflow_setup_once = setup, teardown, done


def tear_down_dofns() -> None:
    """Each DoFn set up once, torn down (newest first) and given back its own methods."""
    with _SET_UP_LOCK:
        while _SET_UP:
            dofn, own_teardown = _SET_UP.pop()
            for name in ("setup", "teardown", "_supportflow_setup_once"):
                vars(dofn).pop(name, None)
            try:
                own_teardown()
            except Exception:  # noqa: BLE001 - one DoFn's teardown must not keep the others'
                log.exception("teardown of %s failed", type(dofn).__name__)


def use_setup_once() -> bool:
    """Make the local runner set each (reused) DoFn up once, and tear it down when the patches come out.

    The BundleBasedDirectRunner calls ``setup`` in ``_ParDoEvaluator.start_bundle`` and ``teardown`` in its
    ``finish_bundle``, for every bundle. Needs ``reused-dofns`` (one instance across bundles); the process's
    exit tears down what is left (``atexit``).
    """
    import atexit

    from apache_beam.runners.direct import transform_evaluator as te

    evaluator = _hook(te, "_ParDoEvaluator", "setup-once")
    original_start = _hook(evaluator, "start_bundle", "setup-once")
    if getattr(evaluator, "_supportflow_setup_once", False):
        return True

    def start_bundle(self: Any) -> None:
        if not getattr(self, "_perform_dofn_pickle_test", True):  # the DoFn is the transform's own, reused
            _lifecycle_once(self._applied_ptransform.transform.dofn)
        original_start(self)

    _patch("setup-once", evaluator, "start_bundle", start_bundle)
    _patch("setup-once", evaluator, "_supportflow_setup_once", True)
    if not _ATEXIT:
        atexit.register(tear_down_dofns)
        _ATEXIT.append(True)
    return True


_ATEXIT: list[bool] = []


# ------------------------------------------------------------------------------------------------
# The monitor's timer scan and the per-bundle state copy
# ------------------------------------------------------------------------------------------------


class _TrackedStates(dict):
    """One transform's keyed states (encoded key -> state) that note which keys were written since the last scan.

    The runner replaces a key's state object whenever a bundle commits it (``EvaluationContext.handle_result``,
    ``DirectStepContext.get_keyed_state``), and never changes a committed one in place, so a key not written
    since the last scan has the timers it had then. Every way of writing a dict marks the key.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[Any] = set()
        self.summaries: dict[Any, tuple[int | None, int | None]] = {}  # key -> earliest real-time, watermark (ns)
        self.heaps: tuple[list[tuple[int, Any]], list[tuple[int, Any]]] = ([], [])  # per domain: (ns, key), lazy

    def __setitem__(self, key: Any, value: Any) -> None:  # noqa: ANN401
        super().__setitem__(key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:  # noqa: ANN401
        super().__delitem__(key)
        self.dirty.add(key)

    def pop(self, key: Any, *default: Any) -> Any:  # noqa: ANN401
        self.dirty.add(key)
        return super().pop(key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:  # noqa: ANN401
        self.dirty.add(key)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self.dirty.add(key)
        return key, value

    def clear(self) -> None:
        self.dirty.update(self)
        super().clear()


def use_lean_timer_scan() -> bool:
    """Make the runner's scan for due timers look only at keys written since the last scan or due by now.

    Beam's ``extract_transform_timers`` calls ``state.get_timers(processing_time=self._clock.time())`` for
    every key of a stateful transform, after every update: a ``Timestamp`` built per key and two or three
    Python-level comparisons per timer (``Timestamp.__le__``), over every session held. Here each transform's
    keyed states are a ``_TrackedStates``; a scan re-reads the earliest timer of each key written since the
    last one, and looks at the timers of the keys whose earliest is due (a heap per time domain), reading the
    clock once. It returns the same firings (a due timer is reported at every scan until its firing clears it,
    as Beam does) and the same "any real-time timer set" flag. Keyed states of another kind get the full scan,
    with the same single clock reading and integer comparisons.
    """
    import heapq

    from apache_beam.runners.direct import evaluation_context as ec
    from apache_beam.runners.direct import watermark_manager as wm
    from apache_beam.runners.direct.util import TimerFiring
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.utils.timestamp import Timestamp

    watermarks = _hook(wm, "_TransformWatermarks", "lean-timer-scan")
    _hook(watermarks, "extract_transform_timers", "lean-timer-scan")
    context = _hook(ec, "EvaluationContext", "lean-timer-scan")
    original_init_states = _hook(context, "_initialize_keyed_states", "lean-timer-scan")
    if getattr(watermarks, "_supportflow_lean_scan", False):
        return True
    real_time, watermark_domain = TimeDomain.REAL_TIME, TimeDomain.WATERMARK

    def due_timers(encoded_key: Any, state: Any, now: int, watermark: int, fired: list[Any]) -> bool:
        """Appends the key's due timers to ``fired``; True if it holds a real-time timer."""
        realtime = False
        for window, timers in state.timers.items():
            for (name, domain, tag), at in timers.items():
                if domain == real_time:
                    realtime = True
                    due = at.nanos <= now
                elif domain == watermark_domain:
                    due = at.nanos <= watermark
                else:
                    log.error("TimeDomain error: No timers defined for time domain %s.", domain)
                    continue
                if due:
                    fired.append(TimerFiring(encoded_key, window, name, domain, at, dynamic_timer_tag=tag))
        return realtime

    def summary(state: Any) -> tuple[int | None, int | None]:
        earliest: list[int | None] = [None, None]
        for timers in state.timers.values():
            for (_, domain, _), at in timers.items():
                slot = 0 if domain == real_time else 1 if domain == watermark_domain else None
                if slot is not None and (earliest[slot] is None or at.nanos < earliest[slot]):
                    earliest[slot] = at.nanos
        return earliest[0], earliest[1]

    def refresh(states: _TrackedStates) -> None:
        dirty, states.dirty = states.dirty, set()
        for key in dirty:
            state = dict.get(states, key)
            now = summary(state) if state is not None else (None, None)
            if now == (None, None):
                states.summaries.pop(key, None)
                continue
            states.summaries[key] = now
            for slot, ns in enumerate(now):
                if ns is not None:
                    heapq.heappush(states.heaps[slot], (ns, key))
        if sum(map(len, states.heaps)) > 4 * len(states.summaries) + 1024:  # stale entries: rebuild
            for slot, heap in enumerate(states.heaps):
                heap[:] = [(s[slot], k) for k, s in states.summaries.items() if s[slot] is not None]
                heapq.heapify(heap)

    def due_keys(states: _TrackedStates, now: int, watermark: int) -> set[Any]:
        keys: set[Any] = set()
        for slot, limit in ((0, now), (1, watermark)):
            heap, kept = states.heaps[slot], []
            while heap and heap[0][0] <= limit:
                entry = heapq.heappop(heap)
                current = states.summaries.get(entry[1])
                if current is not None and current[slot] == entry[0]:  # else stale: the key was written since
                    keys.add(entry[1])
                    kept.append(entry)
            for entry in kept:  # still due until their firing clears them
                heapq.heappush(heap, entry)
        return keys

    def extract_transform_timers(self: Any) -> tuple[list[Any], bool]:
        with self._lock:
            fired: list[Any] = []
            now = Timestamp.of(self._clock.time()).nanos  # seconds from the runner's clocks (RealClock, TestClock)
            watermark = self._input_watermark.nanos
            states = self._keyed_states
            if isinstance(states, _TrackedStates):
                refresh(states)
                for encoded_key in due_keys(states, now, watermark):
                    due_timers(encoded_key, states[encoded_key], now, watermark, fired)
                has_realtime_timer = any(s[0] is not None for s in states.summaries.values())
            else:
                has_realtime_timer = False
                for encoded_key, state in states.items():
                    has_realtime_timer |= due_timers(encoded_key, state, now, watermark, fired)
            self._fired_timers.update(fired)
            return fired, has_realtime_timer

    def initialize_keyed_states(self: Any, root_transforms: Any, value_to_consumers: Any) -> dict[Any, Any]:
        return {t: _TrackedStates() for t in original_init_states(self, root_transforms, value_to_consumers)}

    _patch("lean-timer-scan", context, "_initialize_keyed_states", initialize_keyed_states)
    _patch("lean-timer-scan", watermarks, "extract_transform_timers", extract_transform_timers)
    _patch("lean-timer-scan", watermarks, "_supportflow_lean_scan", True)
    return True


def use_shallow_state_copy() -> bool:
    """Copy a key's timers without deep-copying their immutable ``Timestamp``s and windows.

    The runner copies a key's state at its first touch in a bundle (``DirectStepContext.get_keyed_state``), so
    a bundle's writes commit all or nothing. Beam's copy deep-copies the timer table; the copy here copies its
    two levels of dicts (the keys are windows and tuples of names, the values ``Timestamp``s: none is ever
    changed in place) and copies the rest as Beam does.
    """
    import collections
    import copy

    from apache_beam.runners.direct import evaluation_context as ec

    state_class = _hook(ec, "DirectUnmergedState", "shallow-state-copy")
    _hook(state_class, "copy", "shallow-state-copy")
    if getattr(state_class, "_supportflow_shallow_copy", False):
        return True

    def shallow_copy(self: Any) -> Any:
        cloned = state_class()
        cloned.timers = collections.defaultdict(dict, {w: dict(t) for w, t in self.timers.items()})
        cloned.global_state = copy.deepcopy(self.global_state)
        for window, tags in self.state.items():
            for tag, values in tags.items():
                cloned.state[window][tag] = copy.copy(values)
        return cloned

    _patch("shallow-state-copy", state_class, "copy", shallow_copy)
    _patch("shallow-state-copy", state_class, "_supportflow_shallow_copy", True)
    return True


def use_skipped_empty_bundles() -> bool:
    """Commit only the output bundles that hold elements (or feed a side input); drop the empty ones.

    An empty bundle carries nothing a consumer could act on: its consumer's run would see no element, and the
    watermarks only wait on pending bundles, so one never added holds nothing back.
    """
    from apache_beam.runners.direct import evaluation_context as ec

    context = _hook(ec, "EvaluationContext", "skip-empty-bundles")
    original = _hook(context, "handle_result", "skip-empty-bundles")
    if getattr(context, "_supportflow_skip_empty", False):
        return True

    def handle_result(self: Any, completed_bundle: Any, completed_timers: Any, result: Any) -> Any:
        bundles = result.uncommitted_output_bundles
        views = getattr(self, "_pcollection_to_views", None)  # None: Beam renamed it, so keep every bundle
        if bundles and views is not None:
            result.uncommitted_output_bundles = [b for b in bundles if b.has_elements() or b.pcollection in views]
        return original(self, completed_bundle, completed_timers, result)

    _patch("skip-empty-bundles", context, "handle_result", handle_result)
    _patch("skip-empty-bundles", context, "_supportflow_skip_empty", True)
    return True


if __name__ == "__main__":
    main()
