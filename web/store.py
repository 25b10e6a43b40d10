"""Per-session chat history kept in the web process's memory, bounded both ways.

A session's history is the list of *events* a page renders: the customer's
messages in the order they were published (stored once published) and the
agent's replies (stored once received from the reply topic, before the
Pub/Sub message is acked) in turn order. Each event has a key (``m:<message_id>``
or ``r:<turn_id>``); adding an event whose key the session already holds is a
no-op, so a reply Pub/Sub delivers twice is stored, and shown, once.

Turn order, not arrival order: on Dataflow ``WriteToPubSub`` drops ordering keys, so a session's
replies can arrive out of order. A reply that arrives after higher-numbered ones is placed before
them (``place_reply``), never before a message it answers. Turn numbers restart at 0 where a runner
lost the session's state (the local runner after a kill): a reply that answers messages sent after a
higher-numbered reply's belongs to that later run of numbers and stays after it.

Bounds: at most ``max_sessions`` sessions (least recently active evicted first,
never one a socket is attached to) and ``max_events`` events per session (the
oldest dropped and counted as ``omitted``). The de-duplication memory of a
session is larger than its event window (``4 * max_events`` keys), so a late
redelivery of a reply that already scrolled out of the window is still
recognised.

The store is shared by the Pub/Sub callback threads and the event loop: every
method takes one lock and returns plain data (dicts, tuples), never live
structures.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from contract.messages import AgentReply, InboundMessage

Event = dict[str, Any]

DEFAULT_MAX_SESSIONS = 2000
DEFAULT_MAX_EVENTS = 500


class SessionConflict(ValueError):
    """The session exists for another customer."""


class UnknownSession(LookupError):
    """The session is not (or no longer) held here, and no customer was given to open it."""


def message_event(msg: InboundMessage) -> Event:
    return {
        "type": "message",
        "message_id": msg.message_id,
        "session_id": msg.session_id,
        "text": msg.text,
        "sent_at": msg.sent_at.isoformat(),
    }


def reply_event(reply: AgentReply) -> Event:
    return {"type": "reply", **reply.model_dump(mode="json")}


def place_reply(events: Sequence[Event], reply: Event) -> int:
    """The index ``reply`` goes at in ``events``: just before the earliest of the higher-numbered replies
    that arrived before it, walking back and stopping at a message it answers, a reply numbered lower or
    the same, or a higher-numbered reply whose messages came before its own (a restarted numbering).
    Messages never move. The page does the same (``static/chat.js``, ``placeReply``)."""
    position = {e["message_id"]: i for i, e in enumerate(events) if e["type"] == "message"}

    def first(answers: Sequence[str]) -> int | None:
        found = [position[m] for m in answers if m in position]
        return min(found) if found else None

    answers = reply.get("answers") or []
    mine = first(answers)
    at = i = len(events)
    while i > 0:
        prev = events[i - 1]
        if prev["type"] == "message":
            if prev["message_id"] in answers:
                break
        elif prev["turn_index"] <= reply["turn_index"]:
            break
        else:
            theirs = first(prev.get("answers") or [])
            if mine is not None and theirs is not None and theirs < mine:
                break
            at = i - 1
        i -= 1
    return at


def event_key(event: Event) -> str:
    if event["type"] == "message":
        return f"m:{event['message_id']}"
    return f"r:{event['turn_id']}"


@dataclass(frozen=True)
class Snapshot:
    session_id: str
    customer_id: str
    events: list[Event]
    omitted: int  # events dropped from the front of the window


@dataclass
class _Session:
    session_id: str
    customer_id: str
    max_events: int
    events: deque[Event] = field(init=False)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    omitted: int = 0
    attached: int = 0  # sockets listening; an attached session is never evicted
    last_active: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.events = deque(maxlen=self.max_events)

    def add(self, event: Event) -> bool:
        key = event_key(event)
        if key in self.seen:
            return False
        self.seen[key] = None
        while len(self.seen) > 4 * self.max_events:
            self.seen.popitem(last=False)
        if len(self.events) == self.max_events:
            self.omitted += 1
            self.events.popleft()
        at = place_reply(self.events, event) if event["type"] == "reply" else len(self.events)
        self.events.insert(at, event)
        self.last_active = time.monotonic()
        return True


class SessionStore:
    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_sessions < 1 or max_events < 1:
            raise ValueError("max_sessions and max_events must be >= 1")
        self.max_sessions = max_sessions
        self.max_events = max_events
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently active first
        self._lock = threading.Lock()
        self.evicted = 0
        self.ignored_replies = 0  # replies of sessions this process does not hold (other frontends)
        self.duplicate_replies = 0

    # -- sessions ---------------------------------------------------------------

    def open(self, session_id: str, customer_id: str | None) -> str:
        """The session's customer; creates the session when ``customer_id`` is given and it is new.

        Raises UnknownSession (not held, no customer given) or SessionConflict (held for another customer).
        """
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                if customer_id is None:
                    raise UnknownSession(session_id)
                s = _Session(session_id, customer_id, self.max_events)
                self._sessions[session_id] = s
                self._evict()
            elif customer_id is not None and customer_id != s.customer_id:
                raise SessionConflict(f"session {session_id} belongs to another customer")
            self._touch(s)
            return s.customer_id

    def attach(self, session_id: str) -> Snapshot:
        """Pin the session (a socket listens) and return its history, atomically."""
        with self._lock:
            s = self._require(session_id)
            s.attached += 1
            self._touch(s)
            return Snapshot(s.session_id, s.customer_id, list(s.events), s.omitted)

    def detach(self, session_id: str) -> None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None:
                s.attached = max(0, s.attached - 1)
                self._evict()

    def snapshot(self, session_id: str) -> Snapshot:
        with self._lock:
            s = self._require(session_id)
            return Snapshot(s.session_id, s.customer_id, list(s.events), s.omitted)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._sessions

    # -- events -----------------------------------------------------------------

    def find_message(self, session_id: str, message_id: str) -> Event | None:
        """The stored event of that message, or None when the session never had it."""
        key = f"m:{message_id}"
        with self._lock:
            s = self._require(session_id)
            if key not in s.seen:
                return None
            for e in s.events:
                if e["type"] == "message" and e["message_id"] == message_id:
                    return e
            # Scrolled out of the window but remembered: the page only needs the id to settle its outbox.
            return {"type": "message", "message_id": message_id, "session_id": session_id, "text": "", "sent_at": ""}

    def add_message(self, msg: InboundMessage) -> Event | None:
        """Store a published message; None when the session already had it."""
        event = message_event(msg)
        with self._lock:
            s = self._require(msg.session_id)
            if not s.add(event):
                return None
            self._touch(s)
            return event

    def add_reply(self, reply: AgentReply) -> Event | None:
        """Store a reply of a session held here; None when unknown session or already stored."""
        event = reply_event(reply)
        with self._lock:
            s = self._sessions.get(reply.session_id)
            if s is None:
                self.ignored_replies += 1
                return None
            if not s.add(event):
                self.duplicate_replies += 1
                return None
            self._touch(s)
            return event

    def delta_drop_reason(self, session_id: str, turn_id: str) -> str | None:
        """Why a reply delta of ``turn_id`` must not reach the session's sockets, or None to pass it on."""
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return "unknown session"
            if not turn_id.startswith(session_id + "#"):
                return "turn of another session"
            if f"r:{turn_id}" in s.seen:
                return "after the final"
            return None

    # -- internals (lock held) --------------------------------------------------------

    def _require(self, session_id: str) -> _Session:
        s = self._sessions.get(session_id)
        if s is None:
            raise UnknownSession(session_id)
        return s

    def _touch(self, s: _Session) -> None:
        s.last_active = time.monotonic()
        self._sessions.move_to_end(s.session_id)

    def _evict(self) -> None:
        if len(self._sessions) <= self.max_sessions:
            return
        for sid in [sid for sid, s in self._sessions.items() if s.attached == 0]:
            if len(self._sessions) <= self.max_sessions:
                break
            del self._sessions[sid]
            self.evicted += 1
