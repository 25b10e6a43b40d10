"""The agent inside the graph: prompt -> RunInference -> reply, eval row, or dead letter.

RunInference gives batching, model sharing across threads and inference
metrics; ``with_exception_handling`` routes a failed batch to the failure
branch, where each of its turns becomes an ``error`` reply (so the customer
hears something and the session moves on) plus a dead letter holding the
turn's messages and the reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from agents.model import ModelCall, ModelResponse
from agents.prompting import PROMPT_VERSION, build_request
from agents.turn import answer, reply_flags
from contract.messages import AgentReply, DeadLetter, ReplyKind, TurnTimings
from contract.turn import EnrichedTurn
from evals.rows import turn_row

EVAL_TAG = "eval_rows"
DEAD_LETTER_TAG = "dead_letter"

ERROR_TEXT = "Sorry, I could not answer that just now. Your messages are saved and a colleague will follow up."


def _ms_since(t) -> float:  # noqa: ANN001 - datetime
    return max(0.0, (time.time() - t.timestamp()) * 1000)


def _timings(enriched: EnrichedTurn, model_ms: float) -> TurnTimings:
    turn = enriched.turn
    return TurnTimings(
        queue_ms=max(0.0, (turn.released_at - turn.first_sent_at).total_seconds() * 1000),
        enrich_ms=enriched.enrich_ms,
        model_ms=model_ms,
        total_ms=_ms_since(turn.first_sent_at),
    )


class ToReply(beam.DoFn):
    """PredictionResult -> AgentReply (main) and its eval row (tagged)."""

    def __init__(self, model_name: str) -> None:
        self._model = model_name
        self.latency = Metrics.distribution("agent", "turn_total_ms")

    def process(self, result: PredictionResult) -> Iterator:
        call: ModelCall = result.example
        response: ModelResponse = result.inference
        if not response.ok:  # the backend could not answer this one element (e.g. prompt over context)
            yield from failed_turn(call.payload, self._model, f"model could not answer: {response.error}")
            return
        enriched: EnrichedTurn = call.payload
        t = _timings(enriched, response.model_ms)
        reply = answer(enriched, response, queue_ms=t.queue_ms, total_ms=t.total_ms)
        self.latency.update(int(reply.timings.total_ms))
        yield reply
        flags = reply_flags(response)
        row = turn_row(reply, enriched, response.prompt_tokens, response.completion_tokens, flags)
        yield beam.pvalue.TaggedOutput(EVAL_TAG, (reply.turn_id, row))


def failed_turn(enriched: EnrichedTurn, model_name: str, reason: str) -> Iterator:
    """One turn the model could not answer: an error reply, its eval row and a dead letter."""
    turn = enriched.turn
    reply = AgentReply(
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        turn_index=turn.turn_index,
        answers=turn.message_ids,
        kind=ReplyKind.ERROR,
        text=ERROR_TEXT,
        model=model_name,
        prompt_version=PROMPT_VERSION,
        timings=_timings(enriched, 0.0),
    )
    yield reply
    yield beam.pvalue.TaggedOutput(EVAL_TAG, (reply.turn_id, turn_row(reply, enriched, flags=("model_error",))))
    yield beam.pvalue.TaggedOutput(
        DEAD_LETTER_TAG,
        DeadLetter(
            stage="AgentTurn",
            reason=reason[:1000],
            payload=json.dumps([asdict(m) for m in turn.messages], default=str),
            session_id=turn.session_id,
            message_ids=turn.message_ids,
        ),
    )


class FailedTurns(beam.DoFn):
    """A failed inference batch: every turn in it fails on its own terms."""

    def __init__(self, model_name: str) -> None:
        self._model = model_name
        self.failures = Metrics.counter("agent", "model_errors")

    def process(self, failed: tuple[list[ModelCall], Exception]) -> Iterator:
        batch, exc = failed
        for call in batch:
            self.failures.inc()
            yield from failed_turn(call.payload, self._model, f"model call failed: {type(exc).__name__}: {exc}")


class AgentTurn(beam.PTransform):
    """EnrichedTurn -> outputs ``replies`` (AgentReply), ``eval_rows`` ((row id, row)), ``dead_letter``."""

    def __init__(self, handler: ModelHandler, model_name: str, max_tokens: int) -> None:
        super().__init__()
        self._handler = handler
        self._model = model_name
        self._max_tokens = max_tokens

    def expand(self, enriched: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        max_tokens = self._max_tokens
        calls = enriched | "BuildPrompt" >> beam.Map(
            lambda e: ModelCall(request=build_request(e, max_tokens), payload=e)
        )
        results, failed = calls | "RunModel" >> RunInference(self._handler).with_exception_handling()
        ok = results | "ToReply" >> beam.ParDo(ToReply(self._model)).with_outputs(
            EVAL_TAG, DEAD_LETTER_TAG, main="replies"
        )
        bad = failed.failed_inferences | "FailedTurns" >> beam.ParDo(FailedTurns(self._model)).with_outputs(
            EVAL_TAG, DEAD_LETTER_TAG, main="replies"
        )
        replies = (ok.replies, bad.replies) | "AllReplies" >> beam.Flatten()
        rows = (ok[EVAL_TAG], bad[EVAL_TAG]) | "AllEvalRows" >> beam.Flatten()
        dead = (ok[DEAD_LETTER_TAG], bad[DEAD_LETTER_TAG]) | "AllAgentDeadLetters" >> beam.Flatten()
        return replies, rows, dead
