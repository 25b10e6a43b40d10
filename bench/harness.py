"""What the load bench and the fault tests share: recorders on the output topics, a ledger of what was
published, the delivery invariant, percentiles, and a progress line.

The invariant (issue 10): every accepted message is answered exactly once (a reply of kind ``reply``,
``handoff`` or ``error``), or dead-lettered with its reason; an ``error`` reply comes with a dead letter
for its messages; every rejected payload is dead-lettered with its reason; no turn is published twice
with different content. Tool actions are checked against Firestore by the tests themselves.

Nothing here imports Beam: these are plain Pub/Sub clients, as a chat frontend would use.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from contract.messages import AgentReply, ContractError, ReplyKind, parse_reply

# ---------------------------------------------------------------------------
# Recording a topic
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    data: bytes
    attributes: dict[str, str]
    received_at: float  # time.time() when the callback ran


class TopicRecorder:
    """A fresh streaming-pull subscription on ``topic`` that keeps every delivery (duplicates included).

    A subscription only sees messages published after it exists: create recorders before publishing.
    ``on_delivery`` (optional) is called on the subscriber's thread for each delivery.
    """

    def __init__(
        self,
        project: str,
        topic: str,
        *,
        ordering: bool = False,
        prefix: str = "rec",
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self._sub = pubsub_v1.SubscriberClient()
        self.subscription = self._sub.subscription_path(project, f"{prefix}-{topic}-{uuid.uuid4().hex[:8]}")
        self._sub.create_subscription(
            request={
                "name": self.subscription,
                "topic": self._sub.topic_path(project, topic),
                "enable_message_ordering": ordering,
                "ack_deadline_seconds": 60,
            },
            timeout=30,
        )
        self._lock = threading.Lock()
        self._items: list[Delivery] = []
        self._on_delivery = on_delivery
        self._future = self._sub.subscribe(
            self.subscription,
            self._on_message,
            flow_control=pubsub_v1.types.FlowControl(max_messages=5000),
        )

    def _on_message(self, message: pubsub_v1.subscriber.message.Message) -> None:
        delivery = Delivery(bytes(message.data), dict(message.attributes), time.time())
        with self._lock:
            self._items.append(delivery)
        message.ack()
        if self._on_delivery is not None:
            self._on_delivery(delivery)

    @property
    def items(self) -> list[Delivery]:
        with self._lock:
            return list(self._items)

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout_s: float, poll_s: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate(self.items):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)

    def close(self) -> None:
        self._future.cancel()
        with contextlib.suppress(Exception):  # a cancelled future raises; nothing to do at shutdown
            self._future.result(timeout=5)
        with contextlib.suppress(gexc.GoogleAPICallError):
            self._sub.delete_subscription(request={"subscription": self.subscription}, timeout=10)
        self._sub.close()


def replies_of(deliveries: Iterable[Delivery]) -> list[tuple[AgentReply, float]]:
    """Readable replies with their receive times (unreadable ones are skipped: the pipeline dead-letters those)."""
    out = []
    for d in deliveries:
        try:
            out.append((parse_reply(d.data), d.received_at))
        except ContractError:
            continue
    return out


def dead_letters_of(deliveries: Iterable[Delivery]) -> list[dict[str, Any]]:
    out = []
    for d in deliveries:
        try:
            body = json.loads(d.data)
        except ValueError:
            body = {"stage": "?", "reason": "dead letter is not JSON", "payload": d.data.decode("utf-8", "replace")}
        body["_attributes"] = d.attributes
        out.append(body)
    return out


# ---------------------------------------------------------------------------
# The invariant
# ---------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the invariant check found; ``violations`` empty means it holds."""

    violations: list[str] = field(default_factory=list)
    answered: dict[str, str] = field(default_factory=dict)  # message id -> turn id
    kinds: dict[str, str] = field(default_factory=dict)  # message id -> reply kind
    dead_lettered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # message id -> dead letters
    duplicate_deliveries: int = 0  # the same turn delivered again with the same content (consumers de-duplicate)

    @property
    def ok(self) -> bool:
        return not self.violations

    def explain(self, limit: int = 25) -> str:
        more = len(self.violations) - limit
        lines = self.violations[:limit] + ([f"... and {more} more"] if more > 0 else [])
        return "\n".join(lines)


