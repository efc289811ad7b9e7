"""ONC-RPC v2 (RFC 5531) messages over TCP record marking, sans-IO.

* :func:`encode_call` / :func:`decode_call`: a CALL message (AUTH_NONE credentials).
* :func:`encode_reply` / :func:`encode_accepted_error` / :func:`decode_reply`: REPLY
  messages; :meth:`Reply.check` raises :class:`RpcError` for anything but SUCCESS.
* :func:`record_mark` and :class:`RecordReassembler`: RFC 5531 section 11 framing. Each
  fragment starts with a 4-byte header: the top bit marks the last fragment of a record,
  the other 31 bits are its length. A header announcing more than ``max_size`` in total
  raises :class:`RecordTooLarge` before any of it is read; below that, a record is only
  as large as the bytes received for it, except a large one-fragment record, for which
  the reassembler offers one buffer of the announced size (at most ``max_size``, the
  caller's bound) to receive into directly (:meth:`RecordReassembler.receive_buffer`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from .._exceptions import RemoteProtocolError
from .._types import BytesLike
from .framing import NEED_DATA
from .xdr import Unpacker

__all__ = [
    "AUTH_NONE",
    "LAST_FRAGMENT",
    "MAX_FRAGMENT",
    "RPC_VERSION",
    "AcceptStat",
    "Call",
    "Placement",
    "RecordReassembler",
    "RecordTooLarge",
    "Reply",
    "RpcError",
    "call_header",
    "decode_call",
    "decode_reply",
    "encode_accepted_error",
    "encode_call",
    "encode_denied",
    "encode_reply",
    "peek_xid",
    "record_mark",
    "reply_header",
]

RPC_VERSION: Final = 2
AUTH_NONE: Final = 0
LAST_FRAGMENT: Final = 0x80000000
MAX_FRAGMENT: Final = 0x7FFFFFFF
_MAX_AUTH: Final = 400  # RFC 5531: opaque_auth body<400>
_CALL: Final = 0
_REPLY: Final = 1
_MSG_ACCEPTED: Final = 0
_MSG_DENIED: Final = 1
_HEADER: Final = struct.Struct(">I")
_HANDOVER_MIN: Final = 1 << 20  # records this large may be handed over without a copy
_CALL_HEAD: Final = struct.Struct(">IIIIIIIIII")  # xid..proc + cred + verf, AUTH_NONE
_REPLY_HEAD: Final = struct.Struct(">IIIIII")  # xid, REPLY, ACCEPTED, verf, stat


class AcceptStat(enum.IntEnum):
    """Why an accepted call did or did not run (``accept_stat``)."""

    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RpcError(RemoteProtocolError):
    """The RPC server refused or failed the call (not SUCCESS); ``stat`` says how."""

    def __init__(self, message: str, *, stat: int | None = None) -> None:
        self.stat = stat
        super().__init__(message)


class RecordTooLarge(RemoteProtocolError):
    """A record-marking header announced more than the reassembler's ``max_size``."""


