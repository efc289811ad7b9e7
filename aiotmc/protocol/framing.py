"""SCPI response framing: bytes in, messages out (sans-IO, stdlib only).

:class:`MessageDecoder` frames a byte stream (raw TCP socket, later serial) into response
messages. A definite-length block may contain the terminator anywhere, so only a
block-aware reader knows where a message ends; ``receive_until(b"\\n")`` would cut binary
data.

Response grammar the decoder understands (IEEE 488.2 section 8.7, read tolerantly):

* ``#<d><d digits>`` (``d`` = 1-9) starts a definite-length block; its payload is skipped
  by count, never scanned.
* ``#0`` starts an indefinite-length block: the payload runs to the next terminator.
* ``#`` followed by anything else (``#H1F``, ``#B101``, ``#Q17``, ``CH#1A``) is text: a
  framer cannot tell a broken block header from text, and text is what it is more often.
  :func:`~aiotmc.protocol.ieee4882.decode_block` is strict when a block is expected.
* ``"`` or ``'`` opens a string when it starts a data element: at the start of the
  message or after ``,``, ``;`` or whitespace. Inside, a doubled quote is a literal quote
  and the terminator is data. A quote inside a word (``O'Neil``, ``5.0"``) is text, so an
  apostrophe in plain text cannot swallow the terminator.

The only errors are a message longer than ``max_message_size`` (raised as soon as it is
known, e.g. from a block header) and EOF in the middle of a message.
"""

from __future__ import annotations

from typing import Final

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .ieee4882 import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["NEED_DATA", "MessageDecoder"]


class _SentinelMeta(type):
    def __repr__(cls) -> str:
        return cls.__name__


class NEED_DATA(metaclass=_SentinelMeta):
    """Returned (the class itself, h11 style) when more bytes are needed for a message."""


# Scanner modes.
_PLAIN: Final = 0  # between data elements / inside plain text
_DQUOTE: Final = 1  # inside "..."
_SQUOTE: Final = 2  # inside '...'
_BLOCK: Final = 3  # inside a definite-length block payload (ends at _block_end)
_RAW: Final = 4  # inside a '#0' payload: only the terminator matters

_HASH: Final = 0x23
_DQ: Final = 0x22
_SQ: Final = 0x27
_ZERO: Final = 0x30
_NINE: Final = 0x39
_OPENERS: Final = frozenset(b",; \t\r\n")  # a quote after one of these opens a string


