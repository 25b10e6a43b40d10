"""Make Beam 2.77's local streaming runner usable with Pub/Sub.

The BundleBasedDirectRunner reads Pub/Sub with a blocking ``pull`` (up to 30 s
when the subscription is empty, 10 messages at most) on its single executor
thread. With two subscriptions (inbound and reply memory) one idle pull stalls
the whole pipeline, session timers included: turns came back after 30-60 s and
bursts were split. This swaps in pulls that return at once (the emulator honours
``return_immediately``), take up to 100 messages, and nap 50 ms when empty.

Only for local runs: Dataflow and other runners have their own Pub/Sub readers
and never see this. The patch touches one private hook, so it is checked
against the Beam version it was written for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import apache_beam as beam

log = logging.getLogger(__name__)

PATCHED_FOR = "2.77."
MAX_MESSAGES = 100
EMPTY_NAP_S = 0.05


class _PromptPull:
    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pull(self, subscription: str, max_messages: int, timeout: float) -> Any:
        request = {
            "subscription": subscription,
            "max_messages": max(max_messages, MAX_MESSAGES),
            "return_immediately": True,
        }
        response = self._client.pull(request=request, timeout=timeout)
        if not response.received_messages:
            time.sleep(EMPTY_NAP_S)
        return response


def use_prompt_pubsub_pulls() -> bool:
    """Patch the local runner's Pub/Sub reader; returns False (and logs) when this Beam is not the one it fits."""
    if not beam.__version__.startswith(PATCHED_FOR):
        log.warning("Beam %s: local Pub/Sub pull patch not applied (written for %sx)", beam.__version__, PATCHED_FOR)
        return False
    from apache_beam.runners.direct import transform_evaluator as te

    evaluator = te._PubSubReadEvaluator
    if getattr(evaluator, "_supportflow_prompt_pull", False):
        return True
    original = evaluator._get_subscriber_client.__func__

    def prompt_client(cls: type, transform: Any) -> _PromptPull:
        return _PromptPull(original(cls, transform))

    evaluator._get_subscriber_client = classmethod(prompt_client)
    evaluator._supportflow_prompt_pull = True
    return True
