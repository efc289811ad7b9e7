"""The sink that writes an IEEE 488.2 block arriving across USBTMC transfers into a buffer.

:class:`~aiotmc.transports.usbtmc.UsbtmcTransport` hands each payload view of a response to
a :class:`BlockSink`, which parses the block header (split across views or not) and copies
the payload into the caller's buffer (or a new one), so the response is never assembled
first.
"""

from __future__ import annotations

from typing import Final

from ..._exceptions import RemoteProtocolError
from ...protocol.ieee4882 import BlockHeader, parse_block_header
from .._block_into import buffer_too_small

__all__ = ["BlockSink"]

_DISCARD_LIMIT: Final = 1 << 20  # past an error, read at most this much more, then abort
_WHITESPACE: Final = frozenset(b" \t\r\n")


class BlockSink:
    """Receives a response's payload views and writes a block's payload into ``into``.

    A device error (not a block, a bad header, bytes after the block, an indefinite block
    past ``max_size``) is remembered and raised by :meth:`result` once the message has
    been consumed, so the link stays in step without an abort. If more than
    ``_DISCARD_LIMIT`` bytes follow the error, it is raised from the call instead: the
    transport then aborts the transfer and the device drops the rest of a hostile
    response, rather than it being read over the bus until the deadline.
    """

    def __init__(self, into: memoryview | None, max_size: int, terminator: int) -> None:
        self.into = into
        self.max_size = max_size
        self.terminator = terminator
        self.head = bytearray()
        self.header: BlockHeader | None = None
        self.target: memoryview | None = None
        self.growing: bytearray | None = None  # '#0' without a caller buffer
        self.pos = 0
        self.trailer = bytearray()
        self.error: Exception | None = None
        self.overflow = False
        self.last = -1  # last byte of an indefinite block's message
        self.discarded = 0  # bytes received after an error

    def __call__(self, view: memoryview) -> None:
        if self.error is not None:
            self.discarded += len(view)
            if self.discarded > _DISCARD_LIMIT:
                raise self.error
            return
        if self.header is None:
            rest = self._parse_head(view)
            if rest is None:
                return
            view = rest
        header = self.header
        assert header is not None
        if header.payload_length is None:
            self._indefinite(view)
            return
        left = header.payload_length - self.pos
        if left:
            n = min(left, len(view))
            if self.target is not None:
                self.target[self.pos : self.pos + n] = view[:n]
            self.pos += n
            view = view[n:]
        if len(view) and len(self.trailer) < 64:
            self.trailer += view[:64]
            if bytes(self.trailer).strip():
                self.error = RemoteProtocolError(
                    f"unexpected bytes after the block: {bytes(self.trailer[:40])!r}"
                )

    def _parse_head(self, view: memoryview) -> memoryview | None:
        old = len(self.head)
        self.head += view[:80]
        head = self.head
        start = 0
        while start < len(head) and head[start] in _WHITESPACE:
            start += 1
        if start == len(head):
            if len(head) > 64:
                self.error = RemoteProtocolError("expected an IEEE 488.2 block, got whitespace")
            return None
        if head[start] != 0x23:
            self.error = RemoteProtocolError(
                f"expected an IEEE 488.2 block, got {bytes(head[start : start + 40])!r}"
            )
            return None
        try:
            header = parse_block_header(head[start:], max_size=self.max_size)
        except RemoteProtocolError as exc:
            self.error = exc
            return None
        if header is None:
            return None
        self.header = header
        length = header.payload_length
        if length is not None:
            if self.into is not None and len(self.into) < length:
                self.overflow = True
            elif self.into is not None:
                self.target = self.into[:length]
            else:
                self.target = memoryview(bytearray(length))
        elif self.into is not None:
            self.target = self.into
        else:
            self.growing = bytearray()
        return view[start + header.header_length - old :]

    def _indefinite(self, view: memoryview) -> None:
        n = len(view)
        if not n:
            return
        if self.pos + n > self.max_size + 1:  # +1: the final terminator
            self.error = RemoteProtocolError(f"block exceeds max_size={self.max_size} bytes")
            return
        if self.growing is not None:
            self.growing += view
        elif self.target is not None:
            take = min(n, len(self.target) - self.pos)
            if take > 0:
                self.target[self.pos : self.pos + take] = view[:take]
        self.pos += n
        self.last = view[n - 1]

    def result(self) -> memoryview:
        if self.error is not None:
            raise self.error
        header = self.header
        if header is None:
            raise RemoteProtocolError(f"expected an IEEE 488.2 block, got {bytes(self.head)!r}")
        length = header.payload_length
        if length is None:  # '#0...<NL>': the payload is all but the final terminator
            size = self.pos - (self.last == self.terminator)
            if self.growing is not None:
                return memoryview(self.growing)[:size]
            assert self.target is not None
            if size > len(self.target):
                raise buffer_too_small(size, len(self.target))
            return self.target[:size]
        if self.pos < length:
            raise RemoteProtocolError(f"message ended after {self.pos} of {length} block bytes")
        if bytes(self.trailer).strip():
            raise RemoteProtocolError(
                f"unexpected bytes after the block: {bytes(self.trailer[:40])!r}"
            )
        if self.overflow:
            assert self.into is not None
            raise buffer_too_small(length, len(self.into))
        assert self.target is not None
        return self.target
