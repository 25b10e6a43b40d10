"""The streaming graph. Transform names are stable: Dataflow's in-place update
matches state by them, so rename one only with a transform-name mapping.

    ReadInbound ─ ParseInbound ─ CheckSessionOwner ─ KeyMessages ─┐
                                                                  ├ MergeSessionEvents ─ Sessions ─ (next line)
    ReadReplyMemory ─ ParseReplyEvent ──────────────── KeyReplies ┘                          │
                                                                              WriteSessionEvals
    Sessions ─ EnrichCustomerContext ─ AgentTurn ─┬ PublishReplies, PublishHandoffs
                                                  └ WriteTurnEvals
    every stage's dead letters (CheckSessionOwner's included) ─ AllDeadLetters ─ PublishDeadLetters
    (in a local run the eval writers publish their refused rows' dead letters themselves: pipeline.bigquery)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.ml.inference.base import ModelHandler

from agents.backends import registry
from agents.backends.base import AgentModelHandler
from agents.state import StepConfig
from contract.eval_rows import SESSIONS_TABLE, TURNS_TABLE, session_row
from contract.messages import AgentReply
from pipeline.agent_stage import AgentTurn, to_pubsub_handoff
from pipeline.bigquery import WriteRowsToBigQuery
from pipeline.deltas import PubSubDeltaStreamer
from pipeline.enrichment.transform import EnrichCustomerContext
from pipeline.metrics import FreshnessProbe, RecordDeadLetters, RecordTurnSLIs
from pipeline.ownership import CheckSessionOwner
from pipeline.parse import (
    DEAD_LETTER_TAG,
    ParseInbound,
    ParseReplyEvent,
    key_inbound,
    key_reply,
    to_pubsub_dead_letter,
)
from pipeline.session import CLOSED_TAG, SESSION_EVENT, SessionDoFn
from pipeline.settings import Settings
from tools.packs import DEFAULT_PACK, load_pack


def to_pubsub_reply(reply: AgentReply) -> PubsubMessage:
    # Session id as ordering key: a session's replies reach subscribers in order.
    return PubsubMessage(
        reply.to_bytes(),
        {"session_id": reply.session_id, "kind": reply.kind.value, "turn_id": reply.turn_id},
        ordering_key=reply.session_id,
    )


def agent_plan(
    backend: str, *, max_steps: int, max_tokens: int, pack: str = DEFAULT_PACK, prompt_version: str | None = None
) -> tuple[str, StepConfig]:
    """Prompt version and step loop for the backend (its registry entry) and the pack: the pack's tools and
    the multi-step loop only where the model calls tools (``tool_mode`` other than none); one plain step
    otherwise."""
    entry = registry.get(backend)
    load_pack(pack)  # a missing or inconsistent pack fails the launch, naming why (tools.packs.PackError)
    version = prompt_version or entry.prompt_version
    if entry.calls_tools:
        config = StepConfig(max_steps=max_steps, max_tokens=max_tokens, tool_mode=entry.tool_mode, pack=pack)
        return version, config
    return version, StepConfig(
        max_steps=1, max_tokens=max_tokens, tools=(), policy_digests=False, pack=pack, tool_mode=entry.tool_mode
    )


def model_handler(settings: Settings) -> ModelHandler:
    """The RunInference handler the settings ask for: the backend's factory, given the options it reads."""
    return registry.make_handler(settings.model_backend, **settings.backend_options())


def delta_streamer(settings: Settings, handler: ModelHandler) -> PubSubDeltaStreamer | None:
    """The handler streams its text steps' replies to the delta topic, if asked and if its backend can."""
    if settings.reply_deltas != "on" or not isinstance(handler, AgentModelHandler):
        return None
    streamer = PubSubDeltaStreamer(settings.topic_path(settings.delta_topic))
    return streamer if handler.stream_deltas(streamer) else None


def policy_clock(now: str | None) -> Callable[[], datetime] | None:
    if not now:
        return None
    pinned = datetime.fromisoformat(now.replace("Z", "+00:00"))
    return functools.partial(_pinned, pinned)


def _pinned(at: datetime) -> datetime:
    return at


