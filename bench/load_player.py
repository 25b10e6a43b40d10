"""Playing a load plan into a system's inbound topic and following its replies (``LoadPlayer``).

A closed loop, as real chats are: a customer waits for the reply to the whole turn, thinks, and goes on,
so at a given size the offered load adapts to the latency. One scheduler thread publishes; the reply
subscriber's callback (``bench.harness.TopicRecorder``) marks messages answered and schedules the
session's next turn.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.harness import Delivery, Progress, TopicRecorder
from bench.load_plan import LoadProfile, PlannedSession


@dataclass
class _Live:
    plan: PlannedSession
    turn: int = 0
    next_message: int = 0
    waiting: set[str] = field(default_factory=set)
    turn_sent_at: float = 0.0
    done: bool = False


@dataclass
class PlayResult:
    label: str
    sessions: int
    user_turns: int
    user_turns_answered: int
    user_turns_lost: int
    messages: int
    started_at: float
    first_sent_at: float
    last_reply_at: float
    sent_at: dict[str, float]
    accepted: dict[str, str]  # message id -> session id
    replies: list[tuple[Any, float]]  # (AgentReply, received_at)
    publish_errors: int


class LoadPlayer:
    """Plays a plan into ``inbound_topic`` and follows the replies on ``reply_topic``.

    One scheduler thread publishes (non-blocking publish futures); the reply subscriber's callback
    marks messages answered and schedules the session's next turn. No thread per customer, so a
    thousand sessions cost a heap, not a thousand threads.
    """

    def __init__(
        self,
        project: str,
        plan: list[PlannedSession],
        *,
        inbound_topic: str,
        reply_topic: str,
        profile: LoadProfile,
        label: str,
        progress: bool = True,
    ) -> None:
        from google.cloud import pubsub_v1

        self.project, self.plan, self.profile, self.label = project, plan, profile, label
        self._publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.002)
        )
        self._topic = self._publisher.topic_path(project, inbound_topic)
        self._reply_topic = reply_topic
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int]] = []  # (due monotonic, seq, session index)
        self._seq = 0
        self._live = [_Live(p) for p in plan]
        self._owner: dict[str, int] = {}  # message id -> session index
        self.sent_at: dict[str, float] = {}
        self._replies: list[tuple[Any, float]] = []
        self._answered: set[str] = set()
        self._lost = 0
        self._turns_done = 0
        self._publish_errors = 0
        self._futures: list[Any] = []
        self._total_turns = sum(len(p.turns) for p in plan)
        self._show = progress

    # -- scheduling ----------------------------------------------------------------------------------

    def _push(self, due: float, index: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, index))
        self._cond.notify()

    def _on_reply(self, delivery: Delivery) -> None:
        from contract.messages import ContractError, parse_reply

        try:
            reply = parse_reply(delivery.data)
        except ContractError:
            return
        with self._cond:
            self._replies.append((reply, delivery.received_at))
            for mid in reply.answers:
                self._answered.add(mid)
                index = self._owner.get(mid)
                if index is None:
                    continue
                live = self._live[index]
                live.waiting.discard(mid)
                if not live.done and not live.waiting and live.next_message >= len(live.plan.turns[live.turn]):
                    self._turn_finished(index, time.monotonic())

    def _turn_finished(self, index: int, now: float, lost: bool = False) -> None:
        live = self._live[index]
        self._turns_done += 1
        self._lost += int(lost)
        think = live.plan.think_s[live.turn]
        live.turn += 1
        live.next_message = 0
        live.waiting = set()
        if live.turn >= len(live.plan.turns):
            live.done = True
        else:
            self._push(now + think, index)

    def _send_next(self, index: int, now: float) -> None:
        from contract.messages import InboundMessage

        live = self._live[index]
        msg = live.plan.turns[live.turn][live.next_message]
        wall = time.time()
        inbound = InboundMessage(
            session_id=live.plan.session_id,
            customer_id=live.plan.customer_id,
            message_id=msg.message_id,
            text=msg.text,
            sent_at=datetime.fromtimestamp(wall, UTC),
        )
        self._owner[msg.message_id] = index
        self.sent_at[msg.message_id] = wall
        if live.next_message == 0:
            live.turn_sent_at = now
        live.waiting.add(msg.message_id)
        live.next_message += 1
        self._futures.append(self._publisher.publish(self._topic, inbound.to_bytes(), session_id=inbound.session_id))
        turn = live.plan.turns[live.turn]
        if live.next_message < len(turn):
            self._push(now + turn[live.next_message].gap_s, index)

    def snapshot(self) -> tuple[list[tuple[Any, float]], dict[str, float], int, int]:
        """Replies so far, send times, sessions started and finished: for watching ``run`` from another thread."""
        with self._cond:
            started = sum(1 for live in self._live if live.turn or live.next_message)
            finished = sum(1 for live in self._live if live.done)
            return list(self._replies), dict(self.sent_at), started, finished

    def run(self) -> PlayResult:
        recorder = TopicRecorder(
            self.project, self._reply_topic, ordering=True, prefix="bench", on_delivery=self._on_reply
        )
        bar = Progress(self._total_turns, self.label, enabled=self._show)
        started_mono, started = time.monotonic(), time.time()
        first_sent = 0.0
        last_scan = started_mono
        try:
            with self._cond:
                for i, p in enumerate(self.plan):
                    self._push(started_mono + p.start_s, i)
            while True:
                with self._cond:
                    now = time.monotonic()
                    while self._heap and self._heap[0][0] <= now:
                        _, _, index = heapq.heappop(self._heap)
                        if not first_sent:
                            first_sent = time.time()
                        self._send_next(index, now)
                    if now - last_scan > 1.0:  # turns that never got their reply
                        last_scan = now
                        for i, live in enumerate(self._live):
                            if (
                                not live.done
                                and live.waiting
                                and live.next_message >= len(live.plan.turns[live.turn])
                                and now - live.turn_sent_at > self.profile.turn_timeout_s
                            ):
                                self._turn_finished(i, now, lost=True)
                    if self._turns_done >= self._total_turns:
                        break
                    wait = min(0.2, self._heap[0][0] - now) if self._heap else 0.2
                    self._cond.wait(max(0.0, wait))
                    done, lost, replies = self._turns_done, self._lost, len(self._replies)
                bar.update(done, f"replies {replies} lost {lost}")
            bar.update(self._turns_done)
        finally:
            bar.close()
            for f in self._futures:
                try:
                    f.result(timeout=30)
                except Exception:  # noqa: BLE001 - counted and reported, the run goes on
                    self._publish_errors += 1
            time.sleep(0.5)  # late duplicates, if any, still land in the record
            recorder.close()
            self._publisher.stop()
        with self._cond:
            replies = list(self._replies)
        last_reply = max((t for _, t in replies), default=time.time())
        accepted = {m.message_id: p.session_id for p in self.plan for turn in p.turns for m in turn}
        sent = dict(self.sent_at)
        return PlayResult(
            label=self.label,
            sessions=len(self.plan),
            user_turns=self._total_turns,
            user_turns_answered=self._total_turns - self._lost,
            user_turns_lost=self._lost,
            messages=len(sent),
            started_at=started,
            first_sent_at=first_sent or started,
            last_reply_at=last_reply,
            sent_at=sent,
            accepted={m: s for m, s in accepted.items() if m in sent},
            replies=replies,
            publish_errors=self._publish_errors,
        )
