"""Edge of the pipeline: Pub/Sub messages in, contract objects (or dead letters) out."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics

from contract.dead_letters import DEAD_LETTER_TAG
from contract.messages import (
    MAX_CLOCK_SKEW_S,
    AgentReply,
    ContractError,
    DeadLetter,
    InboundMessage,
    parse_inbound,
    parse_reply,
)


def dead_letter_for(stage: str, reason: str, data: bytes, attributes: dict[str, str] | None = None) -> DeadLetter:
    """A dead letter that keeps the original bytes, whatever they are."""
    try:
        payload, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(data).decode("ascii"), "base64"
    return DeadLetter(
        stage=stage, reason=reason, payload=payload, payload_encoding=encoding, attributes=dict(attributes or {})
    )


def received_at(msg: PubsubMessage, now: Callable[[], float] = time.time) -> datetime:
    """The server's receipt time of a message: its Pub/Sub publish time, else now (when the pipeline read it)."""
    published = getattr(msg, "publish_time", None)
    if isinstance(published, datetime):
        return published if published.tzinfo else published.replace(tzinfo=UTC)
    return datetime.fromtimestamp(now(), UTC)


class ParseInbound(beam.DoFn):
    """PubsubMessage -> InboundMessage stamped with ``received_at``; anything off-contract -> dead letter.

    ``received_at`` is the server's clock (see ``received_at()``): latencies and freshness start there, so a
    client whose clock is wrong cannot distort them. Whatever a client put in that field is overwritten.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.accepted = Metrics.counter("inbound", "accepted")
        self.rejected = Metrics.counter("inbound", "rejected")
        self.clock_skewed = Metrics.counter("inbound", "client_clock_skewed")

    def process(self, msg: PubsubMessage) -> Iterator:
        data = msg.data or b""
        try:
            parsed = parse_inbound(data)
        except Exception as e:  # noqa: BLE001 - no payload may crash the stage: it is dead-lettered with the reason
            reason = e.reason if isinstance(e, ContractError) else f"unparseable payload: {type(e).__name__}: {e}"[:500]
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG, dead_letter_for("ParseInbound", reason, data, msg.attributes)
            )
            return
        self.accepted.inc()
        parsed = parsed.model_copy(update={"received_at": received_at(msg, self._clock)})
        if abs(parsed.clock_skew_s) > MAX_CLOCK_SKEW_S:
            self.clock_skewed.inc()
        yield parsed


class ParseReplyEvent(beam.DoFn):
    """The pipeline's own replies read back for session memory.

    A reply we cannot read is not a customer's message: it is counted and
    dead-lettered so a bad producer on the reply topic is visible.
    """

    def __init__(self) -> None:
        self.unreadable = Metrics.counter("memory", "unreadable_replies")

    def process(self, msg: PubsubMessage) -> Iterator:
        try:
            reply: AgentReply = parse_reply(msg.data or b"")
        except ContractError as e:
            self.unreadable.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG, dead_letter_for("ReadReplyMemory", e.reason, msg.data or b"", msg.attributes)
            )
            return
        yield reply


def key_inbound(msg: InboundMessage) -> tuple[str, InboundMessage]:
    return msg.session_id, msg


def key_reply(reply: AgentReply) -> tuple[str, AgentReply]:
    return reply.session_id, reply


def to_pubsub_dead_letter(dl: DeadLetter) -> PubsubMessage:
    attrs = {"stage": dl.stage, "reason": dl.reason[:1000]}
    if dl.session_id:
        attrs["session_id"] = dl.session_id
    return PubsubMessage(dl.to_bytes(), attrs)