def build(p: beam.Pipeline, settings: Settings) -> None:
    """The graph of a validated run (``Settings.from_options``); reads nothing else."""
    project = settings.project
    sub, topic = settings.subscription_path, settings.topic_path

    inbound = (
        p
        | "ReadInbound" >> ReadFromPubSub(subscription=sub(settings.inbound_subscription), with_attributes=True)
        | "ParseInbound" >> beam.ParDo(ParseInbound()).with_outputs(DEAD_LETTER_TAG, main="messages")
    )
    # Before keying: a message whose customer does not own its session never reaches session state.
    owned = inbound.messages | "CheckSessionOwner" >> beam.ParDo(
        CheckSessionOwner(
            project,
            settings.session_owner_collection,
            settings.session_binding_key,
            binding_secret=settings.session_binding_secret,
            secret_endpoint=settings.secret_manager_endpoint,
        )
    ).with_outputs(DEAD_LETTER_TAG, main="messages")
    memory = (
        p
        | "ReadReplyMemory"
        >> ReadFromPubSub(subscription=sub(settings.reply_memory_subscription), with_attributes=True)
        | "ParseReplyEvent" >> beam.ParDo(ParseReplyEvent()).with_outputs(DEAD_LETTER_TAG, main="replies")
    )
    events = (
        owned.messages | "KeyMessages" >> beam.Map(key_inbound),
        memory.replies | "KeyReplies" >> beam.Map(key_reply),
    ) | "MergeSessionEvents" >> beam.Flatten().with_output_types(SESSION_EVENT)  # a deterministic key coder

    sessions = events | "Sessions" >> beam.ParDo(
        SessionDoFn(settings.session, freshness=FreshnessProbe(settings.slo_freshness_s, settings.freshness_probe_s))
    ).with_outputs(CLOSED_TAG, DEAD_LETTER_TAG, main="turns")
    enriched = sessions.turns | "EnrichCustomerContext" >> EnrichCustomerContext.from_settings(settings)

    handler = model_handler(settings)
    deltas = delta_streamer(settings, handler)
    version, step_config = agent_plan(
        settings.model_backend,
        max_steps=settings.max_agent_steps,
        max_tokens=settings.model_max_tokens,
        pack=settings.pack,
        prompt_version=settings.prompt_version,
    )
    replies, eval_rows, handoffs, agent_dead = enriched | "AgentTurn" >> AgentTurn(
        handler,
        project=project,
        version=version,
        config=step_config,
        clock=policy_clock(settings.policy_now),
        deltas=deltas,
    )
    _ = (
        replies
        | "RecordTurnSLIs" >> beam.ParDo(RecordTurnSLIs(settings.slo_turn_latency_s))
        | "ToReplyMessage" >> beam.Map(to_pubsub_reply)
        | "PublishReplies"
        >> WriteToPubSub(topic(settings.reply_topic), with_attributes=True, publish_with_ordering_key=True)
    )

    _ = (
        handoffs
        | "ToHandoffMessage" >> beam.Map(to_pubsub_handoff)
        | "PublishHandoffs"
        >> WriteToPubSub(topic(settings.handoff_topic), with_attributes=True, publish_with_ordering_key=True)
    )

    def bq(table: str) -> WriteRowsToBigQuery:
        # A local run inserts off the runner's thread and publishes refused rows' dead letters there itself.
        dead_letters = topic(settings.dead_letter_topic)
        return WriteRowsToBigQuery(project, settings.eval_dataset, table, settings.bigquery_endpoint, dead_letters)

    turn_eval_dead = eval_rows | "WriteTurnEvals" >> beam.ParDo(bq(TURNS_TABLE))
    session_eval_dead = (
        sessions[CLOSED_TAG]
        | "SessionRow" >> beam.Map(lambda c: (f"{c.session_id}@{c.closed_at.isoformat()}", session_row(c)))
        | "WriteSessionEvals" >> beam.ParDo(bq(SESSIONS_TABLE))
    )

    _ = (
        (
            inbound[DEAD_LETTER_TAG],
            owned[DEAD_LETTER_TAG],
            memory[DEAD_LETTER_TAG],
            sessions[DEAD_LETTER_TAG],
            agent_dead,
            turn_eval_dead,
            session_eval_dead,
        )
        | "AllDeadLetters" >> beam.Flatten()
        | "RecordDeadLetters" >> beam.ParDo(RecordDeadLetters())
        | "ToDeadLetterMessage" >> beam.Map(to_pubsub_dead_letter)
        | "PublishDeadLetters" >> WriteToPubSub(topic(settings.dead_letter_topic), with_attributes=True)
    )
