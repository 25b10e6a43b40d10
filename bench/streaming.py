"""Streaming replies: time to the first visible text against time to the final reply, and Pub/Sub messages per turn.

The real local stack and pipeline (BundleBasedDirectRunner), one phase per (backend, sessions, deltas on/off):
N sessions at once, each sending ``--turns`` chat messages one after another (the next when the reply came),
texts that the small model answers in its own words (SmolLM2's chat route; the Gemini server streams a
multi-sentence reply, ``--gemini-chunk-delay-s`` between its 3-word chunks, and answers a whole
``generateContent`` as late as that stream would end). Measured on this client's clock
from the inbound publish's acknowledgement: the first delta of the turn received (``first_s``; the final when
the turn streamed nothing) and the final reply received (``final_s``). Messages per turn: what the
pipeline published on the reply and delta topics per turn (distinct (turn, seq) plus the final), and what
one subscriber received (duplicates included). ``deltas=off`` is the "before" (``--reply_deltas=off``).

    python -m bench.streaming --runs smollm2:1,10 gemini:1 --deltas on,off

Written to ``artifacts/bench_streaming.json``; one line per phase on stderr, a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import TopicRecorder, replies_of, summary
from bench.probes import loadavg, report_head
from contract.deltas import parse_delta
from contract.messages import ContractError

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DEFAULT_OUT = ARTIFACTS / "bench_streaming.json"
CHAT_TEXTS = ("hi, how are you?", "hello there, good morning", "hi! how are you doing today?", "good morning")
GEMINI_REPLY = (
    "Hello, and thanks for getting in touch. I can look up your orders, returns and refunds, "
    "and I can open a ticket for anything else. What would you like me to do first?"
)


def _gemini_responder(delay_s: float) -> Any:
    """The fake Gemini's reply; a whole (non-streamed) answer comes as late as the streamed one ends."""
    from tests.gemini_server import Reply, stream_chunks

    reply = Reply.text(GEMINI_REPLY)
    chunks = len(list(stream_chunks(reply.body, 3)))

    def respond(request: Any) -> Any:
        if request.rpc == "generateContent":
            return Reply.slow(delay_s * (chunks - 1), reply)
        return reply

    return respond


