"""SCPI text ↔ ophyd-async signal values, one converter per datatype.

A converter reads a value with one query (:meth:`ScpiConverter.read`) and formats a value
for a write template (:meth:`ScpiConverter.encode`). Supported datatypes: ``float``,
``int``, ``bool``, ``str``, an ophyd-async enum (:class:`~ophyd_async.core.StrictEnum`,
``SubsetEnum``, ``SupersetEnum``), ``Array1D[numpy.<dtype>]`` (an ASCII list, or an
IEEE 488.2 binary block with ``binary=True``) and ``Sequence[str]`` (an ASCII list).

Errors: an answer that does not parse as the datatype raises
:class:`~aiotmc.RemoteProtocolError` (naming the answer); a value that cannot be written
raises :class:`~aiotmc.LocalProtocolError` before any I/O; an unsupported datatype raises
``TypeError`` when the signal is made.
"""

from __future__ import annotations

import csv
import math
import typing
from collections.abc import Sequence
from enum import Enum
from typing import Any, Final

import numpy as np
from ophyd_async.core import SignalDatatype, get_dtype, get_enum_cls

from .._exceptions import LocalProtocolError, RemoteProtocolError
from ..instrument import Instrument
from ..protocol.scpi import format_values, parse_values

__all__ = ["ScpiConverter", "make_converter", "scpi_short_form"]

_TRUE: Final = frozenset({"1", "ON", "TRUE"})
_FALSE: Final = frozenset({"0", "OFF", "FALSE"})


def scpi_short_form(keyword: str) -> str:
    """The SCPI short form of a mnemonic written in mixed case: ``"IMMediate"`` → ``"IMM"``.

    A keyword with no lowercase letter is its own short form.
    """
    short = "".join(c for c in keyword if not c.islower())
    return short or keyword


