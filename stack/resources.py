"""Idempotent creation of the stack's topics, subscriptions, dataset and tables.

Names come from ``pipeline.options`` (what the pipeline reads) and schemas from
``contract.eval_rows`` (what the eval writer writes), so there is one source for each.
Emulators keep everything in memory: run ``ensure_resources`` after every start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import bigquery, pubsub_v1

from contract.eval_rows import TABLES
from pipeline.options import (
    DEAD_LETTER_SETTLE_SUBSCRIPTION,
    DEAD_LETTER_SUBSCRIPTION,
    DEAD_LETTER_TOPIC,
    DEFAULT_PROJECT,
    DELTA_TOPIC,
    EVAL_DATASET,
    HANDOFF_SUBSCRIPTION,
    HANDOFF_TOPIC,
    INBOUND_SUBSCRIPTION,
    INBOUND_TOPIC,
    REPLY_MEMORY_SUBSCRIPTION,
    REPLY_TOPIC,
)
from stack.clients import bigquery_client, publisher_client, subscriber_client

# The terminal chat client's own view of the replies (the pipeline has REPLY_MEMORY_SUBSCRIPTION).
FRONTEND_REPLY_SUBSCRIPTION = "chat-replies-frontend"

ADMIN_TIMEOUT_S = 10.0
DEFAULT_ACK_DEADLINE_S = 30


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    topic: str
    # Replies carry the session id as ordering key: a session's replies must arrive in turn order.
    ordering: bool = False
    ack_deadline_s: int = DEFAULT_ACK_DEADLINE_S


TOPICS: tuple[str, ...] = (INBOUND_TOPIC, REPLY_TOPIC, DEAD_LETTER_TOPIC, HANDOFF_TOPIC, DELTA_TOPIC)
SUBSCRIPTIONS: tuple[SubscriptionSpec, ...] = (
    SubscriptionSpec(INBOUND_SUBSCRIPTION, INBOUND_TOPIC),
    SubscriptionSpec(REPLY_MEMORY_SUBSCRIPTION, REPLY_TOPIC, ordering=True),
    SubscriptionSpec(FRONTEND_REPLY_SUBSCRIPTION, REPLY_TOPIC, ordering=True),
    SubscriptionSpec(DEAD_LETTER_SUBSCRIPTION, DEAD_LETTER_TOPIC),
    # The local runner's read-back of dead letters: they release the inbound acks they settle.
    SubscriptionSpec(DEAD_LETTER_SETTLE_SUBSCRIPTION, DEAD_LETTER_TOPIC),
    SubscriptionSpec(HANDOFF_SUBSCRIPTION, HANDOFF_TOPIC, ordering=True),
)
# The subscriptions of readers outside the service: the chat frontend, the operators' dead letters, the desk.
OUTSIDE_READERS: tuple[str, ...] = (FRONTEND_REPLY_SUBSCRIPTION, DEAD_LETTER_SUBSCRIPTION, HANDOFF_SUBSCRIPTION)


@dataclass(frozen=True)
class StackResources:
    """Full resource paths / ids, as created."""

    project: str
    topics: dict[str, str]  # id -> projects/P/topics/id
    subscriptions: dict[str, str]  # id -> projects/P/subscriptions/id
    dataset: str  # P.dataset
    tables: dict[str, str]  # id -> P.dataset.id


def ensure_topic(publisher: pubsub_v1.PublisherClient, project: str, topic: str) -> str:
    path = publisher.topic_path(project, topic)
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=path, timeout=ADMIN_TIMEOUT_S)
    return path


def ensure_subscription(subscriber: pubsub_v1.SubscriberClient, project: str, spec: SubscriptionSpec) -> str:
    """Create the subscription unless it exists (an existing one is left as is: ordering is immutable)."""
    path = subscriber.subscription_path(project, spec.name)
    with contextlib.suppress(gexc.AlreadyExists):
        subscriber.create_subscription(
            request={
                "name": path,
                "topic": subscriber.topic_path(project, spec.topic),
                "enable_message_ordering": spec.ordering,
                "ack_deadline_seconds": spec.ack_deadline_s,
            },
            timeout=ADMIN_TIMEOUT_S,
        )
    return path


def create_subscription(
    project: str,
    name: str,
    topic: str,
    *,
    ordering: bool = False,
    ack_deadline_s: int = DEFAULT_ACK_DEADLINE_S,
) -> str:
    """One extra subscription on an existing topic (tests use a fresh one each, so no test sees another's messages).

    A subscription only receives messages published after it exists.
    """
    with subscriber_client() as subscriber:
        return ensure_subscription(subscriber, project, SubscriptionSpec(name, topic, ordering, ack_deadline_s))


def delete_subscription(project: str, name: str) -> None:
    with subscriber_client() as subscriber, contextlib.suppress(gexc.NotFound):
        subscriber.delete_subscription(
            subscription=subscriber.subscription_path(project, name), timeout=ADMIN_TIMEOUT_S
        )


def empty_subscriptions(project: str, names: Sequence[str]) -> None:
    """Drop what waits on these subscriptions of ``SUBSCRIPTIONS``: each is deleted and made again, as declared.

    The Pub/Sub emulator slows down as an unread ordered subscription's backlog grows (one request of 20
    messages to its topic, each message with a key of its own: 15 ms with none waiting, 40 ms with 5,000,
    0.9 s at the median and up to 22 s with 10,000).
    """
    specs = {spec.name: spec for spec in SUBSCRIPTIONS}
    for name in names:
        delete_subscription(project, name)
        with subscriber_client() as subscriber:
            ensure_subscription(subscriber, project, specs[name])


def schema_fields(columns: Sequence[tuple[str, str, str]]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, field_type, mode=mode) for name, field_type, mode in columns]


def ensure_bigquery(
    client: bigquery.Client,
    dataset: str = EVAL_DATASET,
    tables: Mapping[str, Sequence[tuple[str, str, str]]] = TABLES,
) -> tuple[str, dict[str, str]]:
    """Dataset and tables, created if missing; returns ``P.dataset`` and table id -> ``P.dataset.table``."""
    ds_ref = bigquery.DatasetReference(client.project, dataset)
    client.create_dataset(bigquery.Dataset(ds_ref), exists_ok=True, timeout=ADMIN_TIMEOUT_S)
    created: dict[str, str] = {}
    for table_id, columns in tables.items():
        table = bigquery.Table(ds_ref.table(table_id), schema=schema_fields(columns))
        client.create_table(table, exists_ok=True, timeout=ADMIN_TIMEOUT_S)
        created[table_id] = f"{client.project}.{dataset}.{table_id}"
    return f"{client.project}.{dataset}", created


def ensure_resources(project: str = DEFAULT_PROJECT, bq_endpoint: str | None = None) -> StackResources:
    """Every topic, subscription, dataset and table the pipeline and the chat client expect.

    Pub/Sub goes through $PUBSUB_EMULATOR_HOST; BigQuery through ``bq_endpoint``
    (default $BIGQUERY_EMULATOR_HOST). Safe to run any number of times.
    """
    with publisher_client() as publisher:
        topics = {t: ensure_topic(publisher, project, t) for t in TOPICS}
    with subscriber_client() as subscriber:
        subscriptions = {s.name: ensure_subscription(subscriber, project, s) for s in SUBSCRIPTIONS}
    bq = bigquery_client(project, bq_endpoint)
    try:
        dataset, tables = ensure_bigquery(bq)
    finally:
        bq.close()
    return StackResources(project, topics, subscriptions, dataset, tables)
