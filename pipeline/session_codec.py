"""Session state layout version 1: explicit byte encodings, each led by its version byte.

Not pickle: the bytes depend on the field lists below, never on where a class lives. Each kind of
record has a table of readers by version (``*_READERS``); the writer writes ``LAYOUT_VERSION``.
The upgrade rule (docs/session-state.md): a change to any record's fields adds a new version and
its writer, keeps every older reader in its table, and adds a golden fixture of the old bytes.

Records (little-endian; ``str`` is UTF-8 with a length prefix; a time is microseconds since the
epoch plus its UTC offset in seconds, ``NAIVE`` for a naive datetime):

- meta (one cell, state name ``session``): ``META_V1`` scalars, then ``customer_id`` (u16 length).
  The same cell held version 0 (a pickle: first byte 0x80); ``decode_session_cell`` reads both;
- pending message (bag element): ``PENDING_V1``, then ``message_id`` (u16), ``text`` (u32);
- history entry (bag element): ``HISTORY_V1``, then ``text`` (u32);
- seen id (bag element): the 8-byte fingerprint itself (``session_core.fingerprint``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from contract.turn import HistoryEntry, Role, UserMessage
from pipeline.session_core import InFlight, PendingMessage, SessionMeta
from pipeline.session_legacy import SessionState, loads_v0

LAYOUT_VERSION = 1
NAIVE = -(2**31)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)

# version, flags, opened, last_activity, next_turn, messages, duplicates, omitted_history, history_stored,
# last_history_at (µs, offset s), pending_count, pending_first, pending_last,
# in_flight (turn_index, released, oldest_arrived), seen_stored, len(customer_id)
META_V1 = struct.Struct("<BBddIIIIIqiIddIddIH")
_HANDED_OFF, _IN_FLIGHT, _OLDEST_ARRIVED, _LAST_HISTORY = 1, 2, 4, 8
_PICKLE_PROTO = 0x80  # version 0's first byte: pickle's PROTO opcode (protocol 2 and later)
# version, flags (1: received_at known), arrived, sent_at (µs, offset s), received_at (µs, offset s),
# len(message_id), len(text)
PENDING_V1 = struct.Struct("<BBdqiqiHI")
_RECEIVED = 1
# version, role (0 user, 1 agent), turn_index, at (µs, offset s), len(text)
HISTORY_V1 = struct.Struct("<BBIqiI")
_ROLES = (Role.USER, Role.AGENT)


def _time(d: datetime) -> tuple[int, int]:
    offset = d.utcoffset()
    if offset is None:
        return (d - _NAIVE_EPOCH) // timedelta(microseconds=1), NAIVE
    return (d - _EPOCH) // timedelta(microseconds=1), int(offset.total_seconds())


def _from_time(micros: int, offset_s: int) -> datetime:
    if offset_s == NAIVE:
        return _NAIVE_EPOCH + timedelta(microseconds=micros)
    at = _EPOCH + timedelta(microseconds=micros)
    return at if offset_s == 0 else at.astimezone(timezone(timedelta(seconds=offset_s)))


def _version(data: bytes, what: str, readers: dict[int, Callable]) -> Callable:
    if not data:
        raise ValueError(f"empty {what} record")
    try:
        return readers[data[0]]
    except KeyError:
        raise ValueError(f"{what} record has layout version {data[0]}; this code reads {sorted(readers)}") from None


# ---------------------------------------------------------------- meta


def encode_meta(m: SessionMeta) -> bytes:
    f = m.in_flight
    flags = (
        (_HANDED_OFF if m.handed_off else 0)
        | (_IN_FLIGHT if f is not None else 0)
        | (_OLDEST_ARRIVED if f is not None and f.oldest_arrived is not None else 0)
        | (_LAST_HISTORY if m.last_history_at is not None else 0)
    )
    hist_us, hist_off = _time(m.last_history_at) if m.last_history_at is not None else (0, 0)
    customer = m.customer_id.encode()
    head = META_V1.pack(
        LAYOUT_VERSION,
        flags,
        m.opened,
        m.last_activity,
        m.next_turn,
        m.messages,
        m.duplicates,
        m.omitted_history,
        m.history_stored,
        hist_us,
        hist_off,
        m.pending_count,
        m.pending_first,
        m.pending_last,
        f.turn_index if f else 0,
        f.released if f else 0.0,
        f.oldest_arrived if f and f.oldest_arrived is not None else 0.0,
        m.seen_stored,
        len(customer),
    )
    return head + customer


def _read_meta_v1(data: bytes) -> SessionMeta:
    (
        _v,
        flags,
        opened,
        last_activity,
        next_turn,
        messages,
        duplicates,
        omitted,
        stored,
        hist_us,
        hist_off,
        pending_count,
        pending_first,
        pending_last,
        turn_index,
        released,
        oldest,
        seen_stored,
        n,
    ) = META_V1.unpack_from(data)
    start = META_V1.size
    in_flight = None
    if flags & _IN_FLIGHT:
        in_flight = InFlight(turn_index, released, oldest if flags & _OLDEST_ARRIVED else None)
    return SessionMeta(
        customer_id=data[start : start + n].decode(),
        opened=opened,
        last_activity=last_activity,
        next_turn=next_turn,
        messages=messages,
        duplicates=duplicates,
        handed_off=bool(flags & _HANDED_OFF),
        omitted_history=omitted,
        history_stored=stored,
        last_history_at=_from_time(hist_us, hist_off) if flags & _LAST_HISTORY else None,
        pending_count=pending_count,
        pending_first=pending_first,
        pending_last=pending_last,
        in_flight=in_flight,
        seen_stored=seen_stored,
    )


META_READERS: dict[int, Callable[[bytes], SessionMeta]] = {1: _read_meta_v1}


def decode_meta(data: bytes) -> SessionMeta:
    return _version(data, "session meta", META_READERS)(data)


def decode_session_cell(data: bytes) -> SessionMeta | SessionState:
    """The ``session`` cell: version 1's meta, or a version-0 pickle for the core to migrate."""
    return loads_v0(data) if data[:1] == bytes([_PICKLE_PROTO]) else decode_meta(data)


