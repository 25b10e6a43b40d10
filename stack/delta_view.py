"""What a chat client shows of a turn while its reply streams (the terminal chat's; the page's is chat.js).

The rules every client follows (docs/contract.md, "The frontend's promise"):

- order by ``seq``; a ``(turn_id, seq)`` seen before is a duplicate and is dropped;
- show the deltas after the turn's latest retraction, put together, but only up to the first missing
  seq: a delta past a gap waits for the missing one, and is dropped with the reason ``seq gap`` if the
  final reply comes first;
- a retraction empties the shown text (the bubble stays, waiting for the final: a replacement, not a
  flash);
- the final reply replaces the shown text; a delta after the final is dropped (``after the final``);
- a delta of another session (``another session``), or of a turn no message of this session is
  waiting for (``unknown turn``), is dropped. Every drop is logged with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from contract.deltas import DeltaKind, ReplyDelta

log = logging.getLogger("stack.deltas")


@dataclass
class _Turn:
    pieces: dict[int, ReplyDelta] = field(default_factory=dict)
    shown: str = ""


class DeltaView:
    """The shown text per turn of one session. Not thread-safe: call it from one thread."""

    def __init__(self, session_id: str, waiting: Callable[[], bool] = lambda: True) -> None:
        self.session_id = session_id
        self._waiting = waiting  # True while a message of the session awaits its reply
        self._turns: dict[str, _Turn] = {}
        self._final: set[str] = set()
        self.dropped: list[tuple[str, str, int]] = []  # (reason, turn_id, seq)

    def _drop(self, reason: str, delta: ReplyDelta) -> None:
        self.dropped.append((reason, delta.turn_id, delta.seq))
        log.info("delta dropped (%s): %s seq %d", reason, delta.turn_id, delta.seq)

    def add(self, delta: ReplyDelta) -> str | None:
        """Take one delta or retraction; the turn's new shown text, or None when nothing changed."""
        if delta.session_id != self.session_id or not delta.turn_id.startswith(self.session_id + "#"):
            self._drop("another session", delta)
            return None
        if delta.turn_id in self._final:
            self._drop("after the final", delta)
            return None
        turn = self._turns.get(delta.turn_id)
        if turn is None:
            if not self._waiting():
                self._drop("unknown turn", delta)
                return None
            turn = self._turns[delta.turn_id] = _Turn()
        if delta.seq in turn.pieces:
            self._drop("duplicate", delta)
            return None
        turn.pieces[delta.seq] = delta
        shown = self._assemble(turn)
        if shown == turn.shown and delta.kind == DeltaKind.DELTA:
            return None
        turn.shown = shown
        return shown

    @staticmethod
    def _assemble(turn: _Turn) -> str:
        parts: list[str] = []
        seq = 1
        while seq in turn.pieces:
            d = turn.pieces[seq]
            if d.kind == DeltaKind.RETRACT:
                parts = []
            else:
                parts.append(d.text)
            seq += 1
        return "".join(parts)

    def shown(self, turn_id: str) -> str:
        turn = self._turns.get(turn_id)
        return turn.shown if turn else ""

    def final(self, turn_id: str) -> str:
        """The final reply of ``turn_id`` arrived: what it replaces (deltas held past a gap are dropped)."""
        self._final.add(turn_id)
        turn = self._turns.pop(turn_id, None)
        if turn is None:
            return ""
        contiguous = 0
        while contiguous + 1 in turn.pieces:
            contiguous += 1
        for seq, d in sorted(turn.pieces.items()):
            if seq > contiguous:
                self._drop("seq gap", d)
        return turn.shown