def measure_phase(stack: Any, backend: str, sessions: int, deltas: str, args: argparse.Namespace) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    from pipeline.options import DELTA_TOPIC, INBOUND_TOPIC, REPLY_TOPIC
    from stack.service import PipelineProcess, pipeline_command

    server = None
    extra = [f"--reply_deltas={deltas}", "--quiet_window_s=0.3", "--max_hold_s=1", "--model_threads=1",
             f"--model_max_tokens={args.model_max_tokens}"]  # fmt: skip
    env = dict(stack.env)
    if backend == "gemini":
        from tests.gemini_server import GeminiServer

        server = GeminiServer(_gemini_responder(args.gemini_chunk_delay_s)).start()
        server.stream_delay_s = args.gemini_chunk_delay_s
        extra.append(f"--gemini_base_url={server.url}")
        env["GOOGLE_API_KEY"] = "bench-key-not-secret"
    log = stack.log_dir / f"bench-streaming-{backend}-{sessions}-{deltas}.log"
    proc = PipelineProcess(pipeline_command(stack.bigquery_endpoint, backend, extra), env, log).start()
    replies = TopicRecorder(stack.project, REPLY_TOPIC, ordering=True, prefix="bs")
    delta_rec = TopicRecorder(stack.project, DELTA_TOPIC, prefix="bs")
    publisher = pubsub_v1.PublisherClient()
    inbound = publisher.topic_path(stack.project, INBOUND_TOPIC)
    answered: dict[str, threading.Event] = {}
    lock = threading.Lock()
    sent_at: dict[str, float] = {}

    def send(session: str, customer: str, text: str) -> str:
        from contract.messages import InboundMessage

        mid = uuid.uuid4().hex
        msg = InboundMessage(session_id=session, customer_id=customer, message_id=mid, text=text,
                             sent_at=datetime.now(UTC))  # fmt: skip
        with lock:
            answered[mid] = threading.Event()
        publisher.publish(inbound, msg.to_bytes(), session_id=session).result(timeout=30)
        sent_at[mid] = time.time()
        return mid

    def wait_answer(mid: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for reply, _ in replies_of(replies.items):
                if mid in reply.answers:
                    return True
            time.sleep(0.1)
        return False

    try:
        warm = send(f"bs-warm-{uuid.uuid4().hex[:6]}", "C0001", "hello there")
        if not wait_answer(warm, args.warmup_timeout_s) or not proc.alive():
            raise RuntimeError(f"no warm-up reply:\n{proc.log_tail()}")
        time.sleep(1.0)
        load_before = loadavg()
        mids: list[str] = []

        def session_loop(i: int) -> None:
            session = f"bs-{uuid.uuid4().hex[:8]}"
            for t in range(args.turns):
                mid = send(session, f"C{(i % 30) + 1:04d}", CHAT_TEXTS[(i + t) % len(CHAT_TEXTS)])
                with lock:
                    mids.append(mid)
                wait_answer(mid, args.turn_timeout_s)

        threads = [threading.Thread(target=session_loop, args=(i,)) for i in range(sessions)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall_s = time.monotonic() - t0
        time.sleep(2.0)  # late deltas and duplicates
        turn_of: dict[str, Any] = {}
        for reply, received in replies_of(replies.items):
            for mid in reply.answers:
                if mid in mids:
                    turn_of[mid] = (reply, received)
        deliveries: dict[str, list[tuple[Any, float]]] = defaultdict(list)
        for d in delta_rec.items:
            try:
                delta = parse_delta(d.data)
            except ContractError:
                continue
            deliveries[delta.turn_id].append((delta, d.received_at))
        first, final, per_turn_pub, per_turn_recv, ndeltas = [], [], [], [], []
        finals_received: dict[str, int] = defaultdict(int)
        for reply, _ in replies_of(replies.items):
            finals_received[reply.turn_id] += 1
        for mid, (reply, received) in turn_of.items():
            got = deliveries.get(reply.turn_id, [])
            distinct = {d.seq for d, _ in got}
            first_at = min((t for _, t in got), default=received)
            first.append(min(first_at, received) - sent_at[mid])
            final.append(received - sent_at[mid])
            ndeltas.append(len(distinct))
            per_turn_pub.append(len(distinct) + 1)
            per_turn_recv.append(len(got) + finals_received[reply.turn_id])
        return {
            "backend": backend,
            "sessions": sessions,
            "deltas": deltas,
            "turns": len(turn_of),
            "turns_lost": len(mids) - len(turn_of),
            "wall_s": round(wall_s, 1),
            "first_visible_s": summary(first, 2),
            "final_s": summary(final, 2),
            "deltas_per_turn": summary(ndeltas, 1),
            "published_per_turn": summary(per_turn_pub, 1),
            "received_per_turn": summary(per_turn_recv, 1),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        }
    finally:
        replies.close()
        delta_rec.close()
        publisher.stop()
        proc.stop()
        if server is not None:
            server.stop()


def one_line(fig: dict[str, Any]) -> str:
    f, z = fig["first_visible_s"], fig["final_s"]
    return (
        f"{fig['backend']:8} {fig['sessions']:>3} sessions deltas={fig['deltas']:3} turns={fig['turns']:>3} "
        f"first p50 {f.get('p50', '-')} s p99 {f.get('p99', '-')} s | final p50 {z.get('p50', '-')} s "
        f"p99 {z.get('p99', '-')} s | msgs/turn published {fig['published_per_turn'].get('mean', '-')} "
        f"received {fig['received_per_turn'].get('mean', '-')} | load {fig['loadavg_before']}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=["smollm2:1,10", "gemini:1"], help="BACKEND:N,N,...")
    p.add_argument("--deltas", default="on,off", help="phases with deltas on and/or off (default: %(default)s)")
    p.add_argument("--turns", type=int, default=3, help="turns per session")
    p.add_argument("--model-max-tokens", type=int, default=64)
    p.add_argument("--gemini-chunk-delay-s", type=float, default=0.05)
    p.add_argument("--warmup-timeout-s", type=float, default=300.0)
    p.add_argument("--turn-timeout-s", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    from stack.clients import firestore_client
    from stack.emulators import DEFAULT_STATE_DIR, LocalStack, ensure_bq_venv
    from stack.resources import ensure_resources
    from tools.packs import load_pack

    modes = [m.strip() for m in args.deltas.split(",") if m.strip()]
    settings = {"turns": args.turns, "model_max_tokens": args.model_max_tokens, "model_threads": 1,
                "gemini_chunk_delay_s": args.gemini_chunk_delay_s}  # fmt: skip
    report: dict[str, Any] = {**report_head("bench.streaming", argv, settings), "results": []}
    DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-stream-", dir=str(DEFAULT_STATE_DIR)))
    stack = LocalStack(state_dir=state_dir, bq_venv=ensure_bq_venv(DEFAULT_STATE_DIR / "bq-venv")).start()
    try:
        stack.apply_env()
        ensure_resources(stack.project, stack.bigquery_endpoint)
        load_pack().seed(firestore_client(stack.project), 30)
        for spec in args.runs:
            backend, sizes = spec.split(":", 1)
            for n in (int(s) for s in sizes.split(",")):
                for mode in modes:
                    fig = measure_phase(stack, backend, n, mode, args)
                    report["results"].append(fig)
                    print(one_line(fig), file=sys.stderr)
        report["finished_at"] = datetime.now(UTC).isoformat()
    finally:
        stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    for fig in report["results"]:
        print(one_line(fig))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