# ---------------------------------------------------------------- pending messages


def encode_pending(p: PendingMessage) -> bytes:
    m = p.message
    mid, text = m.message_id.encode(), m.text.encode()
    received = getattr(m, "received_at", None)
    flags, (recv_us, recv_off) = (_RECEIVED, _time(received)) if received is not None else (0, (0, 0))
    head = PENDING_V1.pack(LAYOUT_VERSION, flags, p.arrived, *_time(m.sent_at), recv_us, recv_off, len(mid), len(text))
    return head + mid + text


def _read_pending_v1(data: bytes) -> PendingMessage:
    _v, flags, arrived, sent_us, sent_off, recv_us, recv_off, n_id, n_text = PENDING_V1.unpack_from(data)
    i = PENDING_V1.size
    mid, text = data[i : i + n_id].decode(), data[i + n_id : i + n_id + n_text].decode()
    received = _from_time(recv_us, recv_off) if flags & _RECEIVED else None
    return PendingMessage(UserMessage(mid, text, _from_time(sent_us, sent_off), received), arrived)


PENDING_READERS: dict[int, Callable[[bytes], PendingMessage]] = {1: _read_pending_v1}


def decode_pending(data: bytes) -> PendingMessage:
    return _version(data, "pending message", PENDING_READERS)(data)


# ---------------------------------------------------------------- history


def encode_history(e: HistoryEntry) -> bytes:
    text = e.text.encode()
    role = _ROLES.index(e.role)
    return HISTORY_V1.pack(LAYOUT_VERSION, role, e.turn_index, *_time(e.at), len(text)) + text


def _read_history_v1(data: bytes) -> HistoryEntry:
    _v, role, turn_index, at_us, at_off, n = HISTORY_V1.unpack_from(data)
    i = HISTORY_V1.size
    return HistoryEntry(_ROLES[role], data[i : i + n].decode(), turn_index, _from_time(at_us, at_off))


HISTORY_READERS: dict[int, Callable[[bytes], HistoryEntry]] = {1: _read_history_v1}


def decode_history(data: bytes) -> HistoryEntry:
    return _version(data, "history entry", HISTORY_READERS)(data)
