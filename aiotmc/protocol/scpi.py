"""SCPI program and response text: compound messages (``A?;:B?``) joined and split,
ASCII and binary value lists (sans-IO, stdlib only). Framing a byte stream into
messages is :mod:`aiotmc.protocol.framing`'s job."""

from __future__ import annotations

import math
import operator
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias, TypeVar, overload

from .._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Commands",
    "binary_format",
    "format_values",
    "join_compound",
    "pack_binary",
    "parse_values",
    "split_compound",
    "unpack_binary",
]

T = TypeVar("T")

_WHITESPACE: Final = " \t\r\n"  # SCPI whitespace around compound units


# -- compound responses -------------------------------------------------------------------

_find_split_special = re.compile(r"[;\"'#]").search
_DIGITS: Final = "0123456789"


@overload
def split_compound(response: str) -> list[str]: ...
@overload
def split_compound(response: bytes | bytearray | memoryview) -> list[bytes]: ...
def split_compound(response: str | bytes | bytearray | memoryview) -> list[str] | list[bytes]:
    """Split a compound response (``A?;B?``) on top-level ``;``.

    Semicolons inside strings and blocks (recognised as by :class:`MessageDecoder`) do
    not split. Each element loses leading and trailing whitespace (the terminator too),
    but never bytes of a block payload or string. Block lengths count characters, so
    decode binary responses as latin-1 (or pass ``bytes``, which returns ``bytes``).
    An empty response gives ``[""]``; an unterminated string runs to the end; a block
    cut short is a :class:`~aiotmc.RemoteProtocolError`.

    >>> split_compound('1.0;"a;b";#13abc\\n')
    ['1.0', '"a;b"', '#13abc']
    """
    if not isinstance(response, str):
        text = bytes(response).decode("latin-1")
        return [part.encode("latin-1") for part in split_compound(text)]
    text = response
    n = len(text)
    parts: list[str] = []
    start = pos = protect = 0
    while True:
        match = _find_split_special(text, pos)
        if match is None:
            break
        s = match.start()
        c = text[s]
        if c == ";":
            parts.append(_strip(text, start, s, protect))
            start = pos = protect = s + 1
        elif c == "#":
            if s + 1 == n or text[s + 1] not in _DIGITS:
                pos = s + 1
                continue
            ndigits = int(text[s + 1])
            if ndigits == 0:  # indefinite: the payload runs to the final terminator
                pos = protect = n - 1 if text.endswith("\n") else n
                break
            digits = text[s + 2 : s + 2 + ndigits]
            if len(digits) < ndigits or digits.strip(_DIGITS):
                pos = s + 1  # not a block header: text, as in MessageDecoder
                continue
            end = s + 2 + ndigits + int(digits)
            if end > n:
                raise RemoteProtocolError(
                    f"truncated block in compound response: header announces {int(digits)}"
                    f" characters, {n - s - 2 - ndigits} present"
                )
            pos = protect = end
        elif s == 0 or text[s - 1] in ",; \t\r\n":
            close = s + 1
            while True:
                close = text.find(c, close)
                if close < 0:
                    close = n - 1  # unterminated: the string runs to the end
                    break
                if close + 1 < n and text[close + 1] == c:
                    close += 2
                    continue
                break
            pos = protect = close + 1
        else:
            pos = s + 1
    parts.append(_strip(text, start, n, protect))
    return parts


def _strip(text: str, start: int, end: int, protect: int) -> str:
    """``text[start:end]`` without outer whitespace, keeping everything before ``protect``."""
    segment = text[start:end]
    left = start + len(segment) - len(segment.lstrip(_WHITESPACE))
    right = max(start + len(segment.rstrip(_WHITESPACE)), min(protect, end))
    return text[min(left, right) : right]


# -- ASCII values -------------------------------------------------------------------------


@overload
def parse_values(text: str, *, separator: str = ",") -> list[float]: ...
@overload
def parse_values(text: str, *, converter: Callable[[str], T], separator: str = ",") -> list[T]: ...
def parse_values(
    text: str, *, converter: Callable[[str], Any] = float, separator: str = ","
) -> list[Any]:
    """Parse an ASCII value list (``"1.0,2.5E-3,-4"``) with ``converter`` per item.

    Outer whitespace and the terminator are ignored; an empty response gives ``[]``.
    Items are stripped before conversion. A :class:`~aiotmc.RemoteProtocolError` names
    the first item the converter rejects (with ``ValueError``, ``TypeError`` or
    ``ArithmeticError``) and its index.
    """
    if not separator:
        raise LocalProtocolError("the separator must not be empty")
    body = text.strip()
    if not body:
        return []
    items = body.split(separator)
    if converter is not float and converter is not int:  # those two ignore whitespace
        items = [item.strip() for item in items]
    try:
        return list(map(converter, items))
    except (ValueError, TypeError, ArithmeticError):
        pass
    for index, item in enumerate(items):
        try:
            converter(item)
        except (ValueError, TypeError, ArithmeticError) as exc:
            name = getattr(converter, "__name__", repr(converter))
            raise RemoteProtocolError(
                f"cannot parse item {index} {item.strip()!r} of {len(items)} with {name}: {exc}"
            ) from exc
    raise AssertionError("unreachable: a conversion failed once and then succeeded")


