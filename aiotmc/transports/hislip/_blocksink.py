"""An IEEE 488.2 block written into the caller's buffer as it arrives (HiSLIP blocks).

The reassembler hands a large Data/DataEnd payload of the awaited answer to a
:class:`BlockSink` instead of a buffer of its own: the block header (``#<n><len>``, after
optional whitespace) and what follows the data (terminator, whitespace) land in small
buffers, the data straight in the caller's ``into`` (the socket reads into it, no copy
in between). Whatever goes wrong (not a block, too large, does not fit) is remembered
and raised by :meth:`finish` once the answer is over; until then the bytes are discarded,
so the stream stays in step. :meth:`abandon` does the same for an answer nobody waits
for any more (timeout, cancellation), so the caller's buffer is not written afterwards.
"""

from __future__ import annotations

from typing import Final

from ..._exceptions import LocalProtocolError, ProtocolError, RemoteProtocolError
from ..._types import BytesLike
from .._block_into import buffer_too_small

__all__ = ["BlockSink"]

_WHITESPACE: Final = b" \t\r\n"
_HASH: Final = 0x23
_MAX_TAIL: Final = 64
_SCRATCH: Final = 64 * 1024


class BlockSink:
    """Receives one answer holding one block into ``into`` (see the module docstring)."""

    __slots__ = (
        "_direct",
        "_head",
        "_length",
        "_scratch",
        "_tail",
        "error",
        "into",
        "max_size",
        "pos",
    )

    def __init__(self, into: memoryview, max_size: int) -> None:
        self.into = into.cast("B") if into.format != "B" else into
        self.max_size = max_size
        self.pos = 0  #: data bytes written into ``into``
        self.error: ProtocolError | None = None
        self._head = bytearray()
        self._length: int | None = None  #: data length; -1: indefinite (``#0``)
        self._tail = bytearray()
        self._scratch = bytearray(_SCRATCH)
        self._direct = False

    def reset(self) -> None:
        """Forget what arrived (the answer was interrupted; another one follows)."""
        self.pos = 0
        self._head.clear()
        self._tail.clear()
        self._length = None
        if not isinstance(self.error, LocalProtocolError):
            self.error = None

    def abandon(self) -> None:
        """Discard the rest: nobody waits for this answer any more."""
        if self.error is None:
            self.error = RemoteProtocolError("the answer was abandoned")

    # -- receiving ---------------------------------------------------------------------------

    def target(self, limit: int) -> memoryview:
        """Where the next at most ``limit`` bytes go (then :meth:`advance`)."""
        length = self._length
        if self.error is None and length is not None and length != 0:
            room = (length if length > 0 else len(self.into)) - self.pos
            if room > 0:
                self._direct = True
                return self.into[self.pos : self.pos + min(limit, room)]
        self._direct = False
        size = self._head_need() if self.error is None and length is None else _SCRATCH
        return memoryview(self._scratch)[: max(1, min(limit, size))]

    def advance(self, count: int) -> None:
        """``count`` bytes were written into :meth:`target`'s view."""
        if self._direct:
            self.pos += count
        else:
            self.write(memoryview(self._scratch)[:count])

    def write(self, data: BytesLike) -> None:
        """Bytes of the answer that arrived elsewhere (a small message, buffered bytes)."""
        view = memoryview(data).cast("B")
        while view and self.error is None:
            length = self._length
            if length is None:
                take = view[: self._head_need()]
                self._head += take
                view = view[len(take) :]
                self._parse_head()
                continue
            room = (length if length > 0 else len(self.into)) - self.pos
            if room > 0 and length != 0:
                take = view[:room]
                self.into[self.pos : self.pos + len(take)] = take
                self.pos += len(take)
                view = view[len(take) :]
                continue
            if length < 0:  # indefinite and the buffer is full
                self.error = LocalProtocolError(
                    f"indefinite block larger than the {len(self.into)}-byte buffer"
                )
                return
            self._tail += view[: _MAX_TAIL + 1 - len(self._tail)]
            if len(self._tail) > _MAX_TAIL:
                self.error = RemoteProtocolError(
                    f"unexpected bytes after the block: {bytes(self._tail[:40])!r}"
                )
            return

    def _head_need(self) -> int:
        head = self._head
        if len(head) < 2:
            return 2 - len(head)
        return max(1, 2 + head[1] - 0x30 - len(head))

    def _parse_head(self) -> None:
        head = self._head
        while head and head[0] in _WHITESPACE:
            del head[0]
        if not head:
            return
        if head[0] != _HASH:
            self.error = RemoteProtocolError(f"expected an IEEE 488.2 block, got {bytes(head)!r}")
            return
        if len(head) < 2:
            return
        digits = head[1] - 0x30
        if not 0 <= digits <= 9:
            self.error = RemoteProtocolError(f"bad block header {bytes(head)!r}")
            return
        if digits == 0:
            self._length = -1
            return
        if len(head) < 2 + digits:
            return
        text = bytes(head[2 : 2 + digits])
        if not text.isdigit():
            self.error = RemoteProtocolError(f"bad block header {bytes(head)!r}")
            return
        length = int(text)
        if length > self.max_size:
            self.error = RemoteProtocolError(
                f"block of {length} bytes, more than max_size={self.max_size}"
            )
        elif length > len(self.into):
            self.error = buffer_too_small(length, len(self.into))
        self._length = length

    # -- the end -----------------------------------------------------------------------------

    def finish(self, terminator: bytes = b"\n") -> memoryview:
        """The data written into ``into``; raises what went wrong."""
        if self.error is not None:
            raise self.error
        length = self._length
        if length is None:
            if not self._head:
                raise RemoteProtocolError("expected an IEEE 488.2 block, got an empty response")
            raise RemoteProtocolError(f"truncated block header {bytes(self._head)!r}")
        if length < 0:
            end = self.pos
            if terminator and self.into[end - len(terminator) : end] == terminator:
                end -= len(terminator)
            if end > self.max_size:
                raise RemoteProtocolError(
                    f"indefinite block of {end} bytes, more than max_size={self.max_size}"
                )
            return self.into[:end]
        if self.pos < length:
            raise RemoteProtocolError(
                f"truncated block: header announces {length} bytes, message holds {self.pos}"
            )
        rest = bytes(self._tail)
        if terminator and rest.endswith(terminator):
            rest = rest[: -len(terminator)]
        if rest.strip(_WHITESPACE):
            raise RemoteProtocolError(f"unexpected bytes after the block: {rest[:40]!r}")
        return self.into[:length]
