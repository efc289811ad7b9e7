"""A definite-length block read by device_read straight into the caller's buffer.

:class:`BlockInto` follows the data of the device_read replies of one response message:
leading whitespace and the ``#<n><len>`` header, the payload (into the caller's buffer),
then only whitespace. Its :meth:`BlockInto.place` is the RPC record placement (see
:data:`aiotmc.protocol.oncrpc.Placement`): for a large device_read reply it names the
stretch of the record that is payload, so the socket writes it where it belongs and no
copy is made; a reply that is not placed (small, or the reassembler decided otherwise) is
fed byte by byte (:meth:`BlockInto.feed`, one copy of its payload part).
"""

from __future__ import annotations

import struct
from typing import Final

from ..._exceptions import LocalProtocolError, RemoteProtocolError
from ...protocol.ieee4882 import parse_block_header

__all__ = ["BlockInto", "IndefiniteBlock"]

_REPLY_OK: Final = struct.Struct(">IIIIII")  # xid, REPLY, ACCEPTED, verf, verf len, SUCCESS
_READ_HEAD: Final = struct.Struct(">iiI")  # device_read: error, reason, data length
_DATA: Final = _REPLY_OK.size + _READ_HEAD.size  # where the data starts in the record
_WHITESPACE: Final = b" \t\r\n"


class BlockInto:
    """The state of one block being read into ``into`` (at most ``max_size`` bytes)."""

    __slots__ = ("_head", "into", "max_size", "payload", "pos", "trailer")

    def __init__(self, into: memoryview, *, max_size: int) -> None:
        self.into = into
        self.max_size = max_size
        self._head = bytearray()  # whitespace and header bytes until the header parses
        self.payload: int | None = None  # payload length, once the header is known
        self.pos = 0  # payload bytes in ``into`` so far
        self.trailer = bytearray()  # what came after the payload (bounded)

    @property
    def started(self) -> bool:
        """True once any data was taken."""
        return bool(self._head) or self.payload is not None

    def _header(self, data: bytes) -> tuple[int, int] | None:
        """(bytes the header takes, payload length) at the start of ``data`` (which
        continues ``_head``), or None when it needs more; RemoteProtocolError if it is
        no definite-length block or does not fit."""
        text = bytes(self._head) + data
        start = len(text) - len(text.lstrip(_WHITESPACE))
        if start == len(text):
            return None
        if text[start] != 0x23:  # "#"
            raise RemoteProtocolError(
                f"expected an IEEE 488.2 block, got {text[start : start + 40]!r}"
            )
        header = parse_block_header(text[start:], max_size=self.max_size)
        if header is None:
            return None
        if header.payload_length is None:
            raise IndefiniteBlock
        if header.payload_length > len(self.into):
            raise LocalProtocolError(
                f"block of {header.payload_length} bytes does not fit the "
                f"{len(self.into)}-byte buffer"
            )
        return start + header.header_length - len(self._head), header.payload_length

    def place(self, prefix: memoryview, length: int) -> tuple[int, memoryview] | None:
        """The placement for a device_read reply record (its first bytes ``prefix``):
        which stretch of it is payload, and where in ``into`` it goes. Pure: nothing
        changes until the reply is fed."""
        if len(prefix) < _DATA:
            return None
        _, kind, status, _, verf, stat = _REPLY_OK.unpack_from(prefix)
        error, _, size = _READ_HEAD.unpack_from(prefix, _REPLY_OK.size)
        if (kind, status, verf, stat, error) != (1, 0, 0, 0, 0) or _DATA + size > length:
            return None
        offset = _DATA
        if self.payload is None:
            try:
                found = self._header(bytes(prefix[_DATA : _DATA + min(size, 64)]))
            except (RemoteProtocolError, LocalProtocolError, IndefiniteBlock):
                return None  # the usual way reports it
            if found is None:
                return None
            taken, payload = found
            offset += taken
            count = min(payload, size - taken)
            return (offset, self.into[:count]) if count > 0 else None
        count = min(self.payload - self.pos, size)
        return (offset, self.into[self.pos : self.pos + count]) if count > 0 else None

    def feed(self, data: memoryview | bytes) -> None:
        """Take data bytes that were not placed (copied into ``into`` where payload)."""
        view = memoryview(data).cast("B")
        if self.payload is None and len(view):
            found = self._header(bytes(view))
            if found is None:
                self._head += view
                if len(self._head) > 64:
                    raise RemoteProtocolError(f"no block header in {bytes(self._head[:40])!r}")
                return
            taken, self.payload = found
            self._head.clear()
            view = view[taken:]
        if self.payload is None:
            return
        count = min(self.payload - self.pos, len(view))
        if count:
            self.into[self.pos : self.pos + count] = view[:count]
            self.pos += count
        rest = view[count:]
        if len(rest):
            self.trailer += rest
            if len(self.trailer) > 64 or bytes(self.trailer).strip(_WHITESPACE):
                raise RemoteProtocolError(
                    f"unexpected data after the block: {bytes(self.trailer[:40])!r}"
                )

    def placed(self, count: int) -> None:
        """``count`` payload bytes were placed into ``into`` at ``pos``."""
        assert self.payload is not None and self.pos + count <= self.payload
        self.pos += count

    def result(self) -> memoryview:
        """The payload in ``into``, once the message ended; RemoteProtocolError if the
        block is incomplete."""
        if self.payload is None:
            raise RemoteProtocolError("expected an IEEE 488.2 block, got an empty response")
        if self.pos < self.payload:
            raise RemoteProtocolError(
                f"truncated block: {self.pos} of {self.payload} payload bytes"
            )
        return self.into[: self.payload]


class IndefiniteBlock(Exception):
    """An indefinite-length (``#0``) block: it cannot be placed."""
