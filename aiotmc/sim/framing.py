"""Frame program messages sent by one untrusted client (sans-IO, stdlib only).

:class:`ProgramFramer` finds where each program message of a byte stream ends: at a
newline that is not inside a definite block (``#<n><len>``, skipped by count) or a quoted
string. It is the server-side input stage, built to be cheap for hostile input:

* memory grows only with bytes actually received: a block header is never used to
  allocate anything, and nothing is buffered beyond the current message;
* the text of a message (everything but definite-block payloads) is limited by
  ``max_text_size``, the whole message by ``max_message_size``, and the number of
  blocks and strings (the places where the scan runs Python code) by ``max_elements``;
* scanning is done by ``re``/``bytes.find`` in C, resuming where it stopped, so the work
  is linear in the bytes received; after a violation the rest of the message is
  dropped as it arrives (to the next newline, a block's payload by count), never buffered.

A violation raises :class:`FramingError` once; the next call continues after the
offending message. Quotes open a string only where a data element starts (at the start
of the message or after ``,``, ``;`` or whitespace), as in
:class:`~aiotmc.protocol.scpi.MessageDecoder`.
"""

from __future__ import annotations

import re
from typing import Final

from .._types import BytesLike
from ..protocol import NEED_DATA

__all__ = ["FramingError", "ProgramFramer"]

_PLAIN: Final = 0
_STRING: Final = 1
_BLOCK: Final = 2
_RAW: Final = 3  # '#0' indefinite block: runs to the newline

_SPECIAL = re.compile(rb"[\n#\"']")
_NL: Final = 0x0A
_HASH: Final = 0x23
_ZERO: Final = 0x30
_NINE: Final = 0x39
_OPENERS: Final = frozenset(b",; \t\r\n")
_SMALL: Final = 4096  # messages up to this size are returned as bytes