class Call(NamedTuple):
    """A decoded CALL: who is called, and the undecoded procedure arguments (a named
    tuple: built once per call a server receives, it must be cheap)."""

    xid: int
    prog: int
    vers: int
    proc: int
    args: memoryview


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded REPLY. ``results`` is valid only when ``stat`` is SUCCESS."""

    xid: int
    accepted: bool
    stat: int  #: accept_stat when accepted, reject_stat when denied
    results: memoryview
    mismatch: tuple[int, int] | None = None  #: (low, high) for PROG_/RPC_MISMATCH

    def check(self) -> memoryview:
        """The results, or :class:`RpcError` when the call did not succeed."""
        if self.accepted and self.stat == AcceptStat.SUCCESS:
            return self.results
        if not self.accepted:
            what = "RPC version mismatch" if self.stat == 0 else "authentication error"
            raise RpcError(f"RPC call denied: {what}", stat=self.stat)
        try:
            name = AcceptStat(self.stat).name
        except ValueError:
            name = f"accept_stat {self.stat}"
        if self.mismatch is not None:
            name += f" (server supports versions {self.mismatch[0]}..{self.mismatch[1]})"
        raise RpcError(f"RPC call failed: {name}", stat=self.stat)


def record_mark(length: int, *, last: bool = True) -> bytes:
    """The 4-byte record-marking header of a fragment of ``length`` bytes."""
    if not 0 <= length <= MAX_FRAGMENT:
        raise ValueError(f"fragment length out of range: {length}")
    return _HEADER.pack(length | (LAST_FRAGMENT if last else 0))


def encode_call(xid: int, prog: int, vers: int, proc: int, args: BytesLike = b"") -> bytes:
    """A CALL message with AUTH_NONE credentials and verifier (no record mark)."""
    head = _CALL_HEAD.pack(xid, _CALL, RPC_VERSION, prog, vers, proc, AUTH_NONE, 0, AUTH_NONE, 0)
    return head + args if args else head


def call_header(xid: int, prog: int, vers: int, proc: int) -> bytes:
    """The CALL message up to its arguments (to send arguments without copying them)."""
    return _CALL_HEAD.pack(xid, _CALL, RPC_VERSION, prog, vers, proc, AUTH_NONE, 0, AUTH_NONE, 0)


def decode_call(message: BytesLike) -> Call:
    """Decode a CALL message; credentials of any flavour are skipped."""
    view = memoryview(message).cast("B")
    if len(view) >= _CALL_HEAD.size:  # the usual case: AUTH_NONE, empty bodies
        xid, kind, version, prog, vers, proc, _, cred, _, verf = _CALL_HEAD.unpack_from(view)
        if kind == _CALL and version == RPC_VERSION and cred == 0 and verf == 0:
            return Call(xid, prog, vers, proc, view[_CALL_HEAD.size :])
    u = Unpacker(view)
    xid = u.unpack_uint()
    kind = u.unpack_uint()
    if kind != _CALL:
        raise RemoteProtocolError(f"expected an RPC CALL, got message type {kind}")
    version = u.unpack_uint()
    if version != RPC_VERSION:
        raise RpcError(f"RPC version {version} is not 2", stat=0)
    prog, vers, proc = u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    for _ in range(2):  # credentials, verifier
        u.unpack_uint()
        u.unpack_opaque_view(max_size=_MAX_AUTH)
    return Call(xid, prog, vers, proc, u.rest())


def reply_header(xid: int, stat: int = AcceptStat.SUCCESS) -> bytes:
    """An accepted REPLY up to its results."""
    return _REPLY_HEAD.pack(xid, _REPLY, _MSG_ACCEPTED, AUTH_NONE, 0, stat)


def encode_reply(xid: int, results: BytesLike = b"") -> bytes:
    """An accepted, successful REPLY carrying ``results`` (no record mark)."""
    head = reply_header(xid)
    return head + results if results else head


def encode_accepted_error(
    xid: int, stat: AcceptStat, *, mismatch: tuple[int, int] | None = None
) -> bytes:
    """An accepted REPLY that is not SUCCESS (PROG_UNAVAIL, GARBAGE_ARGS...)."""
    head = reply_header(xid, stat)
    if stat == AcceptStat.PROG_MISMATCH:
        low, high = mismatch or (0, 0)
        head += struct.pack(">II", low, high)
    return head


def encode_denied(xid: int, *, low: int = RPC_VERSION, high: int = RPC_VERSION) -> bytes:
    """A REPLY denying the call for an RPC version mismatch."""
    return struct.pack(">IIIIII", xid, _REPLY, _MSG_DENIED, 0, low, high)


def peek_xid(message: BytesLike) -> int | None:
    """The XID of a message, or None if it is too short to have one."""
    view = memoryview(message).cast("B")
    if len(view) < 4:
        return None
    xid: int = _HEADER.unpack(view[:4])[0]
    return xid


def decode_reply(message: BytesLike) -> Reply:
    """Decode a REPLY message (raises RemoteProtocolError if it is not one)."""
    view = memoryview(message).cast("B")
    if len(view) >= _REPLY_HEAD.size:  # the usual case: accepted, empty verifier, SUCCESS
        xid, kind, status, _, verf, stat = _REPLY_HEAD.unpack_from(view)
        if kind == _REPLY and status == _MSG_ACCEPTED and verf == 0 and stat == 0:
            return Reply(xid, True, 0, view[_REPLY_HEAD.size :])
    u = Unpacker(view)
    xid = u.unpack_uint()
    kind = u.unpack_uint()
    if kind != _REPLY:
        raise RemoteProtocolError(f"expected an RPC REPLY, got message type {kind}")
    status = u.unpack_uint()
    if status == _MSG_ACCEPTED:
        u.unpack_uint()  # verifier flavour
        u.unpack_opaque_view(max_size=_MAX_AUTH)
        stat = u.unpack_uint()
        mismatch = None
        if stat == AcceptStat.PROG_MISMATCH:
            mismatch = (u.unpack_uint(), u.unpack_uint())
        return Reply(xid, True, stat, u.rest(), mismatch)
    if status == _MSG_DENIED:
        stat = u.unpack_uint()
        mismatch = (u.unpack_uint(), u.unpack_uint()) if stat == 0 else None
        return Reply(xid, False, stat, u.rest(), mismatch)
    raise RemoteProtocolError(f"RPC reply status {status} is neither accepted nor denied")


Placement = Callable[[memoryview, int], "tuple[int, memoryview] | None"]
"""``placement(prefix, length)``, offered by :meth:`RecordReassembler.place_next` to the
next large record: given its first bytes (at least 128, or all of it) and its length,
``(offset, target)`` puts the record's bytes ``offset .. offset + len(target)`` straight
into ``target`` (the record returned then lacks them; :meth:`~RecordReassembler.take_placed`
says where they were); None: the record is received as usual."""

_PLACE_PREFIX: Final = 128
_SCRATCH: Final = 256 * 1024


class RecordReassembler:
    """Frames a byte stream into RPC records (bytes in, records out).

    ``receive_data(data)`` buffers received bytes; :meth:`next_record` returns the next
    complete record or :class:`~aiotmc.protocol.scpi.NEED_DATA`. Memory held is the bytes
    received and not returned yet; a record whose fragments announce more than
    ``max_size`` bytes raises :class:`RecordTooLarge` as soon as the header is seen, and
    the reassembler stays failed (the stream's framing is lost: close the connection).
    """

    __slots__ = (
        "_buffer",
        "_error",
        "_filled",
        "_fragment",
        "_hole",
        "_last",
        "_max_size",
        "_placed",
        "_placement",
        "_pos",
        "_record",
        "_scratch",
        "_spare",
        "_target",
        "_target_filled",
        "_targets",
    )

    def __init__(self, *, max_size: int) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        self._max_size = max_size
        self._buffer = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buffer
        self._record = bytearray()  # fragments of the current record so far
        self._fragment: int | None = None  # length of the fragment being received
        self._last = False
        self._error: RemoteProtocolError | None = None
        # A large record received in place: the buffers it goes to, in order (None: a
        # stretch to discard), the one being filled and how far; ``_hole``: the index of
        # the stretch a placement put into the caller's buffer (-1: none).
        self._targets: list[tuple[memoryview | None, int]] = []
        self._target = 0
        self._target_filled = 0
        self._filled = 0  # bytes of the in-place record received
        self._hole = -1
        self._spare: bytearray | None = None  # the last in-place buffer, reused when free
        self._scratch: memoryview | None = None  # where discarded bytes are received
        self._placement: Placement | None = None
        self._placed: tuple[int, int] | None = None  # of the last record returned

    @property
    def max_size(self) -> int:
        """The largest record accepted."""
        return self._max_size

    @property
    def buffered(self) -> int:
        """Bytes held: received and not returned in a record yet."""
        return len(self._buffer) - self._pos + len(self._record) + self._filled

    def receive_buffer(self) -> memoryview | None:
        """Where to receive the rest of a large one-fragment record directly (then
        :meth:`commit` the bytes received there), or None: use :meth:`receive_data`."""
        if not self._targets or self._error is not None:
            return None
        self._skip_full()
        if self._target == len(self._targets):
            return None
        view, size = self._targets[self._target]
        left = size - self._target_filled
        if view is None:  # discarded: any scratch space will do
            scratch = self._scratch
            if scratch is None:
                scratch = self._scratch = memoryview(bytearray(_SCRATCH))
            return scratch[: min(left, _SCRATCH)]
        return view[self._target_filled : size]

    def commit(self, count: int) -> None:
        """``count`` bytes were received into :meth:`receive_buffer`'s view."""
        assert self._targets and count >= 0
        assert count <= self._targets[self._target][1] - self._target_filled
        self._target_filled += count
        self._filled += count

    def place_next(self, placement: Placement) -> None:
        """Offer ``placement`` to the next large one-fragment record (see
        :data:`Placement`); it stays offered until used or :meth:`detach`."""
        self._placement = placement

    def detach(self) -> None:
        """Withdraw the placement; a record being placed receives the rest of its placed
        stretch into scratch space (discarded): the caller's buffer is never written
        after this returns."""
        self._placement = None
        if self._hole >= 0:
            _, size = self._targets[self._hole]
            self._targets[self._hole] = (None, size)

    def take_placed(self) -> tuple[int, int] | None:
        """(offset, size) of the stretch of the last record returned that went to the
        placement's buffer (the record returned lacks it), or None."""
        placed, self._placed = self._placed, None
        return placed

    def _skip_full(self) -> None:
        targets = self._targets
        while self._target < len(targets) and self._target_filled == targets[self._target][1]:
            self._target += 1
            self._target_filled = 0

    def _fill_targets(self, view: memoryview) -> memoryview:
        """Copy the start of ``view`` into the in-place targets; the rest is returned."""
        targets = self._targets
        while len(view):
            self._skip_full()
            if self._target == len(targets):
                break
            target, size = targets[self._target]
            take = min(len(view), size - self._target_filled)
            if target is not None:
                target[self._target_filled : self._target_filled + take] = view[:take]
            self._target_filled += take
            self._filled += take
            view = view[take:]
        return view

    @property
    def at_record_start(self) -> bool:
        """True when no part of a record is held."""
        return self.buffered == 0 and self._fragment is None

    def receive_data(self, data: BytesLike) -> None:
        """Add received bytes."""
        if self._error is not None:
            raise self._error
        if self._targets:  # the rest of a large record first
            data = self._fill_targets(memoryview(data).cast("B"))
            if not data:
                return
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        self._buffer += data

    def next_record(self) -> bytes | type[NEED_DATA]:
        """The next whole record, or ``NEED_DATA``."""
        record = self._next(handover=False)
        assert not isinstance(record, memoryview)
        return record

    def next_record_view(self) -> bytes | memoryview | type[NEED_DATA]:
        """Like :meth:`next_record`; a large one-fragment record that ends the received
        data comes as a view of the receive buffer, handed over without a copy."""
        return self._next(handover=True)

    def _next(self, *, handover: bool) -> bytes | memoryview | type[NEED_DATA]:
        if self._error is not None:
            raise self._error
        if self._targets:
            return self._in_place_record(handover)
        buffer = self._buffer
        while True:
            available = len(buffer) - self._pos
            if self._fragment is None:
                if available < 4:
                    self._compact()
                    return NEED_DATA
                header: int = _HEADER.unpack_from(buffer, self._pos)[0]
                self._pos += 4
                length = header & MAX_FRAGMENT
                self._last = bool(header & LAST_FRAGMENT)
                if len(self._record) + length > self._max_size:
                    self._error = RecordTooLarge(
                        f"RPC record of at least {len(self._record) + length} bytes exceeds "
                        f"max_size={self._max_size}"
                    )
                    raise self._error
                self._fragment = length
                available -= 4
            length = self._fragment
            if available < length:
                if handover and self._last and not self._record and length >= _HANDOVER_MIN:
                    if self._placement is not None and available < _PLACE_PREFIX:
                        self._compact()
                        return NEED_DATA  # the placement needs the record's first bytes
                    # A large record: received in place from now on (no copy, no growth).
                    self._targets = self._in_place(length, buffer, available)
                    self._target = self._target_filled = self._filled = 0
                    rest = self._fill_targets(memoryview(buffer)[self._pos : self._pos + available])
                    assert not len(rest)
                    del rest  # a view of ``buffer``: gone before it is compacted
                    self._pos += available
                    self._fragment = None
                self._compact()
                return NEED_DATA
            end = self._pos + length
            record: bytes | memoryview
            self._placed = None
            if (
                self._last
                and not self._record
                and handover
                and end == len(buffer)
                and (length >= _HANDOVER_MIN)
            ):
                record = memoryview(buffer)[self._pos : end]  # no copy: a new buffer from now
                self._buffer = bytearray()
                self._pos = 0
                self._fragment = None
                return record
            if self._last and not self._record:  # one-fragment record: one copy
                with memoryview(buffer) as view:
                    record = bytes(view[self._pos : end])
            else:
                self._record += buffer[self._pos : end]
                record = b""
            self._pos = end
            self._fragment = None
            if self._last:
                if not record:
                    record = bytes(self._record)
                    self._record.clear()
                self._compact()
                return record

    def _in_place(
        self, length: int, buffer: bytearray, available: int
    ) -> list[tuple[memoryview | None, int]]:
        """Where a record of ``length`` bytes (<= max_size) goes: the placement's buffer
        for the stretch it asks for (head and tail in small buffers), else one buffer:
        the previous one when it is large enough and nothing refers to it any more (a
        fresh 100 MB buffer costs ~50 ms of page faults), else a new one, kept."""
        placement, self._placement = self._placement, None
        if placement is not None:
            with memoryview(buffer) as view:
                wish = placement(view[self._pos : self._pos + available], length)
            if wish is not None:
                offset, target = wish
                size = len(target)
                if offset >= 0 and offset + size <= length and size:
                    tail = length - offset - size
                    self._hole = 1
                    return [
                        (memoryview(bytearray(offset)), offset),
                        (target, size),
                        (memoryview(bytearray(tail)), tail),
                    ]
        self._hole = -1
        spare = self._spare
        if spare is not None and len(spare) >= length and _unshared(spare):
            return [(memoryview(spare)[:length], length)]
        self._spare = spare = bytearray(length)
        return [(memoryview(spare), length)]

    def _in_place_record(self, handover: bool) -> bytes | memoryview | type[NEED_DATA]:
        self._skip_full()
        if self._target < len(self._targets):
            return NEED_DATA
        targets, self._targets = self._targets, []
        hole, self._hole = self._hole, -1
        self._target = self._target_filled = self._filled = 0
        if hole < 0:
            self._placed = None
            whole = targets[0][0]
            assert whole is not None
            return whole if handover else bytes(whole)
        head, tail = targets[0][0], targets[2][0]
        assert head is not None and tail is not None
        self._placed = (len(head), targets[1][1])
        return bytes(head) + bytes(tail)

    def _compact(self) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0


def _unshared(buffer: bytearray) -> bool:
    """True when no view of ``buffer`` is alive (resizing it is then allowed); O(1)."""
    try:
        last = buffer[-1]
        del buffer[-1:]  # BufferError while a memoryview of it exists
    except BufferError:
        return False
    buffer.append(last)
    return True
