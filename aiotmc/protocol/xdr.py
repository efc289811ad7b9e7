"""XDR (RFC 4506) encoding: big-endian 32-bit words, variable data padded to 4 bytes.

Only what ONC-RPC and VXI-11 use: ``int``, ``unsigned int``, ``bool``, variable-length
``opaque<>`` and ``string<>``. Decoding never allocates from a length field: a length is
checked against the bytes actually present (and an optional limit) before anything is
sliced. Decode errors are :class:`~aiotmc.RemoteProtocolError` (the peer sent them),
encode errors :class:`~aiotmc.LocalProtocolError` (we were asked for an impossible value).
"""

from __future__ import annotations

import struct
from typing import Final

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._types import BytesLike

__all__ = ["Packer", "Unpacker", "padding"]

_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")
UINT_MAX: Final = 0xFFFFFFFF


def padding(length: int) -> bytes:
    """The zero bytes that follow ``length`` bytes of opaque data."""
    return _PAD[length & 3]


class Packer:
    """Appends XDR items to a growing buffer; :meth:`getvalue` returns the bytes."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def getvalue(self) -> bytes:
        """Everything packed so far."""
        return bytes(self._buffer)

    def pack_uint(self, value: int) -> None:
        """An unsigned 32-bit integer."""
        if not 0 <= value <= UINT_MAX:
            raise LocalProtocolError(f"XDR unsigned int out of range: {value}")
        self._buffer += _U32.pack(value)

    def pack_int(self, value: int) -> None:
        """A signed 32-bit integer."""
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise LocalProtocolError(f"XDR int out of range: {value}")
        self._buffer += _I32.pack(value)

    def pack_bool(self, value: bool) -> None:
        """A boolean (an int, 0 or 1)."""
        self._buffer += _U32.pack(1 if value else 0)

    def pack_opaque(self, data: BytesLike, *, max_size: int = UINT_MAX) -> None:
        """Variable-length opaque data: length, bytes, padding."""
        length = len(memoryview(data).cast("B"))
        if length > max_size:
            raise LocalProtocolError(f"XDR opaque of {length} bytes exceeds {max_size}")
        self.pack_uint(length)
        self._buffer += data
        self._buffer += _PAD[length & 3]

    def pack_string(self, text: str, *, max_size: int = UINT_MAX) -> None:
        """An ASCII string (VXI-11 device names are ASCII)."""
        try:
            data = text.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"XDR string must be ASCII: {text!r}") from None
        self.pack_opaque(data, max_size=max_size)


class Unpacker:
    """Reads XDR items from a buffer without copying it (opaque data is sliced)."""

    __slots__ = ("_pos", "_view")

    def __init__(self, data: BytesLike) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._view) - self._pos

    def _take(self, size: int, what: str) -> memoryview:
        end = self._pos + size
        if end > len(self._view):
            raise RemoteProtocolError(
                f"truncated XDR data: {what} needs {size} bytes at offset {self._pos}, "
                f"{len(self._view) - self._pos} left"
            )
        piece = self._view[self._pos : end]
        self._pos = end
        return piece

    def skip(self, size: int) -> None:
        """Skip ``size`` bytes (RemoteProtocolError if fewer are left)."""
        self._take(size, "fixed fields")

    def unpack_uint(self) -> int:
        """An unsigned 32-bit integer."""
        value: int = _U32.unpack(self._take(4, "unsigned int"))[0]
        return value

    def unpack_int(self) -> int:
        """A signed 32-bit integer."""
        value: int = _I32.unpack(self._take(4, "int"))[0]
        return value

    def unpack_bool(self) -> bool:
        """A boolean; any value but 0 and 1 is an error."""
        value = self.unpack_uint()
        if value > 1:
            raise RemoteProtocolError(f"XDR bool must be 0 or 1, got {value}")
        return value == 1

    def unpack_opaque_view(self, *, max_size: int = UINT_MAX) -> memoryview:
        """Variable-length opaque data as a view into the buffer (no copy)."""
        length = self.unpack_uint()
        if length > max_size:
            raise RemoteProtocolError(f"XDR opaque of {length} bytes exceeds {max_size}")
        data = self._take(length, "opaque data")
        self._take(-length & 3, "opaque padding")
        return data

    def unpack_opaque(self, *, max_size: int = UINT_MAX) -> bytes:
        """Variable-length opaque data, copied out."""
        return self.unpack_opaque_view(max_size=max_size).tobytes()

    def unpack_string(self, *, max_size: int = UINT_MAX) -> str:
        """An ASCII string; other bytes are an error."""
        data = self.unpack_opaque_view(max_size=max_size)
        try:
            return str(data, "ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"XDR string is not ASCII: {data.tobytes()!r}") from None

    def rest(self) -> memoryview:
        """Everything not read yet (e.g. procedure arguments after an RPC header)."""
        piece = self._view[self._pos :]
        self._pos = len(self._view)
        return piece