class FramingError(Exception):
    """A client broke a framing limit; ``kind`` names the limit (for logs and counters)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ProgramFramer:
    """Split a client's byte stream into program messages, within fixed limits.

    :meth:`feed` bytes as they arrive (``b""`` at EOF); :meth:`next_message` returns the
    next complete message (newline included) or :class:`~aiotmc.protocol.NEED_DATA`,
    and raises :class:`FramingError` when the current message breaks a limit.
    """

    __slots__ = (
        "_block_end",
        "_buf",
        "_elements",
        "_eof",
        "_max_elements",
        "_max_message",
        "_max_text",
        "_mode",
        "_payload",
        "_pos",
        "_quote",
        "_skip",
        "_skip_line",
    )

    def __init__(self, *, max_text_size: int, max_message_size: int, max_elements: int) -> None:
        if min(max_text_size, max_message_size, max_elements) < 1:
            raise ValueError("framing limits must be positive")
        self._max_text = max_text_size
        self._max_message = max_message_size
        self._max_elements = max_elements
        self._buf = bytearray()
        self._eof = False
        self._skip = 0  # payload bytes of a rejected block still to drop
        self._skip_line = False  # drop up to and including the next newline
        self._restart()

    def _restart(self) -> None:
        self._pos = 0
        self._mode = _PLAIN
        self._quote = 0
        self._block_end = 0
        self._payload = 0  # definite-block payload bytes in the current message
        self._elements = 0

    @property
    def pending(self) -> int:
        """Bytes buffered (the current partial message and what follows it)."""
        return len(self._buf)

    @property
    def eof(self) -> bool:
        """True once ``feed(b"")`` was called."""
        return self._eof

    def feed(self, data: BytesLike) -> None:
        """Append received bytes; ``b""`` marks EOF. Rejected bytes are dropped here."""
        if not data:
            self._eof = True
            return
        self._buf += data
        if self._skip or self._skip_line:
            self._discard()

    def next_message(self) -> bytes | bytearray | type[NEED_DATA]:
        """The next complete program message, or ``NEED_DATA``; raises FramingError."""
        if self._skip or self._skip_line:
            self._discard()
            if self._skip or self._skip_line:
                return NEED_DATA
        buf = self._buf
        n = len(buf)
        pos = self._pos
        mode = self._mode
        try:
            while True:
                # Text may run up to (not including) ``limit``; a newline at ``limit - 1``
                # is still in. Searches stop there, so a violation is found at the same
                # place however the stream was cut.
                limit = self._payload + self._max_text + 1
                end = min(n, limit)
                if mode == _PLAIN:
                    m = _SPECIAL.search(buf, pos, end)
                    if m is None:
                        pos = end
                        return self._need(n, limit)
                    s = m.start()
                    c = buf[s]
                    if c == _NL:
                        message = self._take(s + 1)
                        pos, mode = 0, _PLAIN
                        return message
                    if c == _HASH:
                        if s + 1 >= limit:  # only a byte past the limit could tell
                            pos = s
                            return self._need(limit, limit)
                        if s + 1 == n:
                            pos = s
                            return self._need(n, limit)
                        d = buf[s + 1]
                        if not _ZERO < d <= _NINE:
                            self._count_element(s)
                            if d == _ZERO:
                                pos = s + 2
                                mode = _RAW
                            else:
                                pos = s + 1  # '#H1F', a stray '#': text
                            continue
                        stop = s + 2 + d - _ZERO
                        digits = buf[s + 2 : min(stop, n, limit)]
                        if digits and not digits.isdigit():
                            self._count_element(s)
                            pos = s + 1  # '#2x': not a block header, text
                            continue
                        if stop > limit:  # the header crosses the limit
                            pos = s
                            return self._need(n, limit)
                        if stop > n:
                            pos = s  # wait for the whole header
                            return NEED_DATA
                        self._count_element(s)
                        length = int(digits)
                        if stop + length > self._max_message:
                            self._reject_block(stop, length)
                        self._block_end = stop + length
                        self._payload += length
                        pos = stop
                        mode = _BLOCK
                    else:
                        self._count_element(s)
                        if s == 0 or buf[s - 1] in _OPENERS:
                            self._quote = c
                            pos = s + 1
                            mode = _STRING
                        else:
                            pos = s + 1  # a quote inside a word: text
                elif mode == _STRING:
                    k = buf.find(self._quote, pos, end)
                    if k < 0 or k + 1 == n or k + 1 == limit:  # (is the quote doubled?)
                        pos = end if k < 0 else k
                        return self._need(n, limit)
                    if buf[k + 1] == self._quote:
                        self._count_element(k)
                        pos = k + 2
                    else:
                        pos = k + 1
                        mode = _PLAIN
                elif mode == _BLOCK:
                    if self._block_end > n:
                        return NEED_DATA
                    pos = self._block_end
                    mode = _PLAIN
                else:  # _RAW
                    k = buf.find(b"\n", pos, end)
                    if k < 0:
                        pos = end
                        return self._need(n, limit)
                    message = self._take(k + 1)
                    pos, mode = 0, _PLAIN
                    return message
        except FramingError:
            pos, mode = 0, _PLAIN  # the rejecting call reset the rest
            raise
        finally:
            self._pos = pos
            self._mode = mode

    # -- internals -------------------------------------------------------------------------

    def _take(self, end: int) -> bytes | bytearray:
        buf = self._buf
        message: bytes | bytearray
        if end <= _SMALL:
            with memoryview(buf) as view:
                message = view[:end].tobytes()  # bytes: the device caches their parse
            del buf[:end]
        elif end == len(buf):
            message = buf  # a large message, alone: hand the buffer over, no copy
            self._buf = bytearray()
        elif len(buf) - end < end:  # a large message: keep it, move what follows
            self._buf = buf[end:]
            del buf[end:]
            message = buf
        else:
            with memoryview(buf) as view:
                message = view[:end].tobytes()
            del buf[:end]
        self._restart()
        return message

    def _need(self, n: int, limit: int) -> type[NEED_DATA]:
        """NEED_DATA, or a violation if the text already reaches ``limit``."""
        if n >= limit:
            self._reject_line(
                limit - 1,
                "text too long",
                f"program message text exceeds max_text_size={self._max_text} bytes",
            )
        return NEED_DATA

    def _count_element(self, pos: int) -> None:
        self._elements += 1
        if self._elements > self._max_elements:
            self._reject_line(
                pos,
                "too many elements",
                f"more than {self._max_elements} blocks and strings in one program message",
            )

    def _reject_line(self, pos: int, kind: str, detail: str) -> None:
        """Drop the message: what was scanned (up to ``pos``), then up to a newline."""
        del self._buf[:pos]
        self._skip_line = True
        self._discard()
        self._restart()
        raise FramingError(kind, detail)

    def _reject_block(self, stop: int, length: int) -> None:
        del self._buf[:stop]
        self._skip = length
        self._skip_line = True
        self._restart()
        raise FramingError(
            "block too large",
            f"block of {length} bytes makes the message longer than"
            f" max_message_size={self._max_message}",
        )

    def _discard(self) -> None:
        buf = self._buf
        if self._skip:
            drop = min(self._skip, len(buf))
            del buf[:drop]
            self._skip -= drop
            if self._skip:
                return
        k = buf.find(b"\n")
        if k < 0:
            buf.clear()
            return
        del buf[: k + 1]
        self._skip_line = False
