"""The baseline: the same I/O as the pipeline, without a Beam runner. The load bench's yardstick.

``python -m bench.baseline --subscription S --reply-topic T --bigquery-endpoint URL --backend instant``

One thread, one loop, the smallest honest program that does what the pipeline does for a turn:

1. pull up to 100 messages from the inbound subscription (``return_immediately``, a 50 ms nap when
   empty: the same pull the pipeline's local runner is patched to make) and acknowledge them at once
   (as the direct runner does);
2. parse each against the contract (``contract.messages.parse_inbound``); a bad one goes to the
   dead-letter topic with its reason;
3. group a session's messages into a turn with the pipeline's rule: released ``quiet_window_s``
   after the last message of a burst, never later than ``max_hold_s`` after the first; de-duplicate
   message ids per session; keep a bounded history (first entry plus the newest ``max_history - 1``);
4. read the customers' context from Firestore with the pipeline's own handler
   (``FirestoreContextHandler``: one batched read per loop, its per-process TTL cache);
5. run the agent's steps (``agents.steps``: guardrails, prompt) and the same model call through the
   same backend (``make_handler(...).run_inference``) on all turns due in this loop at once;
6. publish each reply (ordering key = session id) and insert the eval rows into BigQuery
   (``insert_rows_json``, row id = turn id), as the pipeline's writers do.

What it leaves out, because it is what the pipeline adds: a runner, bundles and their bookkeeping,
state and timers in a runner's store, reading its own replies back from the reply topic (the
baseline keeps history in a dict), per-stage metrics. It imports Beam modules only for data types
(``beam.Row`` for the enrichment handler, ``PredictionResult``); no Beam pipeline is built or run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("bench.baseline")

MAX_MESSAGES = 100
EMPTY_NAP_S = 0.05


@dataclass
class _Session:
    customer_id: str
    next_turn: int = 0
    pending: list[tuple[Any, float]] = field(default_factory=list)  # (UserMessage, arrived)
    seen: dict[str, None] = field(default_factory=dict)
    history: list[Any] = field(default_factory=list)

    def due(self, quiet_window_s: float, max_hold_s: float) -> float:
        first = min(a for _, a in self.pending)
        last = max(a for _, a in self.pending)
        return min(last + quiet_window_s, first + max_hold_s)


class _NoTools:
    """Executor for backends that call no tools (instant, smollm2): never called."""

    def execute(self, ctx: Any, call: Any) -> Any:  # pragma: no cover - tool-less backends only
        raise RuntimeError("this backend calls no tools")


class Baseline:
    def __init__(self, args: argparse.Namespace) -> None:
        import apache_beam as beam  # beam.Row only: the enrichment handler's request type
        from google.cloud import pubsub_v1

        from agents.backends import registry
        from pipeline.enrichment.firestore import FirestoreContextHandler
        from pipeline.graph import agent_plan, policy_clock
        from stack.clients import bigquery_client

        self.args = args
        self._row = beam.Row
        given = {"model_max_tokens": args.model_max_tokens, "model_threads": args.model_threads}
        self.handler = registry.make_handler(args.backend, **registry.get(args.backend).pick(given))
        t0 = time.monotonic()
        self.model = self.handler.load_model()
        log.info("model %s loaded in %.1f s", args.backend, time.monotonic() - t0)
        self.version, self.config = agent_plan(
            args.backend, max_steps=args.max_agent_steps, max_tokens=args.model_max_tokens, pack=args.pack
        )
        if self.config.tools:
            from tools.toolbox import make_executor

            self.executor: Any = make_executor(args.project, pack=args.pack, clock=policy_clock(args.policy_now))
        else:
            self.executor = _NoTools()
        self.context = FirestoreContextHandler(args.project).__enter__()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        )
        self.reply_topic = self.publisher.topic_path(args.project, args.reply_topic)
        self.dead_topic = self.publisher.topic_path(args.project, args.dead_letter_topic)
        self.handoff_topic = self.publisher.topic_path(args.project, args.handoff_topic)
        self.subscription = self.subscriber.subscription_path(args.project, args.subscription)
        self.bq = bigquery_client(args.project, args.bigquery_endpoint)
        self.table = f"{args.project}.{args.eval_dataset}.turns_v1"
        self.sessions: dict[str, _Session] = {}
        self.turns = 0
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop:
            got = self._pull()
            due = self._release(time.time())
            if due:
                self._answer(due)
            elif not got:
                time.sleep(min(EMPTY_NAP_S, max(0.0, self._next_due() - time.time())))

    def _pull(self) -> int:
        from contract.messages import ContractError, parse_inbound
        from contract.turn import UserMessage
        from pipeline.parse import dead_letter_for, to_pubsub_dead_letter

        response = self.subscriber.pull(
            request={"subscription": self.subscription, "max_messages": MAX_MESSAGES, "return_immediately": True},
            timeout=30,
        )
        received = response.received_messages
        if not received:
            return 0
        self.subscriber.acknowledge(
            request={"subscription": self.subscription, "ack_ids": [m.ack_id for m in received]}, timeout=30
        )
        now = time.time()
        for m in received:
            data, attributes = bytes(m.message.data), dict(m.message.attributes)
            try:
                msg = parse_inbound(data)
            except ContractError as e:
                dl = to_pubsub_dead_letter(dead_letter_for("ParseInbound", e.reason, data, attributes))
                self.publisher.publish(self.dead_topic, dl.data, **dl.attributes)
                continue
            s = self.sessions.get(msg.session_id)
            if s is None:
                s = self.sessions[msg.session_id] = _Session(msg.customer_id)
            elif s.customer_id != msg.customer_id:
                continue  # the pipeline dead-letters these; the bench never sends them
            if msg.message_id in s.seen:
                continue
            s.seen[msg.message_id] = None
            while len(s.seen) > self.args.max_seen_ids:
                del s.seen[next(iter(s.seen))]
            s.pending.append((UserMessage(msg.message_id, msg.text, msg.sent_at), now))
        return len(received)

    def _next_due(self) -> float:
        dues = [s.due(self.args.quiet_window_s, self.args.max_hold_s) for s in self.sessions.values() if s.pending]
        return min(dues, default=time.time() + EMPTY_NAP_S)

    def _release(self, now: float) -> list[Any]:
        from contract.turn import HistoryEntry, Role, Turn

        turns = []
        for session_id, s in self.sessions.items():
            if not s.pending or now < s.due(self.args.quiet_window_s, self.args.max_hold_s):
                continue
            msgs = tuple(sorted((m for m, _ in s.pending), key=lambda m: (m.sent_at, m.message_id)))
            turns.append(
                Turn(
                    session_id=session_id,
                    customer_id=s.customer_id,
                    turn_index=s.next_turn,
                    messages=msgs,
                    history=tuple(s.history),
                    omitted_history=0,
                    released_at=datetime.fromtimestamp(now, UTC),
                )
            )
            for m in msgs:
                self._remember(s, HistoryEntry(Role.USER, m.text, s.next_turn, m.sent_at))
            s.pending = []
            s.next_turn += 1
        return turns

    def _remember(self, s: _Session, entry: Any) -> None:
        s.history.append(entry)
        while len(s.history) > self.args.max_history:
            del s.history[1]

    def _answer(self, turns: list[Any]) -> None:
        from agents import steps
        from contract.messages import ReplyKind
        from contract.turn import EnrichedTurn, HistoryEntry, Role
        from pipeline.agent_stage import turn_eval_row

        # Enrichment: one batched read for the loop's turns (the pipeline batches per bundle).
        requested = time.time()
        rows = [self._row(customer_id=t.customer_id, turn=t, requested_at=requested) for t in turns]
        answered = self.context(rows)
        enrich_ms = (time.time() - requested) * 1000
        enriched = [
            EnrichedTurn(turn=req.turn, context=resp.context, context_flags=tuple(resp.context_flags),
                         enrich_ms=enrich_ms)
            for req, resp in answered
        ]  # fmt: skip
        # The agent: start, then model calls (one batch per step) until every turn is done.
        states = [steps.start(e, self.version, self.config) for e in enriched]
        for _ in range(self.config.max_steps):
            pending = [i for i, s in enumerate(states) if not s.done]
            if not pending:
                break
            try:
                results = list(self.handler.run_inference([states[i] for i in pending], self.model))
            except Exception as exc:  # noqa: BLE001 - as the pipeline's failed-batch branch
                for i in pending:
                    states[i] = steps.fail(states[i], f"model call failed: {type(exc).__name__}: {exc}"[:1000])
                break
            for i, result in zip(pending, results, strict=True):
                states[i] = steps.advance(states[i], result.inference, self.executor)
        states = [s if s.done else steps.fail(s, "turn still pending after the last step") for s in states]
        # Replies, eval rows, hand-offs.
        futures = []
        eval_rows, row_ids = [], []
        for state in states:
            turn = state.enriched.turn
            queue_ms = max(0.0, (turn.released_at - turn.first_sent_at).total_seconds() * 1000)
            total_ms = max(0.0, (time.time() - turn.first_sent_at.timestamp()) * 1000)
            reply = steps.to_reply(state, queue_ms=queue_ms, total_ms=total_ms)
            futures.append(
                self.publisher.publish(
                    self.reply_topic,
                    reply.to_bytes(),
                    ordering_key=reply.session_id,
                    session_id=reply.session_id,
                    kind=reply.kind.value,
                    turn_id=reply.turn_id,
                )
            )
            if (h := state.handoff) is not None:
                futures.append(
                    self.publisher.publish(
                        self.handoff_topic, h.to_bytes(), ordering_key=h.ordering_key, **h.attributes()
                    )
                )
            if reply.kind == ReplyKind.ERROR:
                log.warning("turn %s failed: %s", reply.turn_id, state.error)
            eval_rows.append(turn_eval_row(state, reply))
            row_ids.append(reply.turn_id)
            s = self.sessions.get(turn.session_id)
            if s is not None:
                self._remember(s, HistoryEntry(Role.AGENT, reply.text, reply.turn_index, reply.created_at))
        for f in futures:
            f.result(timeout=60)
        errors = self.bq.insert_rows_json(self.table, eval_rows, row_ids=row_ids)
        if errors:
            log.warning("BigQuery refused %d eval rows: %s", len(errors), str(errors)[:300])
        self.turns += len(states)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from agents.backends import registry
    from pipeline.options import default

    p = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", default("gcp_project")))
    p.add_argument("--subscription", required=True, help="inbound subscription id")
    p.add_argument("--reply-topic", required=True)
    p.add_argument("--dead-letter-topic", default=default("dead_letter_topic"))
    p.add_argument("--handoff-topic", default=default("handoff_topic"))
    p.add_argument("--bigquery-endpoint", required=True)
    p.add_argument("--eval-dataset", default=default("eval_dataset"))
    # Backends this loop can serve in-process: not the GPU ones.
    p.add_argument("--backend", default="instant", choices=[n for n in registry.NAMES if not registry.get(n).needs_gpu])
    p.add_argument("--pack", default=default("pack"), help="the business served (a pack, as the pipeline's --pack)")
    p.add_argument("--model-max-tokens", type=int, default=24)
    p.add_argument("--model-threads", type=int, default=default("model_threads"))
    p.add_argument("--max-agent-steps", type=int, default=default("max_agent_steps"))
    p.add_argument("--policy-now", default=None)
    p.add_argument("--quiet-window-s", type=float, default=default("quiet_window_s"))
    p.add_argument("--max-hold-s", type=float, default=default("max_hold_s"))
    p.add_argument("--max-history", type=int, default=default("max_history"))
    p.add_argument("--max-seen-ids", type=int, default=default("max_seen_ids"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    baseline = Baseline(parse_args(argv))
    signal.signal(signal.SIGTERM, baseline.stop)
    signal.signal(signal.SIGINT, baseline.stop)
    log.info("baseline running on %s", baseline.subscription)
    baseline.run()
    log.info("baseline stopped after %d turns", baseline.turns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
