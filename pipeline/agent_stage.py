"""The agent inside the graph: the step loop of ``agents.steps``, unrolled.

A turn may need several model calls with tool results in between, but a
pipeline is a graph, not a loop. So the loop is unrolled: ``StartAgent``
(guardrails, prompt) then, for each step, ``StepN/RunModel`` (RunInference,
so batching and model sharing stay Beam's) and ``StepN/Advance`` (run the
tool calls for the session's own customer, then finish or go round again).
Finished turns from every step are flattened into replies, eval rows,
hand-offs and dead letters. ``agents.steps`` guarantees a turn finishes by
``max_steps``; a turn still pending after the last stage (which would be a
bug) is failed, not dropped.

Changing ``max_steps`` changes the graph's shape: do it with a new job or an
update that maps the new step transforms (docs/operations.md, "Update and drain").
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from agents import steps
from agents.state import AgentState, Outcome, StepConfig
from contract.dead_letters import DEAD_LETTER_TAG
from contract.eval_rows import turn_row
from contract.handoff import Handoff
from contract.messages import AgentReply, DeadLetter, ReplyKind
from contract.turn import EnrichedTurn
from pipeline.deltas import PubSubDeltaStreamer, SettleDeltas, first_text_ms
from tools.packs import DEFAULT_PACK

EVAL_TAG = "eval_rows"
HANDOFF_TAG = "handoffs"
PENDING_TAG = "pending"


def turn_eval_row(state: AgentState, reply: AgentReply) -> dict[str, Any]:
    """The ``turns_v1`` row of a finished turn, everything passed to the one assembler at once.

    The pipeline's ``FinishTurn`` and the baseline bench both call this, so the two write the same row.
    """
    return turn_row(
        reply,
        state.enriched,
        prompt_tokens=state.prompt_tokens,
        completion_tokens=state.completion_tokens,
        flags=steps.eval_flags(state),
        outcome=state.outcome.value,
        details=steps.eval_details(state),
        first_text_ms=first_text_ms(state, reply.timings.total_ms),
        deltas=state.stream.deltas,
    )


def to_pubsub_handoff(record: Handoff) -> PubsubMessage:
    """A hand-off record as the message on the hand-off topic (its wire shape is ``contract.handoff``)."""
    return PubsubMessage(record.to_bytes(), record.attributes(), ordering_key=record.ordering_key)


def _ms_since(t: datetime) -> float:
    return max(0.0, (time.time() - t.timestamp()) * 1000)


class StartAgent(beam.DoFn):
    """EnrichedTurn -> AgentState: finished at once (refused, asked for a human) or pending with a request."""

    def __init__(self, version: str, config: StepConfig) -> None:
        self._version, self._config = version, config

    def process(self, enriched: EnrichedTurn) -> Iterator:
        state = steps.start(enriched, self._version, self._config)
        yield state if state.done else beam.pvalue.TaggedOutput(PENDING_TAG, state)


class AdvanceAgent(beam.DoFn):
    """One model response consumed: tools run against the session's customer, then done or pending again."""

    def __init__(self, project: str, clock: Callable[[], datetime] | None, pack: str = DEFAULT_PACK) -> None:
        self._project, self._clock, self._pack = project, clock, pack
        self.tool_calls = Metrics.counter("agent", "tool_calls")

    def setup(self) -> None:
        # The pack's tools for this worker: its Firestore client, and one connection per MCP server shared by
        # the worker process (closed when it exits).
        from tools.toolbox import make_executor

        self._executor = make_executor(self._project, pack=self._pack, clock=self._clock)

    def process(self, result: PredictionResult) -> Iterator:
        before = len(result.example.tool_calls)
        state = steps.advance(result.example, result.inference, self._executor)
        self.tool_calls.inc(len(state.tool_calls) - before)
        yield state if state.done else beam.pvalue.TaggedOutput(PENDING_TAG, state)


def fail_batch(failed: tuple[list[AgentState], Exception]) -> Iterator[AgentState]:
    batch, exc = failed
    for state in batch:
        yield steps.fail(state, f"model call failed: {type(exc).__name__}: {exc}"[:1000])


