"""What a command handler returns, and how it becomes response bytes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from .._types import BytesLike
from ..protocol.ieee4882 import block_header

__all__ = [
    "Block",
    "BytesLike",
    "Later",
    "Raw",
    "Response",
    "format_nr3",
    "render",
    "test_pattern",
]

_PATTERN_256: Final = bytes(range(256))
_pattern_cache: bytes = b""


class Block:
    """A definite-length block response (``#<n><len>`` + payload); the payload is not copied."""

    __slots__ = ("payload",)

    def __init__(self, payload: BytesLike) -> None:
        self.payload = memoryview(payload).cast("B")


class Raw:
    """Bytes sent verbatim in place of a response unit.

    When the last unit of a response is ``Raw`` no terminator is appended, so a fault hook
    can send garbage, a malformed block header or a message with no terminator at all.
    """

    __slots__ = ("data",)

    def __init__(self, data: BytesLike) -> None:
        self.data = data


class Later:
    """A sequential command: ``fn`` runs once no operation is pending (``*WAI`` semantics).

    The rest of the program message, and later messages, wait for it.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Response]) -> None:
        self.fn = fn


Response: TypeAlias = (
    str
    | bytes
    | bytearray
    | memoryview
    | int
    | float
    | Block
    | Raw
    | Later
    | Sequence[float]
    | None
)
"""What a handler returns: ``None`` (no response), text, bytes, a number (``bool`` and
``int`` as NR1, ``float`` as NR3), a sequence of numbers (comma separated), a
:class:`Block`, :class:`Raw` bytes or a :class:`Later`."""


def format_nr3(value: float, digits: int = 9) -> str:
    """Format ``value`` as SCPI NR3 (``+1.234567890E+00``); NaN as 9.91E+37."""
    if math.isnan(value):
        return "+9.91E+37"
    if math.isinf(value):
        return "+9.9E+37" if value > 0 else "-9.9E+37"
    return f"{value:+.{digits}E}"


def render(value: Response) -> list[BytesLike]:
    """Turn a handler's (non-:class:`Later`) response into byte parts (no copies of blocks)."""
    if isinstance(value, str):
        return [value.encode("latin-1")]
    if isinstance(value, bytes | bytearray | memoryview):
        return [value]
    if isinstance(value, Block):
        return [block_header(len(value.payload)), value.payload]
    if isinstance(value, Raw):
        return [value.data]
    if isinstance(value, bool):
        return [b"1" if value else b"0"]
    if isinstance(value, int):
        return [b"%d" % value]
    if isinstance(value, float):
        return [format_nr3(value).encode()]
    if isinstance(value, Sequence):
        return [",".join(format_nr3(float(v)) for v in value).encode()]
    raise TypeError(f"handler returned unsupported response {value!r}")


def test_pattern(size: int) -> memoryview:
    """``size`` bytes 00 01 .. FF 00 01 ..., as a view of one cached buffer (no copy).

    The buffer grows to the largest size asked for and is shared by all devices.
    """
    global _pattern_cache
    if size > len(_pattern_cache):
        _pattern_cache = _PATTERN_256 * -(-size // 256)
    return memoryview(_pattern_cache)[:size]


test_pattern.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
