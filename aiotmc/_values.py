"""PyVISA's value vocabulary, resolved locally before any I/O: converter codes for ASCII
values (``"f"``, ``"d"``, ``"x"``...), numpy dtype names for binary values (``"int16"``),
and the block header formats (``"ieee"``, ``"hp"``, ``"empty"``).

Every mistake here is the caller's: it raises :class:`TypeError` or :class:`ValueError`,
never an error blaming the instrument.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any, Final

from ._exceptions import RemoteProtocolError

__all__ = [
    "HEADER_FORMATS",
    "binary_letter",
    "numpy_dtype",
    "parse_hp_header",
    "resolve_converter",
    "resolve_format",
]

HEADER_FORMATS: Final = ("ieee", "hp", "empty")

# PyVISA's ASCII converters (pyvisa.util): a format letter names the parser of each item.
_CONVERTERS: Final[dict[str, Callable[[str], Any]]] = {
    "s": str,
    "b": functools.partial(int, base=2),
    "d": int,
    "o": functools.partial(int, base=8),
    "x": functools.partial(int, base=16),
    "X": functools.partial(int, base=16),
    "e": float,
    "E": float,
    "f": float,
    "F": float,
    "g": float,
    "G": float,
}

# numpy dtype names (and struct letters themselves) to struct letters of standard size.
_DTYPE_NAMES: Final = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float16": "e",
    "float32": "f",
    "float64": "d",
    "single": "f",
    "double": "d",
    "half": "e",
}
_LETTERS: Final = frozenset("bBhHiIlLqQfde")
_NUMPY: Final = {
    "b": "i1",
    "B": "u1",
    "h": "i2",
    "H": "u2",
    "i": "i4",
    "I": "u4",
    "l": "i4",
    "L": "u4",
    "q": "i8",
    "Q": "u8",
    "e": "f2",
    "f": "f4",
    "d": "f8",
}


def resolve_converter(converter: object) -> Callable[[str], Any]:
    """A per-item parser from a callable or a PyVISA converter letter."""
    if isinstance(converter, str):
        try:
            return _CONVERTERS[converter]
        except KeyError:
            raise ValueError(
                f"unknown converter {converter!r}: use a callable or one of {' '.join(_CONVERTERS)}"
            ) from None
    if not callable(converter):
        raise TypeError(f"converter must be callable or a letter, got {converter!r}")
    return converter


def resolve_format(converter: object) -> Callable[[Any], str] | str:
    """For writing: a format letter (``"f"``, ``"d"``, ``"e"``, ``"x"``...) as a
    :meth:`str.format` pattern, a callable as it is."""
    if isinstance(converter, str):
        if converter not in _CONVERTERS:
            raise ValueError(f"unknown converter {converter!r} for writing values")
        return "{}" if converter == "s" else "{:" + converter + "}"
    if not callable(converter):
        raise TypeError(f"converter must be callable or a format letter, got {converter!r}")
    return converter


def binary_letter(datatype: object) -> str:
    """The struct letter of ``datatype``: a letter (``"h"``), a numpy dtype name
    (``"int16"``, ``"<f4"`` not accepted: say ``is_big_endian``), or a numpy dtype/type."""
    name = datatype if isinstance(datatype, str) else getattr(datatype, "__name__", None)
    if not isinstance(name, str):  # a numpy.dtype instance
        name = getattr(datatype, "name", None)
    if isinstance(name, str):
        if name in _LETTERS and len(name) == 1:
            return name
        if name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
    raise ValueError(
        f"unsupported binary datatype {datatype!r}: use a struct letter "
        f"({''.join(sorted(_LETTERS))}) or a numpy name ({', '.join(_DTYPE_NAMES)})"
    )


def numpy_dtype(letter: str) -> str:
    """The numpy dtype string of a struct letter, standard sizes (``"l"`` is 4 bytes)."""
    return _NUMPY[letter]


def parse_hp_header(data: bytes | bytearray, *, big_endian: bool) -> int:
    """The payload length of an HP block (``#A`` + 2-byte length), PyVISA's ``'hp'``."""
    if len(data) < 4 or data[:2] != b"#A":
        raise RemoteProtocolError(f"not an HP block (#A<len16>): {bytes(data[:8])!r}")
    (length,) = struct.unpack(">H" if big_endian else "<H", bytes(data[2:4]))
    return int(length)
