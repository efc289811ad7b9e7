"""IEEE 488.2 arbitrary block data (``#<n><length><payload>``, ``#0<payload>``) and ``*IDN?``.

Stdlib only; no I/O. Errors are :class:`~aiotmc.LocalProtocolError` (the caller asked for
something the standard forbids) or :class:`~aiotmc.RemoteProtocolError` (the instrument
sent something malformed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_BLOCK_LENGTH",
    "BlockHeader",
    "Identity",
    "block_header",
    "block_payload_view",
    "decode_block",
    "encode_block",
    "find_block_header",
    "parse_block_header",
    "parse_idn",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 256 * 1024 * 1024
"""Largest response message (and block payload) accepted unless configured otherwise."""

MAX_BLOCK_LENGTH: Final = 10**9 - 1
"""Largest definite-length payload: the length field has at most 9 digits."""

_HASH: Final = 0x23  # '#'
_ZERO: Final = 0x30  # '0'
_NINE: Final = 0x39  # '9'
_WHITESPACE: Final = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A parsed block header.

    ``header_length`` counts ``#``, the digit count and the length digits (2 for ``#0``).
    ``payload_length`` is ``None`` for an indefinite-length block (``#0``), whose payload
    runs to the final terminator.
    """

    header_length: int
    payload_length: int | None


@dataclass(frozen=True, slots=True)
class Identity:
    """The four fields of an ``*IDN?`` response (IEEE 488.2 section 10.14)."""

    manufacturer: str
    model: str
    serial: str
    firmware: str


def block_header(length: int) -> bytes:
    """Return the definite-length header for a payload of ``length`` bytes.

    >>> block_header(1000)
    b'#41000'
    >>> block_header(0)
    b'#10'
    """
    if length < 0:
        raise LocalProtocolError(f"block length must not be negative, got {length}")
    if length > MAX_BLOCK_LENGTH:
        raise LocalProtocolError(
            f"block of {length} bytes does not fit a 9-digit length field"
            f" (max {MAX_BLOCK_LENGTH}); send it as an indefinite '#0' block"
        )
    digits = str(length).encode("ascii")
    return b"#%d%s" % (len(digits), digits)


def encode_block(payload: bytes | bytearray | memoryview) -> bytes:
    """Return ``payload`` as a definite-length block (header + payload, no terminator)."""
    view = memoryview(payload).cast("B")
    return b"".join((block_header(len(view)), view))


def parse_block_header(
    data: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> BlockHeader | None:
    """Parse the block header at the start of ``data`` (which must start with ``#``).

    Returns ``None`` when more bytes are needed (never more than 11 in all). Raises
    :class:`RemoteProtocolError` when the header is malformed or announces a payload
    larger than ``max_size``; that is detected from the leading length digits as soon
    as they make it certain, and nothing is allocated for the payload.
    """
    return _parse_header(bytes(data[:11]), max_size, "max_size")


def find_block_header(
    data: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[int, BlockHeader | None] | None:
    """Find the block header at the start of a response, after leading whitespace.

    ``None`` when the first other byte is not ``#`` (the response is not a block);
    ``(offset, None)`` when more bytes are needed (``offset``: where the header starts,
    or ``len(data)`` when all of it is whitespace); ``(offset, header)`` once parsed.
    Raises as :func:`parse_block_header` does.
    """
    start = 0
    size = len(data)
    while start < size and data[start] in _WHITESPACE:
        start += 1
    if start == size:
        return start, None
    if data[start] != _HASH:
        return None
    return start, parse_block_header(data[start:], max_size=max_size)


def _parse_header(head: bytes, max_size: int, limit_name: str) -> BlockHeader | None:
    size = len(head)
    if size == 0:
        return None
    if head[0] != _HASH:
        raise RemoteProtocolError(f"expected an IEEE 488.2 block ('#'), got {head!r}")
    if size == 1:
        return None
    count = head[1]
    if not _ZERO <= count <= _NINE:
        raise RemoteProtocolError(f"malformed block header {head[:2]!r}: digit count not 0-9")
    ndigits = count - _ZERO
    if ndigits == 0:
        return BlockHeader(2, None)
    digits = head[2 : 2 + ndigits]
    if digits and not digits.isdigit():
        raise RemoteProtocolError(
            f"malformed block header {head[: 2 + ndigits]!r}: length is not {ndigits} digits"
        )
    missing = ndigits - len(digits)
    least = int(digits or b"0") * 10**missing
    if least > max_size:
        more = f"at least {least}" if missing else str(least)
        raise RemoteProtocolError(
            f"block header announces {more} bytes, more than {limit_name}={max_size}"
        )
    if missing:
        return None
    return BlockHeader(2 + ndigits, least)


def decode_block(
    message: bytes | bytearray | memoryview,
    *,
    terminator: bytes = b"\n",
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> bytes:
    """Return the payload of a response message that is one block.

    See :func:`block_payload_view` (the same, without copying the payload).
    """
    return block_payload_view(message, terminator=terminator, max_size=max_size).tobytes()


def block_payload_view(
    message: bytes | bytearray | memoryview,
    *,
    terminator: bytes = b"\n",
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> memoryview:
    """The payload of a response message that is one block, as a view into ``message``.

    Accepts leading whitespace, then a definite (``#<n><len>``) or indefinite (``#0``)
    block, then an optional terminator and/or whitespace. For ``#0`` the payload runs to
    the end of the message, less one final ``terminator``. Raises
    :class:`RemoteProtocolError` if the message is not a block, is truncated, or has
    anything but whitespace after the block.
    """
    view = memoryview(message).cast("B")
    size = len(view)
    start = 0
    while start < size and view[start] in _WHITESPACE:
        start += 1
    if start == size:
        raise RemoteProtocolError("expected an IEEE 488.2 block, got an empty response")
    if view[start] != _HASH:
        raise RemoteProtocolError(
            f"expected an IEEE 488.2 block, got {view[start : start + 40].tobytes()!r}"
        )
    header = parse_block_header(view[start:], max_size=max_size)
    if header is None:
        raise RemoteProtocolError(f"truncated block header {view[start:].tobytes()!r}")
    begin = start + header.header_length
    if header.payload_length is None:
        end = size
        tlen = len(terminator)
        if tlen and size - begin >= tlen and view[size - tlen :] == terminator:
            end -= tlen
        if end - begin > max_size:
            raise RemoteProtocolError(
                f"indefinite block of {end - begin} bytes, more than max_size={max_size}"
            )
        return view[begin:end]
    end = begin + header.payload_length
    if end > size:
        raise RemoteProtocolError(
            f"truncated block: header announces {header.payload_length} bytes,"
            f" message holds {size - begin}"
        )
    rest = view[end:].tobytes()
    if terminator and rest.endswith(terminator):
        rest = rest[: -len(terminator)]
    if rest.strip(_WHITESPACE):
        raise RemoteProtocolError(f"unexpected bytes after the block: {rest[:40]!r}")
    return view[begin:end]


def parse_idn(text: str) -> Identity:
    """Split an ``*IDN?`` response into its four fields.

    Tolerant: missing fields become ``""``, whitespace and a trailing terminator are
    stripped, and commas beyond the third stay in ``firmware``.

    >>> parse_idn("Rigol Technologies,DS1104Z,DS1ZA0000001,00.04.04.SP3\\n").model
    'DS1104Z'
    """
    fields = [field.strip() for field in text.strip().split(",", 3)]
    fields += [""] * (4 - len(fields))
    return Identity(*fields)
