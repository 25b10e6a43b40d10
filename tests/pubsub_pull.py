"""Pull a test's own subscription until ``want`` messages came or ``timeout_s`` passed, acking each pull."""

from __future__ import annotations

import time

from google.cloud.pubsub_v1.types import ReceivedMessage

from stack.clients import subscriber_client


def pull(path: str, want: int, timeout_s: float = 15.0) -> list[ReceivedMessage]:
    received: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout_s
    with subscriber_client() as sub:
        while len(received) < want and time.monotonic() < deadline:
            resp = sub.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
            if resp.received_messages:
                sub.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in resp.received_messages]})
            received.extend(resp.received_messages)
    return received