def check_delivery(
    accepted: Mapping[str, str],
    replies: Sequence[AgentReply],
    dead_letters: Sequence[Mapping[str, Any]],
    *,
    sessions: Iterable[str] | None = None,
) -> Verdict:
    """Check "answered exactly once, handed off, or dead-lettered with its reason" for ``accepted``.

    ``accepted``: message id -> session id of every valid message published (each id once, whatever
    number of times it was re-published). ``replies``: every reply delivery seen on the reply topic
    (duplicates included). ``dead_letters``: dead-letter bodies. ``sessions`` restricts the reply check
    to these sessions (default: the sessions of ``accepted``).
    """
    verdict = Verdict()
    own = set(sessions if sessions is not None else accepted.values())
    by_turn: dict[str, AgentReply] = {}
    for r in replies:
        if r.session_id not in own:
            continue
        seen = by_turn.get(r.turn_id)
        if seen is None:
            by_turn[r.turn_id] = r
        elif seen.answers == r.answers and seen.kind == r.kind and seen.text == r.text:
            verdict.duplicate_deliveries += 1
        else:
            verdict.violations.append(
                f"turn {r.turn_id} published twice with different content: {seen.answers} {seen.kind} / "
                f"{r.answers} {r.kind}"
            )
    for dl in dead_letters:
        for mid in dl.get("message_ids") or ():
            verdict.dead_lettered.setdefault(mid, []).append(dict(dl))
    for turn_id, r in by_turn.items():
        if not r.answers:
            verdict.violations.append(f"turn {turn_id} answers no message")
        for mid in r.answers:
            if mid not in accepted:
                verdict.violations.append(f"turn {turn_id} answers {mid!r}, which was never published as valid")
                continue
            if accepted[mid] != r.session_id:
                verdict.violations.append(f"turn {turn_id} answers {mid!r} of session {accepted[mid]}")
            if mid in verdict.answered and verdict.answered[mid] != turn_id:
                verdict.violations.append(f"message {mid!r} answered twice: {verdict.answered[mid]} and {turn_id}")
            verdict.answered[mid] = turn_id
            verdict.kinds[mid] = r.kind.value
    per_session: dict[str, list[int]] = defaultdict(list)
    for r in by_turn.values():
        per_session[r.session_id].append(r.turn_index)
    for session, indexes in per_session.items():
        if sorted(indexes) != list(range(len(indexes))):
            verdict.violations.append(f"session {session}: turn indexes {sorted(indexes)} are not 0..n-1")
    for mid in accepted:
        dls = verdict.dead_lettered.get(mid, [])
        if mid in verdict.answered:
            if verdict.kinds[mid] == ReplyKind.ERROR.value and not any(d.get("reason") for d in dls):
                verdict.violations.append(f"message {mid!r} got an error reply but no dead letter with a reason")
        elif not dls:
            verdict.violations.append(f"message {mid!r} was neither answered nor dead-lettered")
        elif not all(d.get("reason") for d in dls):
            verdict.violations.append(f"message {mid!r} dead-lettered without a reason")
    return verdict


def check_rejected(
    probes: Mapping[str, str], dead_letters: Sequence[Mapping[str, Any]], *, attribute: str = "probe"
) -> list[str]:
    """Every probe (``attribute`` value -> a word its reason must contain) dead-lettered exactly once."""
    found: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for dl in dead_letters:
        name = (dl.get("attributes") or {}).get(attribute)
        if name is not None:
            found[name].append(dl)
    problems = []
    for name, word in probes.items():
        got = found.get(name, [])
        if len(got) != 1:
            problems.append(f"probe {name!r}: {len(got)} dead letters (want 1)")
            continue
        reason = str(got[0].get("reason") or "")
        if word.lower() not in reason.lower():
            problems.append(f"probe {name!r}: reason {reason!r} does not mention {word!r}")
        if (got[0].get("_attributes") or {}).get("reason") != reason[:1000]:
            problems.append(f"probe {name!r}: the dead letter's reason attribute differs from its body")
    return problems


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------


def random_prose(rng: Any, lo: int, hi: int, words: Sequence[str]) -> str:
    """Words drawn from ``words`` up to a length uniform in [lo, hi] characters (the benches' message texts).

    ``rng`` is a ``random.Random``: the same seed gives the same texts, so two systems get the same load.
    """
    target = rng.randint(lo, hi)
    picked: list[str] = []
    n = 0
    while n < target:
        w = rng.choice(words)
        picked.append(w)
        n += len(w) + 1
    return " ".join(picked)[:target].rstrip()


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float | int]:
    """n, p50, p90, p99, max and mean of ``values`` (empty: n only)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p90": round(percentile(values, 90), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
        "mean": round(sum(values) / len(values), digits),
    }


class Progress:
    """tqdm when it is installed, else one line on stderr rewritten in place."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.n = 0
        self._bar: Any = None
        self._last = 0.0
        self._t0 = time.monotonic()
        if enabled:
            try:
                from tqdm import tqdm  # optional: not a dependency of the project
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(total=total, desc=desc, unit="turn", file=sys.stderr, leave=True)

    def update(self, n: int, postfix: str = "") -> None:
        """Set the absolute count to ``n``."""
        delta, self.n = n - self.n, n
        if not self.enabled:
            return
        if self._bar is not None:
            if delta:
                self._bar.update(delta)
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            return
        now = time.monotonic()
        tty = sys.stderr.isatty()
        if now - self._last < (0.5 if tty else 10.0) and n < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * n / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        line = f"{self.desc} [{bar}] {n}/{self.total} {now - self._t0:5.0f}s {postfix}"
        # On a terminal the line is rewritten in place; in a log, one line every few seconds.
        sys.stderr.write("\r" + line[:160].ljust(100) if tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._last = 0.0
            n, self.n = self.n, -1
            self.update(n)
            if sys.stderr.isatty():
                sys.stderr.write("\n")
            sys.stderr.flush()
