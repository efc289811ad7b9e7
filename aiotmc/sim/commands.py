"""SCPI command tables for simulated instruments (stdlib only, no I/O).

* :func:`command` marks a :class:`~aiotmc.sim.SimDevice` method as the handler of a SCPI
  header pattern such as ``"MEASure:VOLTage[:DC]?"``: upper-case letters are the short
  form, the whole word the long form (matched case-insensitively), ``[...]`` marks an
  optional node and a trailing ``#`` a node that takes a numeric suffix (``OUTPut#``
  accepts ``OUTP``, ``OUTP2``, ``OUTPUT3``; :meth:`Call.suffix` reads it).
* :func:`parse_program` splits received bytes into program messages and message units,
  skipping over IEEE 488.2 blocks (``#<n><len>`` may contain ``0x0A``, ``;`` and ``,``)
  and quoted strings.
* A handler receives a :class:`Call` and returns a response (see :data:`Response`), or
  raises :class:`ScpiError`, which the device records in its error queue.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar

from .._exceptions import RemoteProtocolError
from ..protocol.ieee4882 import MAX_BLOCK_LENGTH, block_header, parse_block_header

__all__ = [
    "ERROR_MESSAGES",
    "Block",
    "Call",
    "CommandTable",
    "Later",
    "Pattern",
    "ProgramUnit",
    "Raw",
    "Response",
    "ScpiError",
    "command",
    "find_open_block",
    "format_nr3",
    "parse_pattern",
    "parse_program",
    "short_form",
]

# -- error codes ---------------------------------------------------------------------------

NO_ERROR: Final = 0
COMMAND_ERROR: Final = -100
SYNTAX_ERROR: Final = -102
DATA_TYPE_ERROR: Final = -104
PARAMETER_NOT_ALLOWED: Final = -108
MISSING_PARAMETER: Final = -109
UNDEFINED_HEADER: Final = -113
HEADER_SUFFIX_OUT_OF_RANGE: Final = -114
INVALID_SUFFIX: Final = -131
INVALID_CHARACTER_DATA: Final = -141
INVALID_STRING_DATA: Final = -151
INVALID_BLOCK_DATA: Final = -161
EXECUTION_ERROR: Final = -200
INIT_IGNORED: Final = -213
TRIGGER_DEADLOCK: Final = -214
SETTINGS_CONFLICT: Final = -221
DATA_OUT_OF_RANGE: Final = -222
TOO_MUCH_DATA: Final = -223
ILLEGAL_PARAMETER_VALUE: Final = -224
DATA_STALE: Final = -230
DEVICE_ERROR: Final = -300
QUEUE_OVERFLOW: Final = -350
QUERY_INTERRUPTED: Final = -410
QUERY_UNTERMINATED: Final = -420

ERROR_MESSAGES: Final[dict[int, str]] = {
    NO_ERROR: "No error",
    COMMAND_ERROR: "Command error",
    SYNTAX_ERROR: "Syntax error",
    DATA_TYPE_ERROR: "Data type error",
    PARAMETER_NOT_ALLOWED: "Parameter not allowed",
    MISSING_PARAMETER: "Missing parameter",
    UNDEFINED_HEADER: "Undefined header",
    HEADER_SUFFIX_OUT_OF_RANGE: "Header suffix out of range",
    INVALID_SUFFIX: "Invalid suffix",
    INVALID_CHARACTER_DATA: "Invalid character data",
    INVALID_STRING_DATA: "Invalid string data",
    INVALID_BLOCK_DATA: "Invalid block data",
    EXECUTION_ERROR: "Execution error",
    INIT_IGNORED: "Init ignored",
    TRIGGER_DEADLOCK: "Trigger deadlock",
    SETTINGS_CONFLICT: "Settings conflict",
    DATA_OUT_OF_RANGE: "Data out of range",
    TOO_MUCH_DATA: "Too much data",
    ILLEGAL_PARAMETER_VALUE: "Illegal parameter value",
    DATA_STALE: "Data corrupt or stale",
    DEVICE_ERROR: "Device-specific error",
    QUEUE_OVERFLOW: "Queue overflow",
    QUERY_INTERRUPTED: "Query INTERRUPTED",
    QUERY_UNTERMINATED: "Query UNTERMINATED",
}
"""Standard SCPI / IEEE 488.2 error texts by code."""


class ScpiError(Exception):
    """A SCPI error a handler reports; the device queues ``(code, message)``."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        text = ERROR_MESSAGES.get(code, "Error")
        self.message = f"{text}; {detail}" if detail else text
        super().__init__(f"{code},{self.message!r}")