def _unquote(text: str) -> str:
    """``"abc"`` → ``abc`` (SCPI doubles an embedded quote: ``""`` → ``"``)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        quote = text[0]
        return text[1:-1].replace(quote * 2, quote)
    return text


class ScpiConverter:
    """Reads and writes one datatype; subclasses override :meth:`parse` and :meth:`encode`."""

    #: A value of the datatype for describe() before any read (scalars only).
    placeholder: Any = None

    async def read(self, instrument: Instrument, query: str) -> Any:
        """Send ``query`` and return its answer as a value of the datatype."""
        return self.parse(await instrument.query(query))

    def parse(self, text: str) -> Any:
        """One answer as a value; :class:`~aiotmc.RemoteProtocolError` if it is not one."""
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        """``value`` as what a write template's ``{value}`` receives (checked, no I/O):
        a number for numeric types (so that ``{value:.3f}`` works), text otherwise."""
        raise NotImplementedError

    def _bad(self, text: str, what: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"the instrument answered {text[:80]!r}, not {what}")


class _Float(ScpiConverter):
    placeholder = 0.0

    def parse(self, text: str) -> float:
        try:
            return float(text.strip())
        except ValueError:
            raise self._bad(text, "a number") from None

    def encode(self, value: Any) -> float | str:
        if isinstance(value, bool | str) or not isinstance(value, int | float | np.number):
            raise LocalProtocolError(f"{value!r} is not a number")
        number = float(value)
        return number if math.isfinite(number) else format_values([number])  # INF, NINF, NAN


class _Int(ScpiConverter):
    placeholder = 0

    def parse(self, text: str) -> int:
        body = text.strip()
        try:
            return int(body)
        except ValueError:
            pass
        try:  # NR3: "+1.00000E+01"
            number = float(body)
        except ValueError:
            raise self._bad(text, "an integer") from None
        if not number.is_integer():
            raise self._bad(text, "an integer")
        return int(number)

    def encode(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise LocalProtocolError(f"{value!r} is not an integer")
        return int(value)


class _Bool(ScpiConverter):
    placeholder = False

    def parse(self, text: str) -> bool:
        body = text.strip().upper()
        if body in _TRUE:
            return True
        if body in _FALSE:
            return False
        try:
            return float(body) != 0.0
        except ValueError:
            raise self._bad(text, "a boolean (1/0/ON/OFF)") from None

    def encode(self, value: Any) -> int:
        if not isinstance(value, bool | np.bool_ | int):
            raise LocalProtocolError(f"{value!r} is not a boolean")
        return 1 if value else 0


class _Str(ScpiConverter):
    placeholder = ""

    def parse(self, text: str) -> str:
        return _unquote(text.strip())

    def encode(self, value: Any) -> str:
        if not isinstance(value, str):
            raise LocalProtocolError(f"{value!r} is not a string")
        return value


class _Enum(ScpiConverter):
    """An answer matches a member whose value equals it, ignoring case, in long or short form
    (``IMM`` matches ``"IMMediate"``); a ``SubsetEnum`` keeps an unknown answer as text."""

    def __init__(self, cls: type[Enum]) -> None:
        self.cls = cls
        self.placeholder = next(iter(cls))
        self._lookup: dict[str, Enum] = {}
        for member in cls:
            text = str(member.value)
            self._lookup.setdefault(text.upper(), member)
        for member in cls:
            self._lookup.setdefault(scpi_short_form(str(member.value)).upper(), member)

    def parse(self, text: str) -> Any:
        body = _unquote(text.strip())
        member = self._lookup.get(body.upper())
        if member is not None:
            return member
        try:
            return self.cls(body)  # a SubsetEnum returns unknown text as is
        except ValueError:
            choices = ", ".join(str(m.value) for m in self.cls)
            raise self._bad(text, f"one of {choices}") from None

    def encode(self, value: Any) -> str:
        if isinstance(value, self.cls):
            return str(value.value)
        if isinstance(value, str):
            try:
                return str(self.cls(value).value)
            except ValueError:
                pass
        choices = ", ".join(str(m.value) for m in self.cls)
        raise LocalProtocolError(f"{value!r} is not one of {choices}")


class _Array(ScpiConverter):
    """A 1-D numpy array: an ASCII list, or a binary block (``binary=True``)."""

    def __init__(self, dtype: np.dtype[Any], *, binary: bool, big_endian: bool) -> None:
        self.dtype = dtype
        self.binary = binary
        self.big_endian = big_endian
        if binary:
            from .._values import binary_letter

            try:
                binary_letter(dtype.name)
            except ValueError as exc:
                raise TypeError(f"no binary block format for {dtype.name}: {exc}") from None

    async def read(self, instrument: Instrument, query: str) -> Any:
        if self.binary:
            values = await instrument.query_binary_values(
                query, self.dtype.name, is_big_endian=self.big_endian, container=np.ndarray
            )
            return np.asarray(values, dtype=self.dtype)  # native byte order
        return self.parse(await instrument.query(query))

    def parse(self, text: str) -> Any:
        kind = self.dtype.kind
        convert: Any = float if kind == "f" else (_Bool().parse if kind == "b" else _Int().parse)
        try:
            values = parse_values(text, converter=convert)
        except RemoteProtocolError as exc:
            raise self._bad(text, f"a list of {self.dtype.name}") from exc
        return np.asarray(values, dtype=self.dtype)

    def encode(self, value: Any) -> str:
        array = np.asarray(value)
        if array.ndim != 1:
            raise LocalProtocolError(f"a 1-D array is needed, not shape {array.shape}")
        if self.dtype.kind == "f":
            return format_values(array.astype(float).tolist())
        return format_values(array.astype(int).tolist())


class _StrList(ScpiConverter):
    """A comma-separated list; items may be quoted (``"a","b,c"``: commas inside quotes
    do not split, ``""`` is a quote)."""

    def parse(self, text: str) -> list[str]:
        body = text.strip()
        if not body:
            return []
        try:
            row = next(csv.reader([body], skipinitialspace=True, strict=True))
        except csv.Error:
            raise self._bad(text, "a list of strings") from None
        return [item.strip() for item in row]

    def encode(self, value: Any) -> str:
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise LocalProtocolError(f"{value!r} is not a sequence of strings")
        return ",".join(f'"{v}"' for v in value)


def make_converter(
    datatype: type[SignalDatatype], *, binary: bool = False, big_endian: bool = False
) -> ScpiConverter:
    """The converter for ``datatype``; ``TypeError`` for one SCPI signals do not support.

    ``binary``/``big_endian`` apply to ``Array1D`` datatypes only (else ``TypeError``).
    """
    origin = typing.get_origin(datatype)
    if origin is np.ndarray:
        return _Array(get_dtype(datatype), binary=binary, big_endian=big_endian)
    if binary:
        raise TypeError(f"binary=True needs an Array1D datatype, not {datatype!r}")
    if datatype in (Sequence[str], typing.Sequence[str]):
        return _StrList()
    if origin is None and isinstance(datatype, type) and issubclass(datatype, Enum):
        enum_cls = get_enum_cls(datatype)  # TypeError for a plain Enum: names StrictEnum
        assert enum_cls is not None
        return _Enum(enum_cls)
    simple: dict[Any, type[ScpiConverter]] = {float: _Float, int: _Int, bool: _Bool, str: _Str}
    if datatype in simple:
        return simple[datatype]()
    raise TypeError(
        f"SCPI signals support float, int, bool, str, StrictEnum/SubsetEnum/SupersetEnum, "
        f"Array1D[numpy dtype] and Sequence[str], not {datatype!r}"
    )