class MessageDecoder:
    """Frames a byte stream into response messages on the terminator.

    A message never ends inside a definite-length block (``#<n><len>...``) or a quoted
    string (``"..."`` or ``'...'`` with doubled-quote escapes); see the module docstring
    for the exact grammar. Feed bytes with :meth:`receive_data` and take messages with
    :meth:`next_message` until it returns :class:`NEED_DATA`.

    Work is O(n) over the stream: the scan position is remembered between calls, block
    payloads are skipped by arithmetic, and consumed bytes are dropped from the front of
    a ``bytearray`` (O(1) in CPython).

    Errors (:class:`~aiotmc.RemoteProtocolError`) are sticky: :meth:`next_message` raises
    again until :meth:`discard_current` or :meth:`reset` is called.
    """

    __slots__ = (
        "_block_end",
        "_buf",
        "_discarding",
        "_eof",
        "_error",
        "_max",
        "_mode",
        "_pos",
        "_started",
        "_term",
        "_tlen",
    )

    def __init__(
        self,
        *,
        terminator: bytes = b"\n",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        term = bytes(terminator)
        if not term:
            raise LocalProtocolError("the terminator must not be empty")
        if any(c in term for c in b"#\"'"):
            raise LocalProtocolError(f"the terminator {term!r} must not contain '#', '\"' or \"'\"")
        if max_message_size < 1:
            raise LocalProtocolError(f"max_message_size must be positive, got {max_message_size}")
        self._term = term
        self._tlen = len(term)
        self._max = max_message_size
        self._buf = bytearray()
        self._eof = False
        self._reset_scan()

    def _reset_scan(self) -> None:
        self._pos = 0  # scan offset; the buffer always starts at the current message
        self._started = False  # next_message() saw part of the current message
        self._mode = _PLAIN
        self._block_end = 0
        self._discarding = False
        self._error: str | None = None

    # -- properties ----------------------------------------------------------------------

    @property
    def terminator(self) -> bytes:
        """The response message terminator."""
        return self._term

    @property
    def max_message_size(self) -> int:
        """Largest message :meth:`next_message` returns (terminator included)."""
        return self._max

    @property
    def eof(self) -> bool:
        """True once ``receive_data(b"")`` was called (until :meth:`reset`)."""
        return self._eof

    @property
    def pending(self) -> int:
        """How many unconsumed bytes are buffered (cheaper than ``len(buffered)``)."""
        return len(self._buf)

    @property
    def buffered(self) -> memoryview:
        """The unconsumed bytes, read-only; valid until the next mutating call."""
        return memoryview(self._buf).toreadonly()

    @property
    def at_message_start(self) -> bool:
        """True when no partial message is pending: no error, no discard in progress, and
        :meth:`next_message` has not returned :class:`NEED_DATA` on part of a message.

        Bytes already buffered (see :attr:`buffered`) then start a new message, and a
        caller may parse and :meth:`consume` them itself.
        """
        return not self._started and self._error is None and not self._discarding

    # -- feeding and consuming -----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer; ``b""`` signals EOF.

        While a message is being discarded (:meth:`discard_current`), its bytes are
        dropped here as they arrive.
        """
        if not data:
            self._eof = True
            if self._discarding:
                self._skip()
            return
        if self._eof:
            raise LocalProtocolError("receive_data() called after EOF")
        try:
            self._buf += data
        except BufferError:  # a view from .buffered is still alive: switch buffers
            self._buf = self._buf + data
        if self._discarding:  # drop a discarded message's bytes as they arrive
            self._skip()

    def consume(self, n: int) -> None:
        """Drop ``n`` unconsumed bytes from the front and take over framing.

        For callers that read part of a message themselves (block payloads straight into
        a user buffer). The scan state (and any error) is reset: the remaining bytes are
        scanned afresh as the start of a message.
        """
        if not 0 <= n <= len(self._buf):
            raise LocalProtocolError(f"cannot consume {n} bytes, {len(self._buf)} buffered")
        self._drop(n)
        self._reset_scan()

    def reset(self) -> None:
        """Drop all buffered bytes and all state, including EOF (for a new connection)."""
        self._drop(len(self._buf))
        self._eof = False
        self._reset_scan()

    def discard_current(self) -> None:
        """Abandon the current (broken or unwanted) message and resynchronise.

        The message's bytes are dropped now, and so is everything :meth:`receive_data`
        gets later up to and including the end of that message; :attr:`at_message_start`
        tells when that point was reached, and :meth:`next_message` continues from there
        (calling this again meanwhile is harmless). The end is found as for any message:
        the scan keeps following the message's structure, skips a block by its announced
        length (an oversized block too, without buffering it) and stops after the
        terminator. After EOF, everything buffered is dropped.

        When :attr:`at_message_start` is true there is no current message and this does
        nothing (bytes of the next message that are already buffered are kept).
        """
        if self._error is not None:
            self._error = None
        elif self.at_message_start:
            return
        self._discarding = True
        self._skip()

    # -- framing -------------------------------------------------------------------------

    def next_message(self) -> bytes | type[NEED_DATA]:
        """Return the next complete message, terminator included, or :class:`NEED_DATA`.

        Raises :class:`~aiotmc.RemoteProtocolError` if the message is (or will be, as a
        block header announces) longer than ``max_message_size``, or if EOF arrived with
        a partial message pending ("connection closed mid-message").
        """
        buf = self._buf
        if self._mode == _PLAIN and self._error is None and not self._discarding:
            # Fast paths for plain text ('*IDN?' answers, numbers, long ASCII lists arriving
            # in chunks) with no '#' or quote before the terminator: memchr only.
            if not buf:
                return NEED_DATA
            pos = self._pos
            t = buf.find(self._term, pos)
            if t >= 0:
                end = t + self._tlen
                if end == len(buf) and pos == 0:  # exactly one message buffered: typical
                    if _HASH not in buf and _DQ not in buf and _SQ not in buf and end <= self._max:
                        message = bytes(buf)
                        self._drop(end)
                        self._started = False
                        return message
                elif (
                    buf.find(_HASH, pos, t) < 0
                    and buf.find(_DQ, pos, t) < 0
                    and buf.find(_SQ, pos, t) < 0
                    and end <= self._max
                ):
                    self._pos = 0
                    self._started = False
                    return self._take(end)
            else:
                n = len(buf)
                if (
                    buf.find(_HASH, pos) < 0
                    and buf.find(_DQ, pos) < 0
                    and buf.find(_SQ, pos) < 0
                    and n <= self._max
                    and not self._eof
                ):
                    self._pos = max(pos, n - self._tlen + 1)
                    self._started = True
                    return NEED_DATA
        return self._next_slow()

    def receive_and_next(self, data: bytes | bytearray | memoryview) -> bytes | type[NEED_DATA]:
        """:meth:`receive_data` then :meth:`next_message`, in one call.

        The typical answer (nothing buffered, ``data`` is exactly one plain message) is
        returned without passing through the buffer.
        """
        if (
            not self._buf
            and self._mode == _PLAIN
            and self._error is None
            and not self._discarding
            and not self._eof
            and data
        ):
            message = bytes(data)
            end = message.find(self._term) + self._tlen
            if (
                end == len(message)
                and end >= self._tlen
                and _HASH not in message
                and _DQ not in message
                and _SQ not in message
                and len(message) <= self._max
            ):
                self._started = False
                return message
            self.receive_data(message)
        else:
            self.receive_data(data)
        return self.next_message()

    def _next_slow(self) -> bytes | type[NEED_DATA]:
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if self._discarding:  # receive_data() advances a discard: nothing more to do yet
            return NEED_DATA
        end = self._scan()
        if end >= 0:
            if end > self._max:
                self._fail(
                    f"response message of {end} bytes, more than max_message_size={self._max}"
                )
            self._reset_scan()
            return self._take(end)
        n = len(self._buf)
        if n > self._max:
            self._fail(
                f"response message exceeds max_message_size={self._max}"
                f" ({n} bytes received, no terminator yet)"
            )
        if self._eof and n:
            self._fail(f"connection closed mid-message ({n} bytes pending)")
        self._started = n > 0
        return NEED_DATA

    def _fail(self, message: str) -> None:
        self._error = message
        raise RemoteProtocolError(message)

    def _take(self, end: int) -> bytes:
        buf = self._buf
        if end == len(buf):
            message = bytes(buf)
        else:
            with memoryview(buf) as view:
                message = view[:end].tobytes()
        self._drop(end)
        return message

    def _drop(self, n: int) -> None:
        try:
            del self._buf[:n]
        except BufferError:  # a view from .buffered is still alive: switch buffers
            self._buf = self._buf[n:]

    def _skip(self) -> None:
        """Advance a discard: drop scanned bytes; stop after the discarded message."""
        end = self._scan()
        if end >= 0:
            self._drop(end)
            self._reset_scan()
            return
        # Drop what was scanned but keep one byte: whether a quote opens a string
        # depends on the byte before it.
        drop = self._pos - 1 if self._pos else 0
        self._drop(drop)
        self._block_end -= drop
        self._pos -= drop
        if self._eof:
            self._drop(len(self._buf))
            self._reset_scan()

    def _scan(self) -> int:
        """Scan from the saved position; return the message end, or -1 if incomplete.

        Saves the position and mode for the next call. Outside discard mode, raises on an
        oversized block header.
        """
        buf = self._buf
        n = len(buf)
        term = self._term
        tlen = self._tlen
        pos = self._pos
        mode = self._mode
        t = -2  # cached buf.find(term, p) for some p <= pos: valid if -1 or >= pos
        limit = h = dq = sq = -2
        try:
            while True:
                if mode == _PLAIN:
                    if t == -2 or 0 <= t < pos:
                        t = buf.find(term, pos)
                        limit = n if t < 0 else t
                        h = dq = sq = -2
                    # Next '#', '"' and "'" before the limit, each cached while valid
                    # (-1: none before the limit), so every byte is searched once per char.
                    if h < pos and h != -1:
                        h = buf.find(_HASH, pos, limit)
                    if dq < pos and dq != -1:
                        dq = buf.find(_DQ, pos, limit)
                    if sq < pos and sq != -1:
                        sq = buf.find(_SQ, pos, limit)
                    s = limit
                    if 0 <= h < s:
                        s = h
                    if 0 <= dq < s:
                        s = dq
                    if 0 <= sq < s:
                        s = sq
                    if s == limit:
                        if t >= 0:
                            return t + tlen
                        pos = max(pos, n - tlen + 1)
                        return -1
                    c = buf[s]
                    if c == _HASH:
                        if s + 1 == n:
                            pos = s
                            return -1
                        d = buf[s + 1]
                        if not _ZERO <= d <= _NINE:
                            pos = s + 1  # '#H1F', '#B101', stray '#': text
                        elif d == _ZERO:
                            pos = s + 2
                            mode = _RAW
                        else:
                            stop = s + 2 + d - _ZERO  # end of the length digits
                            digits = buf[s + 2 : stop]
                            if digits and not digits.isdigit():
                                pos = s + 1  # not a block header ('#2A'): text
                                continue
                            pos = s  # wait for the header here; errors leave the scan here
                            if stop > n:
                                return -1
                            self._block_end = end = stop + int(digits)
                            if end > self._max and not self._discarding:
                                # discard_current() re-reads the header, skips by count.
                                size = end - stop
                                self._fail(
                                    f"block header announces {size} bytes, more than"
                                    f" max_message_size={self._max}"
                                    if size > self._max
                                    else f"a block of {size} bytes makes the message at least"
                                    f" {end} bytes, more than max_message_size={self._max}"
                                )
                            pos = stop
                            mode = _BLOCK
                    elif s == 0 or buf[s - 1] in _OPENERS:
                        pos = s + 1
                        mode = _DQUOTE if c == _DQ else _SQUOTE
                    else:
                        pos = s + 1  # a quote inside a word: text
                elif mode == _BLOCK:
                    if self._block_end > n:
                        pos = n
                        return -1
                    pos = self._block_end
                    mode = _PLAIN
                elif mode == _RAW:
                    if t == -2 or 0 <= t < pos:
                        t = buf.find(term, pos)
                    if t < 0:
                        pos = max(pos, n - tlen + 1)
                        return -1
                    return t + tlen
                else:
                    quote = _DQ if mode == _DQUOTE else _SQ
                    q = buf.find(quote, pos)
                    if q < 0:
                        pos = n
                        return -1
                    if q + 1 == n and not self._eof:
                        pos = q  # a doubled quote or the closing one: need the next byte
                        return -1
                    if q + 1 < n and buf[q + 1] == quote:
                        pos = q + 2
                    else:
                        pos = q + 1
                        mode = _PLAIN
        finally:
            self._pos = pos
            self._mode = mode