# -- responses -----------------------------------------------------------------------------

BytesLike: TypeAlias = bytes | bytearray | memoryview


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


# -- header patterns -----------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def short_form(mnemonic: str) -> str:
    """``"IMMediate"`` -> ``"IMM"``: the upper-case letters, digits and underscores."""
    short = "".join(c for c in mnemonic if not c.islower())
    return short or mnemonic.upper()


@dataclass(frozen=True, slots=True)
class _Node:
    short: str
    long: str
    optional: bool
    suffix: bool

    def match(self, token: str) -> tuple[bool, int | None]:
        if self.suffix:
            name = token.rstrip("0123456789")
            digits = token[len(name) :]
            if name in (self.short, self.long):
                return True, int(digits) if digits else None
            return False, None
        return token in (self.short, self.long), None


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed header pattern; build with :func:`parse_pattern`."""

    text: str
    nodes: tuple[_Node, ...]
    query: bool
    common: bool

    def match(self, tokens: Sequence[str]) -> tuple[int | None, ...] | None:
        """Suffix values (one per ``#`` node, None if absent) if ``tokens`` match, else None."""
        return _match(self.nodes, 0, tokens, 0)


def _match(
    nodes: Sequence[_Node], i: int, tokens: Sequence[str], j: int
) -> tuple[int | None, ...] | None:
    if i == len(nodes):
        return () if j == len(tokens) else None
    node = nodes[i]
    if j < len(tokens):
        ok, value = node.match(tokens[j])
        if ok:
            rest = _match(nodes, i + 1, tokens, j + 1)
            if rest is not None:
                return (value, *rest) if node.suffix else rest
    if node.optional:
        rest = _match(nodes, i + 1, tokens, j)
        if rest is not None:
            return (None, *rest) if node.suffix else rest
    return None


@functools.lru_cache(maxsize=1024)
def parse_pattern(text: str) -> Pattern:
    """Parse ``"MEASure:VOLTage[:DC]?"``, ``"[SOURce:]FREQuency"``, ``"OUTPut#[:STATe]"``...

    Raises ``ValueError`` for a malformed pattern.
    """
    query = text.endswith("?")
    body = text[:-1] if query else text
    if body.startswith("*"):
        if not _NAME.fullmatch(body[1:]):
            raise ValueError(f"bad common command pattern {text!r}")
        name = body.upper()
        return Pattern(text, (_Node(name, name, False, False),), query, True)
    nodes: list[_Node] = []
    if body.endswith(":"):
        raise ValueError(f"pattern {text!r} ends with ':'")
    pos = 1 if body.startswith(":") else 0
    while pos < len(body):
        optional = body[pos] == "["
        if optional:
            end = body.find("]", pos)
            if end < 0:
                raise ValueError(f"unbalanced '[' in pattern {text!r}")
            item = body[pos + 1 : end]
            item = item[1:] if item.startswith(":") else item.removesuffix(":")
            pos = end + 1
        else:
            stops = [i for i in (body.find(":", pos), body.find("[", pos)) if i >= 0]
            end = min(stops, default=len(body))
            item, pos = body[pos:end], end
        if pos < len(body) and body[pos] == ":":
            pos += 1
        suffix = item.endswith("#")
        name = item[:-1] if suffix else item
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad node {item!r} in pattern {text!r}")
        nodes.append(_Node(short_form(name).upper(), name.upper(), optional, suffix))
    if not nodes or all(node.optional for node in nodes):
        raise ValueError(f"pattern {text!r} has no mandatory node")
    return Pattern(text, tuple(nodes), query, False)


# -- command registry ----------------------------------------------------------------------

Handler: TypeAlias = Callable[["Call"], Response]
F = TypeVar("F", bound=Callable[..., object])


def command(pattern: str, *, args: int | tuple[int, int | None] = 0) -> Callable[[F], F]:
    """Mark a :class:`~aiotmc.sim.SimDevice` method ``(self, call) -> Response`` as a handler.

    ``args`` is the number of parameters accepted: ``n`` or ``(min, max)`` (``max=None``:
    unbounded). Fewer gives -109 Missing parameter, more -108 Parameter not allowed. The
    decorator may be stacked to register one method under several patterns.
    """
    parse_pattern(pattern)  # fail at import time on a typo

    def mark(fn: F) -> F:
        specs: list[tuple[str, int | tuple[int, int | None]]] = getattr(fn, "__scpi__", [])
        fn.__scpi__ = [*specs, (pattern, args)]  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class _Entry:
    pattern: Pattern
    handler: Handler
    min_args: int
    max_args: int | None


@dataclass(frozen=True, slots=True)
class _Resolved:
    entry: _Entry
    suffixes: tuple[int | None, ...]
    tokens: tuple[str, ...]


class CommandTable:
    """Header patterns and their handlers; earlier entries win; lookups are cached."""

    _CACHE_SIZE: Final = 4096

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._cache: dict[tuple[tuple[str, ...], tuple[str, ...], bool], _Resolved | None] = {}

    def add(
        self,
        pattern: str,
        handler: Handler,
        *,
        args: int | tuple[int, int | None] = 0,
        first: bool = False,
    ) -> None:
        """Register ``handler`` for ``pattern``; ``first=True`` overrides earlier entries."""
        lo, hi = (args, args) if isinstance(args, int) else args
        entry = _Entry(parse_pattern(pattern), handler, lo, hi)
        if first:
            self._entries.insert(0, entry)
        else:
            self._entries.append(entry)
        self._cache.clear()

    def patterns(self) -> list[str]:
        """The registered patterns, in match order."""
        return [entry.pattern.text for entry in self._entries]

    def resolve(
        self, path: tuple[str, ...], tokens: tuple[str, ...], query: bool
    ) -> _Resolved | None:
        """Find the entry for ``tokens`` relative to ``path`` (falling back to the root)."""
        key = (path, tokens, query)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for prefix in (path, ()) if path else ((),):
            full = prefix + tokens
            for entry in self._entries:
                if entry.pattern.query != query:
                    continue
                suffixes = entry.pattern.match(full)
                if suffixes is not None:
                    found = _Resolved(entry, suffixes, full)
                    break
            if found is not None:
                break
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = found
        return found

    def resolve_common(self, name: str, query: bool) -> _Resolved | None:
        """Find a common (``*XXX``) command."""
        return self.resolve((), (name,), query)


# -- program messages ----------------------------------------------------------------------

_SPECIAL = re.compile(rb"[;,\"'#\n]")
_WS: Final = frozenset(b" \t\r\n")
_MNEMONIC = r"[A-Za-z_][A-Za-z0-9_]*"
_HEADER = re.compile(rf":?(\*{_MNEMONIC}|{_MNEMONIC}(:{_MNEMONIC})*)\??")


@dataclass(frozen=True, slots=True)
class ProgramUnit:
    """One command or query of a program message.

    ``args`` are zero-copy views into the received message, outer whitespace removed;
    a block argument keeps its ``#<n><len>`` header.
    """

    header: str
    args: tuple[memoryview, ...]
    query: bool = False
    common: bool = False
    absolute: bool = False
    tokens: tuple[str, ...] = ()

    @classmethod
    def make(cls, header: str, args: tuple[memoryview, ...] = ()) -> ProgramUnit:
        """Build a unit, deriving the flags and the upper-case header tokens."""
        return cls(
            header,
            args,
            header.endswith("?"),
            header.lstrip(":").startswith("*"),
            header.startswith(":"),
            tuple(header.strip(":").rstrip("?").upper().split(":")),
        )


def parse_program(data: BytesLike) -> list[list[ProgramUnit]]:
    """Split received bytes into program messages (at top-level newlines) and units.

    Newlines, ``;`` and ``,`` inside quoted strings and blocks are data. Leading and
    trailing whitespace (including the terminator) is ignored. Empty messages are
    dropped. Raises :class:`ScpiError` (-161, -151, -102) on malformed input: the
    message cannot be framed reliably then, so nothing of it is executed.
    """
    buf = data if isinstance(data, bytes | bytearray) else bytes(data)
    view = memoryview(buf)
    size = len(buf)
    messages: list[list[ProgramUnit]] = []
    units: list[ProgramUnit] = []
    unit_start = 0
    commas: list[int] = []
    block_ends: list[int] = []
    pos = 0
    while True:
        m = _SPECIAL.search(buf, pos)
        j = m.start() if m else size
        char = buf[j] if m else 0x0A
        if char in (0x22, 0x27):  # quoted string; a doubled quote is an escaped quote
            k = j + 1
            while True:
                k = buf.find(char, k)
                if k < 0:
                    raise ScpiError(INVALID_STRING_DATA, "unterminated string")
                if k + 1 < size and buf[k + 1] == char:
                    k += 2
                    continue
                break
            pos = k + 1
            continue
        if char == 0x23:  # '#': block if followed by a digit
            pos = _skip_block(buf, j, size)
            if pos != j + 1:
                block_ends.append(pos)
            continue
        if char == 0x2C:  # ','
            commas.append(j)
            pos = j + 1
            continue
        # ';', newline or end of data: close the unit
        unit = _make_unit(buf, view, unit_start, j, commas, block_ends)
        if unit is not None:
            units.append(unit)
        commas = []
        block_ends = []
        unit_start = j + 1
        if char == 0x0A and units:
            messages.append(units)
            units = []
        if m is None:
            break
        pos = j + 1
    if units:
        messages.append(units)
    return messages


def find_open_block(data: bytes | bytearray) -> int | None:
    """Where the definite block that ``data`` ends inside of ends, or None.

    ``data`` is the start of a program message (no top-level newline yet). Lets a
    stream reader receive a large block payload straight into one buffer.
    """
    size = len(data)
    pos = 0
    while True:
        m = _SPECIAL.search(data, pos)
        if m is None:
            return None
        j = m.start()
        char = data[j]
        if char in (0x22, 0x27):
            k = j + 1
            while True:
                k = data.find(char, k)
                if k < 0:
                    return None
                if k + 1 < size and data[k + 1] == char:
                    k += 2
                    continue
                break
            pos = k + 1
        elif char == 0x23:
            if j + 1 >= size or not 0x31 <= data[j + 1] <= 0x39:
                if j + 1 < size and data[j + 1] == 0x30:
                    return None  # indefinite block: framed by the newline
                pos = j + 1
                continue
            try:
                header = parse_block_header(data[j : j + 11], max_size=MAX_BLOCK_LENGTH)
            except RemoteProtocolError:
                return None
            if header is None or header.payload_length is None:
                return None
            end = j + header.header_length + header.payload_length
            if end > size:
                return end
            pos = end
        elif char == 0x0A:
            return None
        else:
            pos = j + 1


def _skip_block(buf: bytes | bytearray, j: int, size: int) -> int:
    """Position after the block starting at ``buf[j] == '#'`` (``j + 1`` if not a block)."""
    if j + 1 >= size or not 0x30 <= buf[j + 1] <= 0x39:
        return j + 1  # "#H1F" etc.: a non-decimal number, not a block
    if buf[j + 1] == 0x30:  # indefinite: runs to the final newline (NL^END) of the data
        return size - 1 if buf.endswith(b"\n") else size
    try:
        header = parse_block_header(buf[j : j + 11], max_size=MAX_BLOCK_LENGTH)
    except RemoteProtocolError as exc:
        raise ScpiError(INVALID_BLOCK_DATA, str(exc)) from None
    if header is None or header.payload_length is None:
        raise ScpiError(INVALID_BLOCK_DATA, "truncated block header")
    end = j + header.header_length + header.payload_length
    if end > size:
        raise ScpiError(
            INVALID_BLOCK_DATA,
            f"block announces {header.payload_length} bytes, message holds"
            f" {size - j - header.header_length}",
        )
    return end


def _strip(buf: bytes | bytearray, start: int, end: int, floor: int) -> tuple[int, int]:
    while start < end and buf[start] in _WS:
        start += 1
    while end > max(start, floor) and buf[end - 1] in _WS:
        end -= 1
    return start, end


def _make_unit(
    buf: bytes | bytearray,
    view: memoryview,
    start: int,
    end: int,
    commas: list[int],
    block_ends: list[int],
) -> ProgramUnit | None:
    floor = block_ends[-1] if block_ends else 0
    start, end = _strip(buf, start, end, floor)
    if start == end:
        if commas:
            raise ScpiError(SYNTAX_ERROR, "parameters without a header")
        return None
    header_end = start
    while header_end < end and buf[header_end] not in _WS:
        header_end += 1
    if commas and commas[0] < header_end:
        raise ScpiError(SYNTAX_ERROR, "',' in header")
    header = buf[start:header_end].decode("latin-1")
    if not _HEADER.fullmatch(header):
        raise ScpiError(SYNTAX_ERROR, f"bad header {header[:40]!r}")
    args: list[memoryview] = []
    bounds = [header_end, *commas, end]
    if header_end < end:
        for k in range(len(bounds) - 1):
            lo = bounds[k] + (1 if k else 0)
            hi = bounds[k + 1]
            floor = max((b for b in block_ends if lo < b <= hi), default=0)
            lo, hi = _strip(buf, lo, hi, floor)
            if lo == hi:
                raise ScpiError(SYNTAX_ERROR, "empty parameter")
            args.append(view[lo:hi])
    return ProgramUnit.make(header, tuple(args))


# -- parameters ----------------------------------------------------------------------------

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
