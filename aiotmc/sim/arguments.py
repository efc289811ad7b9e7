"""The :class:`Call` a handler receives, and parsing of its parameters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .._exceptions import RemoteProtocolError
from ..protocol.ieee4882 import MAX_BLOCK_LENGTH, parse_block_header
from .errors import (
    DATA_OUT_OF_RANGE,
    DATA_TYPE_ERROR,
    HEADER_SUFFIX_OUT_OF_RANGE,
    INVALID_BLOCK_DATA,
    INVALID_CHARACTER_DATA,
    INVALID_SUFFIX,
    MISSING_PARAMETER,
    ScpiError,
)

__all__ = ["Call", "short_form"]

_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)")
_PREFIXES: Final = {
    "": 1.0,
    "EX": 1e18,
    "PE": 1e15,
    "T": 1e12,
    "G": 1e9,
    "MA": 1e6,
    "K": 1e3,
    "M": 1e-3,
    "U": 1e-6,
    "N": 1e-9,
    "P": 1e-12,
    "F": 1e-15,
}


def short_form(mnemonic: str) -> str:
    """``"IMMediate"`` -> ``"IMM"``: the upper-case letters, digits and underscores.

    Here, below :mod:`~aiotmc.sim.patterns` (which re-exports it), because
    :meth:`Call.choice` matches mnemonics too.
    """
    short = "".join(c for c in mnemonic if not c.islower())
    return short or mnemonic.upper()


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler receives: the header as sent, numeric suffixes and the parameters."""

    header: str
    args: tuple[memoryview, ...]
    suffixes: tuple[int | None, ...] = ()

    @property
    def query(self) -> bool:
        return self.header.endswith("?")

    def suffix(self, index: int = 0, *, default: int = 1, maximum: int | None = None) -> int:
        """The numeric suffix of the ``index``-th ``#`` node (``default`` if absent).

        Raises -114 Header suffix out of range when below 1 or above ``maximum``.
        """
        value = self.suffixes[index] if index < len(self.suffixes) else None
        if value is None:
            return default
        if value < 1 or (maximum is not None and value > maximum):
            raise ScpiError(HEADER_SUFFIX_OUT_OF_RANGE, f"{value} (1..{maximum})")
        return value

    def raw(self, index: int) -> bytes:
        """Parameter ``index`` as bytes (-109 if missing)."""
        if index >= len(self.args):
            raise ScpiError(MISSING_PARAMETER, f"parameter {index + 1} of {self.header}")
        return self.args[index].tobytes()

    def text(self, index: int) -> str:
        """Parameter ``index`` as text, as sent (quotes kept)."""
        return self.raw(index).decode("latin-1")

    def string(self, index: int) -> str:
        """A string parameter: quoted (``"a""b"`` -> ``a"b``) or a bare mnemonic."""
        text = self.text(index)
        if len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]:
            quote = text[0]
            return text[1:-1].replace(quote * 2, quote)
        if text[:1] in ("#", '"', "'"):
            raise ScpiError(DATA_TYPE_ERROR, f"expected a string, got {text[:20]!r}")
        return text

    def choice(self, index: int, options: Iterable[str]) -> str:
        """A character parameter matched against ``options`` given as ``"IMMediate"``...

        Returns the matching option as spelled in ``options``; -141 if none matches.
        """
        token = self.text(index).upper()
        for option in options:
            if token in (short_form(option).upper(), option.upper()):
                return option
        raise ScpiError(INVALID_CHARACTER_DATA, f"{token[:20]!r}")

    def boolean(self, index: int) -> bool:
        """``ON``/``OFF``/``1``/``0`` (any number: non-zero after rounding is true)."""
        token = self.text(index).upper()
        if token == "ON":
            return True
        if token == "OFF":
            return False
        m = _NUMBER.fullmatch(token)
        if m and not m.group(2):
            return round(float(m.group(1))) != 0
        raise ScpiError(INVALID_CHARACTER_DATA, f"expected ON|OFF|1|0, got {token[:20]!r}")

    def number(
        self,
        index: int,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        default: float | None = None,
        unit: str = "",
    ) -> float:
        """A numeric parameter; accepts ``MINimum``/``MAXimum``/``DEFault`` and a unit suffix.

        ``unit`` (e.g. ``"V"``, ``"HZ"``) enables suffixes such as ``mV`` or ``MHZ``.
        Errors: -104 not a number, -131 bad suffix, -222 outside ``[minimum, maximum]``.
        """
        token = self.text(index).strip().upper()
        if token in ("MIN", "MINIMUM") and minimum is not None:
            return minimum
        if token in ("MAX", "MAXIMUM") and maximum is not None:
            return maximum
        if token in ("DEF", "DEFAULT") and default is not None:
            return default
        m = _NUMBER.fullmatch(token)
        if m is None:
            raise ScpiError(DATA_TYPE_ERROR, f"expected a number, got {token[:20]!r}")
        value = float(m.group(1))
        suffix = m.group(2)
        if suffix:
            value *= _unit_multiplier(suffix, unit.upper())
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ScpiError(DATA_OUT_OF_RANGE, f"{value:g} not in [{minimum}, {maximum}]")
        return value

    def integer(self, index: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """A numeric parameter rounded to an integer, range-checked (-222)."""
        lo = None if minimum is None else float(minimum)
        hi = None if maximum is None else float(maximum)
        return round(self.number(index, minimum=lo, maximum=hi))

    def block(self, index: int) -> memoryview:
        """The payload of a block parameter (definite ``#<n><len>`` or indefinite ``#0``)."""
        arg = self.args[index] if index < len(self.args) else None
        if arg is None:
            raise ScpiError(MISSING_PARAMETER, f"block parameter {index + 1}")
        if len(arg) < 2 or arg[0] != 0x23 or not 0x30 <= arg[1] <= 0x39:
            raise ScpiError(DATA_TYPE_ERROR, "expected a block")
        if arg[1] == 0x30:
            return arg[2:]
        try:  # parse_program framed it already; a handler may be handed anything, though
            header = parse_block_header(arg[:11], max_size=MAX_BLOCK_LENGTH)
        except RemoteProtocolError as exc:
            raise ScpiError(INVALID_BLOCK_DATA, str(exc)[:40]) from None
        if header is None or header.payload_length is None:
            raise ScpiError(INVALID_BLOCK_DATA, "truncated block header")
        if header.header_length + header.payload_length != len(arg):
            raise ScpiError(INVALID_BLOCK_DATA, "data after the block")
        return arg[header.header_length :]


def _unit_multiplier(suffix: str, unit: str) -> float:
    if not unit:
        raise ScpiError(INVALID_SUFFIX, suffix[:20])
    # MHZ and MOHM mean mega by SCPI convention, not milli.
    if unit in ("HZ", "OHM") and suffix == "M" + unit:
        return 1e6
    if not suffix.endswith(unit):
        raise ScpiError(INVALID_SUFFIX, suffix[:20])
    prefix = suffix[: -len(unit)]
    try:
        return _PREFIXES[prefix]
    except KeyError:
        raise ScpiError(INVALID_SUFFIX, suffix[:20]) from None