class FinishTurn(beam.DoFn):
    """A finished AgentState -> reply (main), eval row, hand-off record, and a dead letter for failed turns."""

    def __init__(self) -> None:
        self.latency = Metrics.distribution("agent", "turn_total_ms")
        self.first_text = Metrics.distribution("agent", "turn_first_text_ms")
        self.outcomes = {k: Metrics.counter("agent", f"outcome_{k.value}") for k in Outcome}

    def process(self, state: AgentState) -> Iterator:
        turn = state.enriched.turn
        # The server's clock only (received_at): a client's sent_at can be years off and is no latency.
        queue_ms = max(0.0, (turn.released_at - turn.first_received_at).total_seconds() * 1000)
        reply = steps.to_reply(state, queue_ms=queue_ms, total_ms=_ms_since(turn.first_received_at))
        self.latency.update(int(reply.timings.total_ms))
        self.first_text.update(int(first_text_ms(state, reply.timings.total_ms)))
        self.outcomes[state.outcome].inc()
        yield reply
        yield beam.pvalue.TaggedOutput(EVAL_TAG, (reply.turn_id, turn_eval_row(state, reply)))
        if state.handoff is not None:
            yield beam.pvalue.TaggedOutput(HANDOFF_TAG, state.handoff)
        if reply.kind == ReplyKind.ERROR:
            # The customer got an apology; the messages themselves are kept with the reason.
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                DeadLetter(
                    stage="AgentTurn",
                    reason=(state.error or "agent error")[:1000],
                    payload=json.dumps([asdict(m) for m in turn.messages], default=str),
                    session_id=turn.session_id,
                    message_ids=turn.message_ids,
                ),
            )


class AgentTurn(beam.PTransform):
    """EnrichedTurn -> (replies, eval rows as (row id, row), hand-off records, dead letters)."""

    def __init__(
        self,
        handler: ModelHandler,
        *,
        project: str,
        version: str,
        config: StepConfig,
        clock: Callable[[], datetime] | None = None,
        deltas: PubSubDeltaStreamer | None = None,
    ) -> None:
        super().__init__()
        self._deltas = deltas  # set when the handler streams text steps: retractions go out before the final
        self._handler = handler
        self._project = project
        self._version = version
        self._config = config
        self._clock = clock

    def expand(self, enriched: beam.PCollection) -> tuple[beam.PCollection, ...]:
        started = enriched | "StartAgent" >> beam.ParDo(StartAgent(self._version, self._config)).with_outputs(
            PENDING_TAG, main="done"
        )
        finished = [started.done]
        pending = started[PENDING_TAG]
        # One tag for every step's RunInference: they load the same model, so a worker (and, with
        # model_copies, a machine) holds one copy for all steps instead of one per step.
        model_tag = f"supportflow-agent-model-{uuid.uuid4().hex}"
        for step in range(self._config.max_steps):
            run_model = RunInference(self._handler, model_identifier=model_tag).with_exception_handling()
            results, failed = pending | f"Step{step}/RunModel" >> run_model
            advanced = results | f"Step{step}/Advance" >> beam.ParDo(
                AdvanceAgent(self._project, self._clock, self._config.pack)
            ).with_outputs(PENDING_TAG, main="done")
            finished += [
                advanced.done,
                failed.failed_inferences | f"Step{step}/FailedBatch" >> beam.FlatMap(fail_batch),
            ]
            pending = advanced[PENDING_TAG]
        finished.append(pending | "PastStepLimit" >> beam.Map(steps.fail, "turn still pending after the last step"))
        finished_all = finished | "AllFinished" >> beam.Flatten()
        if self._deltas is not None:
            finished_all = finished_all | "SettleDeltas" >> beam.ParDo(SettleDeltas(self._deltas))
        out = finished_all | "FinishTurn" >> beam.ParDo(FinishTurn()).with_outputs(
            EVAL_TAG, HANDOFF_TAG, DEAD_LETTER_TAG, main="replies"
        )
        return out.replies, out[EVAL_TAG], out[HANDOFF_TAG], out[DEAD_LETTER_TAG]