def format_values(values: Iterable[float | int], *, separator: str = ",", fmt: str = "{!r}") -> str:
    """Format numbers for an ASCII write (``"1.5,2,NINF"``).

    With the default ``fmt``, numbers are written as Python's shortest round-trip repr
    of the ``float``/``int`` value (so ``numpy.float64(1.5)`` gives ``1.5``, ``True``
    gives ``1``), and infinities and NaN as the SCPI keywords ``INF``, ``NINF``, ``NAN``.
    Any other ``fmt`` is applied with :meth:`str.format`. A value that cannot be
    formatted raises :class:`~aiotmc.LocalProtocolError` naming its index.
    """
    out: list[str] = []
    default = fmt == "{!r}"
    for index, value in enumerate(values):
        try:
            out.append(_format_number(value) if default else fmt.format(value))
        except (ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
            raise LocalProtocolError(
                f"cannot format value {index} ({value!r}) with {fmt!r}: {exc}"
            ) from exc
    return separator.join(out)


def _format_number(value: object) -> str:
    if isinstance(value, float):
        if math.isfinite(value):
            return float.__repr__(value)
        return "NAN" if math.isnan(value) else ("INF" if value > 0 else "NINF")
    if isinstance(value, int) or hasattr(type(value), "__index__"):
        return int.__repr__(operator.index(value))  # type: ignore[arg-type]
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError("not a number")
    return _format_number(float(value))  # type: ignore[arg-type]


# -- binary values ------------------------------------------------------------------------

_BINARY_TYPES: Final = frozenset("bBhHiIlLqQfde")


def binary_format(datatype: str, *, big_endian: bool) -> str:
    """Return the :mod:`struct` format (``"<f"``, ``">H"``...) for one item.

    ``datatype`` is a struct letter among ``b B h H i I l L q Q f d e``; sizes are the
    standard ones (``l``/``L`` are 4 bytes). Anything else raises
    :class:`~aiotmc.LocalProtocolError`.
    """
    if not isinstance(datatype, str) or datatype not in _BINARY_TYPES or len(datatype) != 1:
        raise LocalProtocolError(
            f"unsupported binary datatype {datatype!r}; use one of {''.join(sorted(_BINARY_TYPES))}"
        )
    return (">" if big_endian else "<") + datatype


def pack_binary(values: Iterable[float | int], datatype: str, *, big_endian: bool) -> bytes:
    """Pack numbers into a block payload (no header)."""
    fmt = binary_format(datatype, big_endian=big_endian)
    items = values if isinstance(values, (list, tuple)) else list(values)
    try:
        return struct.pack(f"{fmt[0]}{len(items)}{fmt[1]}", *items)
    except (struct.error, TypeError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot pack values as {fmt!r}: {exc}") from exc


def unpack_binary(
    payload: bytes | bytearray | memoryview, datatype: str, *, big_endian: bool
) -> list[Any]:
    """Unpack a block payload into numbers (``int`` or ``float`` by ``datatype``).

    Raises :class:`~aiotmc.RemoteProtocolError` if the payload is not a whole number of
    items.
    """
    fmt = binary_format(datatype, big_endian=big_endian)
    view = memoryview(payload).cast("B")
    size = struct.calcsize(fmt)
    count, rest = divmod(len(view), size)
    if rest:
        raise RemoteProtocolError(
            f"binary payload of {len(view)} bytes is not a whole number of"
            f" {size}-byte {datatype!r} items"
        )
    return list(struct.unpack(f"{fmt[0]}{count}{fmt[1]}", view))


Commands: TypeAlias = str | list[str] | tuple[str, ...]
"""One program message unit, or several to be joined with :func:`join_compound`."""


def join_compound(units: Sequence[str]) -> str:
    """Join program message units into one compound program message.

    Units after the first are joined with ``;:`` (back to the root, so every header is
    absolute); common commands (``*OPC``) and already-absolute headers with ``;`` alone,
    since IEEE 488.2 allows no colon before a common command. Empty units are dropped.
    """
    out: list[str] = []
    for unit in units:
        unit = unit.strip()
        if not unit:
            continue
        if out and not unit.startswith(("*", ":")):
            unit = ":" + unit
        out.append(unit)
    return ";".join(out)
