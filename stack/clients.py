"""Client helpers bound to the local stack's emulators.

They refuse to run without the emulator variables (see ``LocalStack.env``),
so a stack tool can never reach a real Google Cloud project by accident.
"""

from __future__ import annotations

import os

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, firestore, pubsub_v1

from stack.emulators import StackError


def emulator_host(var: str) -> str:
    """The value of an ``*_EMULATOR_HOST`` variable, or a StackError saying it is unset."""
    value = os.environ.get(var, "").strip()
    if not value:
        raise StackError(f"{var} is not set: start the local stack and apply its env (LocalStack.apply_env())")
    return value


def bigquery_client(project: str, endpoint: str | None = None) -> bigquery.Client:
    """A BigQuery client for the emulator at ``endpoint`` (default: $BIGQUERY_EMULATOR_HOST).

    The emulator needs no auth, and the library has no emulator variable of its
    own: anonymous credentials plus an explicit REST endpoint.
    """
    endpoint = endpoint or emulator_host("BIGQUERY_EMULATOR_HOST")
    if not endpoint.startswith(("http://", "https://")):
        endpoint = f"http://{endpoint}"
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=endpoint),
    )


def publisher_client(*, enable_message_ordering: bool = False) -> pubsub_v1.PublisherClient:
    """A publisher on $PUBSUB_EMULATOR_HOST (the library switches to an insecure channel by itself).

    ``enable_message_ordering`` is needed to publish with ordering keys.
    """
    emulator_host("PUBSUB_EMULATOR_HOST")
    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=enable_message_ordering)
    return pubsub_v1.PublisherClient(publisher_options=options)


def subscriber_client() -> pubsub_v1.SubscriberClient:
    emulator_host("PUBSUB_EMULATOR_HOST")
    return pubsub_v1.SubscriberClient()


def firestore_client(project: str) -> firestore.Client:
    """A Firestore client on $FIRESTORE_EMULATOR_HOST (the library uses emulator credentials by itself)."""
    emulator_host("FIRESTORE_EMULATOR_HOST")
    return firestore.Client(project=project)
