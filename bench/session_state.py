"""Benchmark: state bytes a session reads and writes per event and per turn, and sessions per worker.

Run: ``.venv/bin/python -m bench.session_state`` (prints JSON, also writes
``artifacts/bench_session_state.json``). Options: ``--layout legacy|v1|both`` (default both:
before and after from the same run), ``--sizes 1000,5000,20000``, ``--turns N`` (default: long
enough to fill the seen-id set, ~1,050 turns), ``--max-history 20``, ``--quick`` (a smoke run),
``--parts bytes,capacity``, ``--out PATH``.

Part 1 (bytes): one session through the real DoFn on ``BundleBasedDirectRunner`` (streaming,
TestStream). Each turn is 1-3 user messages of 40-200 chars, released by the DoFn's own
quiet-window timer, then an ``AgentReply`` of 300-600 chars fed back with that turn's index.
Every state spec's coder is wrapped (in this process only) by a counting coder: the direct runner
encodes each write/add with it and keeps those bytes, and decodes on each read, so the counts are
the state bytes written and read. Each DoFn call (an element or a timer) is one event. Reported:
bytes per turn and per event (by kind) over turns 51-100 (steady state at the default history)
and over the last 50 turns, after the session has sent more than ``max_seen_ids`` ids (the seen-id
set at its bound). ``legacy`` is the pre-split DoFn (bench/session_legacy_dofn.py: one pickled
cell, one timer); ``v1`` is ``pipeline.session.SessionDoFn``.

Part 2 (sessions per worker): N concurrent sessions, each 3 messages + 1 reply (one released
turn; all N stay open), through each layout's DoFn and, as the baseline, the same TestStream
through a stateless ``Map``. Each (N, variant) runs in a fresh subprocess that reports processing
time (from the executor's start), elements/s, CPU ms per element and RSS.

Read the numbers as this local runner's, on a shared machine: the load average is recorded with
each run, and CPU ms per element moves less with other load than elements/s does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.coders import Coder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct import executor, watermark_manager
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.userstate import StateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from bench.harness import random_prose
from bench.session_legacy_dofn import LegacySessionDoFn
from contract.messages import AgentReply, InboundMessage
from pipeline.session import CLOSED_TAG, DEAD_LETTER_TAG, SessionConfig, SessionDoFn, element_clock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GIB = 1024**3
_EIGHTH = 0.125  # every scripted time is a multiple of this (see _Script)
WORKER_GIB = 24
DEFAULT_SIZES = (1000, 5000, 20000)
# Bounds: no child runs longer than this, and a size beyond ALWAYS_RUN is skipped when the last one
# predicts it would overrun this or the whole run's budget (~6 min on an otherwise idle 2-core machine;
# other load on the machine stretches the ALWAYS_RUN sizes, each still bounded by CHILD_TIMEOUT_S).
ALWAYS_RUN = frozenset({1000, 5000, 20000})
CHILD_TIMEOUT_S = 420.0
MIN_CHILD_TIMEOUT_S = 120.0
TOTAL_BUDGET_S = 900.0

_VOCABULARY = (
    "order delivery refund account password invoice package tracking number charged twice card address "
    "shipping late damaged return label subscription cancel upgrade plan discount code warranty replacement "
    "please help thanks still waiting yesterday today week store app login email phone support ticket status "
    "the my a is was not and but for with on to of it this that have has been can you we I our your"
)
_WORDS = _VOCABULARY.split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    """Plausible prose of a length drawn uniformly from [lo, hi] characters."""
    out = random_prose(rng, lo, hi, _WORDS)
    return out[0].upper() + out[1:] + ("?" if rng.random() < 0.4 else ".")


def _hex_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.getrandbits(128):032x}"  # uuid-sized, like a frontend's ids


def _msg(rng: random.Random, session: str, customer: str, at: float) -> InboundMessage:
    return InboundMessage(
        session_id=session,
        customer_id=customer,
        message_id=_hex_id(rng, "m"),
        text=_text(rng, 40, 200),
        sent_at=T0 + timedelta(seconds=at),
    )


def _reply(rng: random.Random, session: str, turn_index: int, at: float) -> AgentReply:
    return AgentReply(
        session_id=session,
        turn_id=f"{session}#{turn_index}",
        turn_index=turn_index,
        answers=[],
        text=_text(rng, 300, 600),
        model="smollm2-135m",
        created_at=T0 + timedelta(seconds=at),
    )


class _Script:
    """A TestStream where events happen at processing times the script names (as in tests/test_session.py).

    Times must lie on a 1/8 s grid. TestStream's proto form needs whole milliseconds, and
    ``SessionDoFn`` under ``element_clock`` spins forever on a timer whose due time
    ``Timestamp.of`` truncates (``int(seconds * 1e6)``) to just below it: ``now < due`` stays
    true and the timer is re-set to the same instant (e.g. one message at t=0.118 s).
    Multiples of 0.125 s are exact in binary, so every due time the DoFn computes is too.
    """

    def __init__(self) -> None:
        self.stream = TestStream().advance_watermark_to(0)
        self.now_ms = 0
        self.elements = 0

    @property
    def now(self) -> float:
        return self.now_ms / 1000

    def at(self, t: float, events: list[InboundMessage | AgentReply] | None = None, chunk: int = 1000) -> _Script:
        t_ms = round(t * 1000)
        if t_ms % 125:
            raise ValueError(f"t={t} is off the 1/8 s grid (see the class docstring)")
        if t_ms < self.now_ms:
            raise ValueError(f"time goes backwards: {t} < {self.now}")
        if t_ms > self.now_ms:
            self.stream = self.stream.advance_processing_time(Duration(micros=(t_ms - self.now_ms) * 1000))
            self.now_ms = t_ms
        stamp = Timestamp(micros=t_ms * 1000)
        events = events or []
        for i in range(0, len(events), chunk):
            part = events[i : i + chunk]
            self.stream = self.stream.add_elements([TimestampedValue((e.session_id, e), stamp) for e in part])
            self.elements += len(part)
        return self

    def build(self) -> TestStream:
        # Finite watermark first: timers that wait for +infinity never fire usefully (apache/beam#18987).
        return self.stream.advance_watermark_to(self.now + 1).advance_watermark_to_infinity()


def _options() -> PipelineOptions:
    options = PipelineOptions(flags=[], runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


_TALLY: dict[str, int] = {}
_TALLY_LOCK = threading.Lock()


def _tally(element: Any, name: str) -> Any:
    """Counts outputs in this process (the direct runner's metrics are not reliable in streaming mode).

    Module-level, so Beam pickles it by reference and every copy updates this one dict.
    """
    with _TALLY_LOCK:
        _TALLY[name] = _TALLY.get(name, 0) + 1
    return element


def _kind(kv: tuple[str, Any]) -> tuple[str, str]:
    """The stateless baseline's work: look at the element, emit a small keyed record."""
    return kv[0], type(kv[1]).__name__


# ---------------------------------------------------------------- part 1: state bytes per event and per turn

LAYOUTS = ("legacy", "v1")
# Per event: one record per DoFn call (an element or a timer), filled by the counting coders below.
# Module-level, so every copy of the coders and the clock the runner makes in this process adds here.
_EVENTS: list[dict[str, Any]] = []


def _dofn_class(layout: str) -> type:
    return LegacySessionDoFn if layout == "legacy" else SessionDoFn


def _state_specs(cls: type) -> dict[str, StateSpec]:
    return {k: v for k, v in vars(cls).items() if isinstance(v, StateSpec)}


class _EventClock:
    """``element_clock`` that also opens a new ``_EVENTS`` record: the DoFn asks for "now" once per call,
    before it touches state. The record's kind comes from the caller's frame: the element's type in
    ``process``, the timer's purpose in the split DoFn's ``_timer``, the callback's name in the legacy DoFn."""

    def __call__(self, ts: Timestamp) -> float:
        frame = sys._getframe(1)
        local = frame.f_locals
        if frame.f_code.co_name == "process":
            kind = type(local.get("event")).__name__
        elif "purpose" in local:
            kind = f"timer:{local['purpose'].value}"
        else:
            kind = f"timer:{frame.f_code.co_name}"
        _EVENTS.append({"kind": kind, "read": 0, "written": 0, "reads": 0, "writes": 0})
        return float(ts)


class _CountingCoder(Coder):
    """A state spec's own coder; every encode (a write the runner keeps) and decode (a read) is counted."""

    def __init__(self, inner: Coder, name: str) -> None:
        self.inner = inner
        self.name = name

    def encode(self, value: Any) -> bytes:
        data = self.inner.encode(value)
        if _EVENTS:
            e = _EVENTS[-1]
            e["written"] += len(data)
            e["writes"] += 1
        return data

    def decode(self, encoded: bytes) -> Any:
        if _EVENTS:
            e = _EVENTS[-1]
            e["read"] += len(encoded)
            e["reads"] += 1
        return self.inner.decode(encoded)

    def is_deterministic(self) -> bool:
        return self.inner.is_deterministic()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.name == getattr(other, "name", None)

    def __hash__(self) -> int:
        return hash((type(self), self.name))


@contextmanager
def _counted_state(cls: type) -> Iterator[None]:
    """Wraps every state spec's coder of the DoFn class, in this process only, for one run.

    The direct runner encodes each ``write``/``add`` with the spec's coder and keeps those bytes, and
    decodes on each ``read``: so this counts every state byte written and read, from ``process`` and
    from every timer. (The DoFn class is untouched otherwise: Beam ties each TimerSpec to one function.)
    """
    specs = _state_specs(cls)
    originals = {name: spec.coder for name, spec in specs.items()}
    for name, spec in specs.items():
        spec.coder = _CountingCoder(spec.coder, f"{cls.__name__}.{name}")
    try:
        yield
    finally:
        for name, spec in specs.items():
            spec.coder = originals[name]


def _conversation(turns: int, seed: int) -> tuple[_Script, dict[str, int]]:
    """One session: each turn 1-3 messages 0.375-1 s apart, released by the quiet window, then a reply."""
    rng = random.Random(seed)
    session, customer = _hex_id(rng, "s"), "C0001"
    s = _Script()
    t = 0.0
    stats = {"user_messages": 0, "user_chars": 0, "reply_chars": 0}
    for turn in range(turns):
        for _ in range(rng.randint(1, 3)):
            m = _msg(rng, session, customer, t)
            s.at(t, [m])
            stats["user_messages"] += 1
            stats["user_chars"] += len(m.text)
            t += _EIGHTH * rng.randint(3, 8)  # 0.375-1 s to the next message
        t += 2.0  # past the 1.5 s quiet window (last message at t - gap): the turn timer has released it
        s.at(t)
        t += _EIGHTH * rng.randint(8, 32)  # the agent's latency, 1-4 s
        r = _reply(rng, session, turn, t)
        s.at(t, [r])
        stats["reply_chars"] += len(r.text)
        t += _EIGHTH * rng.randint(24, 160)  # the customer reads and types, 3-20 s (well under idle_timeout_s)
    s.at(t)
    return s, stats


def _window(events: list[dict[str, Any]], first_turn: int, last_turn: int) -> dict[str, Any]:
    """Bytes per turn over turns first_turn..last_turn (1-based; a turn ends with its reply event)."""
    replies = [i for i, e in enumerate(events) if e["kind"] == "AgentReply"]
    start = replies[first_turn - 2] + 1 if first_turn > 1 else 0
    part = events[start : replies[last_turn - 1] + 1]
    n = last_turn - first_turn + 1
    kinds: dict[str, dict[str, float]] = {}
    for e in part:
        k = kinds.setdefault(e["kind"], {"events": 0, "read": 0, "written": 0, "reads": 0, "writes": 0})
        k["events"] += 1
        for f in ("read", "written", "reads", "writes"):
            k[f] += e[f]
    per_event_kind = {
        kind: {
            "events_per_turn": round(k["events"] / n, 2),
            "bytes_read_per_event": round(k["read"] / k["events"], 1),
            "bytes_written_per_event": round(k["written"] / k["events"], 1),
            "state_reads_per_event": round(k["reads"] / k["events"], 2),
            "state_writes_per_event": round(k["writes"] / k["events"], 2),
        }
        for kind, k in sorted(kinds.items())
    }
    read = sum(e["read"] for e in part)
    written = sum(e["written"] for e in part)
    return {
        "turns": [first_turn, last_turn],
        "bytes_written_per_turn": round(written / n, 1),
        "bytes_read_per_turn": round(read / n, 1),
        "bytes_read_per_event": round(read / len(part), 1),
        "bytes_written_per_event": round(written / len(part), 1),
        "events_per_turn": round(len(part) / n, 2),
        "state_writes_per_turn": round(sum(e["writes"] for e in part) / n, 2),
        "by_event_kind": per_event_kind,
    }


def measure_state_bytes(layout: str, turns: int, max_history: int, seed: int = 7) -> dict[str, Any]:
    """One session of ``turns`` turns through one layout's DoFn; bytes read/written counted at the coders.

    Windows: turns 51-100 (steady state at the history bound, the seen-id set still small) and the
    last 50 turns, once the session has seen more than ``max_seen_ids`` ids (the seen-id set at its bound).
    """
    cfg = SessionConfig(max_history=max_history)
    cls = _dofn_class(layout)
    script, stats = _conversation(turns, seed)
    _EVENTS.clear()
    with _counted_state(cls):
        _TALLY.clear()
        p = beam.Pipeline(options=_options())
        outs = (
            p
            | script.build()
            | beam.ParDo(cls(cfg, clock=_EventClock())).with_outputs(CLOSED_TAG, DEAD_LETTER_TAG, main="turns")
        )
        _ = outs.turns | "CountTurns" >> beam.Map(_tally, "turns")
        _ = outs[CLOSED_TAG] | "CountClosed" >> beam.Map(_tally, "closed")
        _ = outs[DEAD_LETTER_TAG] | "CountDead" >> beam.Map(_tally, "dead_letters")
        started = time.perf_counter()
        cpu0 = _cpu_s()
        p.run().wait_until_finish()
        wall, cpu = time.perf_counter() - started, _cpu_s() - cpu0
    events = list(_EVENTS)
    outputs = dict(_TALLY)
    replies = sum(e["kind"] == "AgentReply" for e in events)
    if outputs != {"turns": turns} or replies != turns:
        raise RuntimeError(f"the script did not drive {turns} clean turns: {outputs}, {replies} replies")
    out: dict[str, Any] = {
        "layout": layout,
        "max_history": max_history,
        "max_seen_ids": cfg.max_seen_ids,
        "turns": turns,
        "workload": {
            **stats,
            "avg_user_chars": round(stats["user_chars"] / stats["user_messages"], 1),
            "avg_reply_chars": round(stats["reply_chars"] / turns, 1),
        },
        "whole_run": _window(events, 1, turns),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
    }
    if turns >= 100:
        out["steady_turns_51_100"] = _window(events, 51, 100)
    msgs_per_turn = stats["user_messages"] / turns
    full_from = int(cfg.max_seen_ids / msgs_per_turn) + 1
    if turns - 50 >= full_from:
        out["seen_ids_at_bound_last_50_turns"] = {
            **_window(events, turns - 49, turns),
            "ids_seen_before": round(msgs_per_turn * (turns - 50)),
        }
    return out


def _turns_to_fill_seen(seed: int = 7, probe_turns: int = 200) -> int:
    """Turns after which the conversation has sent more than max_seen_ids ids, plus the 50-turn window."""
    _, stats = _conversation(probe_turns, seed)
    per_turn = stats["user_messages"] / probe_turns
    return int(SessionConfig().max_seen_ids / per_turn) + 60


# ---------------------------------------------------------------- part 2: sessions per worker


def _load_script(n: int, seed: int) -> _Script:
    """N sessions at once: 3 messages each at t=0, 0.375, 0.75; turns release at 2.25; replies at t=4."""
    rng = random.Random(seed)
    sessions = [(_hex_id(rng, "s"), f"C{i % 100000:05d}") for i in range(n)]
    s = _Script()
    for t in (0.0, 0.375, 0.75):
        s.at(t, [_msg(rng, sid, cid, t) for sid, cid in sessions])
    s.at(3.0)
    s.at(4.0, [_reply(rng, sid, 0, 4.0) for sid, _ in sessions])
    s.at(6.0)
    return s


def _rss_now_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@contextmanager
def _runner_probes(acc: dict[str, Any]) -> Iterator[None]:
    """Measurement-only wrappers around two direct-runner methods (each is still called unchanged).

    - ``Executor.start``: when processing begins. ``Pipeline.run`` first translates the pipeline,
      TestStream events included (seconds at these sizes, the same for both variants), then starts
      the executor; elements/s counts from here.
    - ``_TransformWatermarks.extract_transform_timers``: the runner's search for due timers, which
      walks every key it holds state for on each pass (thread CPU, calls, keys visited). It shows
      where a stateful run's CPU goes as sessions accumulate: a local-runner cost, not the DoFn's.
    """
    wm_cls = watermark_manager._TransformWatermarks
    original_extract = wm_cls.extract_transform_timers
    original_start = executor.Executor.start

    def timed_extract(self: Any) -> Any:
        t0 = time.thread_time()
        try:
            return original_extract(self)
        finally:
            acc["scan_cpu_s"] += time.thread_time() - t0
            acc["scan_calls"] += 1
            acc["scan_keys_visited"] += len(self._keyed_states)

    def marked_start(self: Any, roots: Any) -> None:
        acc["executor_started"] = time.perf_counter()
        acc["cpu_at_start"] = _cpu_s()
        original_start(self, roots)

    wm_cls.extract_transform_timers = timed_extract
    executor.Executor.start = marked_start
    try:
        yield
    finally:
        wm_cls.extract_transform_timers = original_extract
        executor.Executor.start = original_start


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_load_child(n: int, variant: str, seed: int = 11) -> dict[str, Any]:
    """Runs in its own process: builds the N-session stream and pushes it through one variant."""
    rss_start = _rss_now_kib()
    t_build = time.perf_counter()
    script = _load_script(n, seed)
    stream = script.build()
    build_s = time.perf_counter() - t_build
    rss_built = _rss_now_kib()
    _TALLY.clear()
    p = beam.Pipeline(options=_options())
    keyed = p | stream
    if variant in LAYOUTS:
        outs = keyed | beam.ParDo(_dofn_class(variant)(SessionConfig(), clock=element_clock)).with_outputs(
            CLOSED_TAG, DEAD_LETTER_TAG, main="turns"
        )
        _ = outs.turns | "CountTurns" >> beam.Map(_tally, "turns")
        _ = outs[CLOSED_TAG] | "CountClosed" >> beam.Map(_tally, "closed")
        _ = outs[DEAD_LETTER_TAG] | "CountDead" >> beam.Map(_tally, "dead_letters")
        expected = {"turns": n}
    elif variant == "stateless":
        _ = keyed | beam.Map(_kind) | "CountOut" >> beam.Map(_tally, "outputs")
        expected = {"outputs": script.elements}
    else:
        raise ValueError(variant)
    probe: dict[str, Any] = {"scan_cpu_s": 0.0, "scan_calls": 0, "scan_keys_visited": 0}
    load_before = os.getloadavg()[0]
    with _runner_probes(probe):
        started = time.perf_counter()
        result = p.run()
        result.wait_until_finish()
        finished = time.perf_counter()
    cpu = _cpu_s() - probe["cpu_at_start"]
    processing = finished - probe["executor_started"]
    outputs = dict(_TALLY)
    return {
        "sessions": n,
        "variant": variant,
        "elements": script.elements,
        "outputs": outputs,
        "outputs_as_expected": outputs == expected,
        "translate_s": round(probe["executor_started"] - started, 2),
        "processing_s": round(processing, 2),
        "elements_per_s": round(script.elements / processing, 1),
        "end_to_end_s": round(finished - started, 2),
        "elements_per_s_end_to_end": round(script.elements / (finished - started), 1),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_element": round(1000 * cpu / script.elements, 3),
        "runner_timer_scan": {
            "cpu_s": round(probe["scan_cpu_s"], 2),
            "calls": probe["scan_calls"],
            "keys_visited": probe["scan_keys_visited"],
        },
        "build_stream_s": round(build_s, 2),
        "rss_after_imports_mib": round(rss_start / 1024, 1),
        "rss_stream_built_mib": round(rss_built / 1024, 1),
        "rss_end_mib": round(_rss_now_kib() / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _spawn(n: int, variant: str, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.session_state", "--child", variant, "--sessions", str(n)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=Path(__file__).parents[1])
    except subprocess.TimeoutExpired:
        return {"sessions": n, "variant": variant, "error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"sessions": n, "variant": variant, "error": proc.stderr[-2000:]}
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"sessions": n, "variant": variant, "error": f"no result line: {proc.stdout[-500:]!r}"}
    out["process_wall_s"] = round(time.perf_counter() - started, 2)
    return out


def measure_capacity(sizes: list[int], layouts: list[str], deadline: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for n in sizes:
        if deadline - time.perf_counter() < MIN_CHILD_TIMEOUT_S and n not in ALWAYS_RUN:
            rows.append({"sessions": n, "skipped": "the run's time budget is spent"})
            continue
        row: dict[str, Any] = {"sessions": n}
        # The cheap baseline first, then each layout: each child bounded by CHILD_TIMEOUT_S.
        for variant in ("stateless", *layouts):
            timeout = min(CHILD_TIMEOUT_S, max(deadline - time.perf_counter(), MIN_CHILD_TIMEOUT_S))
            row[variant] = _spawn(n, variant, timeout)
        base = row["stateless"]
        for layout in layouts:
            r = row[layout]
            if "error" in r or "error" in base:
                continue
            row[f"ratio_{layout}_vs_stateless_elements_per_s"] = round(r["elements_per_s"] / base["elements_per_s"], 3)
            row[f"rss_end_over_stateless_mib_{layout}"] = round(r["rss_end_mib"] - base["rss_end_mib"], 1)
            row[f"rss_per_held_session_kib_{layout}"] = round((r["rss_end_mib"] - base["rss_end_mib"]) * 1024 / n, 2)
        if all(v in row and "error" not in row[v] for v in LAYOUTS):
            row["ratio_v1_vs_legacy_elements_per_s"] = round(
                row["v1"]["elements_per_s"] / row["legacy"]["elements_per_s"], 3
            )
            row["ratio_v1_vs_legacy_cpu_ms_per_element"] = round(
                row["v1"]["cpu_ms_per_element"] / row["legacy"]["cpu_ms_per_element"], 3
            )
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), file=sys.stderr, flush=True)
    return {"runs": rows}


def _machine() -> dict[str, Any]:
    mem_total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "mem_total_gib": round(mem_total / GIB, 1),
        "python": platform.python_version(),
        "apache_beam": beam.__version__,
        "platform": platform.platform(),
    }


def _summarise(state: list[dict[str, Any]], capacity: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 17 asks for, side by side per layout."""
    summary: dict[str, Any] = {}
    for s in state:
        layout = s["layout"]
        for window in ("steady_turns_51_100", "seen_ids_at_bound_last_50_turns"):
            if window in s:
                w = s[window]
                summary.setdefault(window, {})[layout] = {
                    k: w[k]
                    for k in (
                        "bytes_written_per_turn",
                        "bytes_read_per_turn",
                        "bytes_written_per_event",
                        "bytes_read_per_event",
                        "state_writes_per_turn",
                    )
                }
                summary[window][layout]["bytes_read_per_event_by_kind"] = {
                    k: v["bytes_read_per_event"] for k, v in w["by_event_kind"].items()
                }
    for r in capacity["runs"]:
        for variant in ("stateless", *LAYOUTS):
            if variant in r and "error" not in r[variant]:
                summary.setdefault("elements_per_s_by_sessions", {}).setdefault(variant, {})[str(r["sessions"])] = r[
                    variant
                ]["elements_per_s"]
                summary.setdefault("cpu_ms_per_element_by_sessions", {}).setdefault(variant, {})[str(r["sessions"])] = (
                    r[variant]["cpu_ms_per_element"]
                )
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["stateless", *LAYOUTS])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--layout", choices=[*LAYOUTS, "both"], default="both")
    ap.add_argument("--sizes", default=",".join(str(n) for n in DEFAULT_SIZES))
    ap.add_argument("--turns", type=int, default=0, help="0: long enough to fill the seen-id set")
    ap.add_argument("--max-history", type=int, default=SessionConfig().max_history)
    ap.add_argument("--parts", default="bytes,capacity", help="which parts to run: bytes, capacity or both")
    ap.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="the whole run's time budget")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--out", default="artifacts/bench_session_state.json")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_load_child(args.sessions, args.child)))
        return
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    layouts = list(LAYOUTS) if args.layout == "both" else [args.layout]
    sizes = [200, 500] if args.quick else [int(x) for x in args.sizes.split(",") if x]
    turns = 100 if args.quick else (args.turns or _turns_to_fill_seen())
    parts = set(args.parts.split(","))
    state = []
    for layout in layouts if "bytes" in parts else []:
        state.append(measure_state_bytes(layout, turns, args.max_history))
        windows = ("layout", "wall_s", "steady_turns_51_100", "seen_ids_at_bound_last_50_turns")
        print(json.dumps({k: state[-1].get(k) for k in windows}), file=sys.stderr)
    capacity = measure_capacity(sizes, layouts, started + args.budget_s) if "capacity" in parts else {"runs": []}
    report = {
        "notes": [
            "Local BundleBasedDirectRunner numbers, on a shared machine: bytes are exact (counted at the "
            "coders); elements/s and CPU are this runner's, not Dataflow's.",
            "Scripted times are multiples of 0.125 s (see _Script).",
        ],
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "command": " ".join([".venv/bin/python", "-m", "bench.session_state", *(argv or sys.argv[1:])]),
        "machine": _machine(),
        "summary": _summarise(state, capacity),
        "state_bytes": state,
        "capacity": capacity,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    # Re-import under the real module name so Beam pickles these classes by reference, not as __main__.
    from bench import session_state

    session_state.main()
