"""Program-message parsing: received bytes to messages and message units (no I/O).

Linear in C on untrusted input: blocks (``#<n><len>``, ``#0``) and quoted strings are
skipped by regex and ``find`` calls, plain parameters are split by ``bytes.split``;
Python loops run once per message unit, string or block, never per byte, and are
bounded by :data:`MAX_DATA_ELEMENTS`. Headers longer than :data:`MAX_HEADER_LENGTH`
give -112 Program mnemonic too long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .._exceptions import RemoteProtocolError
from .._types import BytesLike
from ..protocol.ieee4882 import MAX_BLOCK_LENGTH, parse_block_header
from .errors import (
    INVALID_BLOCK_DATA,
    INVALID_STRING_DATA,
    PROGRAM_MNEMONIC_TOO_LONG,
    SYNTAX_ERROR,
    TOO_MUCH_DATA,
    ScpiError,
)

__all__ = [
    "MAX_DATA_ELEMENTS",
    "MAX_HEADER_LENGTH",
    "ProgramUnit",
    "find_open_block",
    "parse_program",
]

MAX_HEADER_LENGTH: Final = 256
"""Longest header (all nodes, colons, ``*`` and ``?``) accepted; longer ones give -112."""

MAX_DATA_ELEMENTS: Final = 8192
"""Most message units, parameters, strings and blocks in one program message; more give
-223 Too much data before anything is executed (bounds the work and memory per message)."""

_STRUCTURE = re.compile(rb"[;\"'#\n]")  # what ends a unit or starts a string / block
_OPEN_BLOCK = re.compile(rb"[\"'#\n]")
_QUOTE_RUNS: Final = {0x22: re.compile(rb'"+'), 0x27: re.compile(rb"'+")}
_NOT_WS = re.compile(rb"[^ \t\r\n]")
_WS_CHAR = re.compile(rb"[ \t\r\n]")
_WS: Final = b" \t\r\n"
_WS_SET: Final = frozenset(_WS)
_MNEMONIC = r"[A-Za-z_][A-Za-z0-9_]*"
_HEADER = re.compile(rf":?(\*{_MNEMONIC}|{_MNEMONIC}(:{_MNEMONIC})*)\??")


@dataclass(frozen=True, slots=True)
class ProgramUnit:
    """One command or query of a program message.

    ``args`` are views, outer whitespace removed: zero-copy views into the received
    message when the unit holds a block or string (a block argument keeps its
    ``#<n><len>`` header), views of small copies otherwise.
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


def _strip_ws(part: bytes) -> bytes:
    return part.strip(_WS)


def parse_program(
    data: BytesLike, *, max_elements: int = MAX_DATA_ELEMENTS
) -> list[list[ProgramUnit]]:
    """Split received bytes into program messages (at top-level newlines) and units.

    Newlines, ``;`` and ``,`` inside quoted strings and blocks are data. Leading and
    trailing whitespace (including the terminator) is ignored. Empty messages are
    dropped. Raises :class:`ScpiError` (-161, -151, -102, -112, -223) on malformed or
    oversized input: the message cannot be framed reliably then, so nothing of it is
    executed. ``max_elements`` bounds the units, parameters, strings and blocks of each
    program message.
    """
    buf = data if isinstance(data, bytes | bytearray) else bytes(data)
    view = memoryview(buf)
    size = len(buf)
    messages: list[list[ProgramUnit]] = []
    units: list[ProgramUnit] = []
    unit_start = 0
    spans: list[tuple[int, int, bool]] = []  # (start, end, is_block) inside the unit
    budget = max_elements
    pos = 0
    while True:
        m = _STRUCTURE.search(buf, pos)
        j = m.start() if m else size
        char = buf[j] if m else 0x0A
        if char == 0x22 or char == 0x27:  # quoted string; a doubled quote is a quote
            pos, steps = _skip_string(buf, j, budget)
            budget -= steps - 1
            spans.append((j, pos, False))
        elif char == 0x23:  # '#': block if followed by a digit
            pos = _skip_block(buf, j, size)
            if pos == j + 1:
                continue
            spans.append((j, pos, True))
        else:  # ';', newline or end of data: close the unit
            unit = _make_unit(buf, view, unit_start, j, spans, budget)
            if unit is not None:
                units.append(unit)
                budget -= len(unit.args)
            spans = []
            unit_start = j + 1
            if char == 0x0A:
                if units:
                    messages.append(units)
                    units = []
                budget = max_elements
            if m is None:
                break
            pos = j + 1
        budget -= 1
        if budget < 0:
            raise ScpiError(TOO_MUCH_DATA, f"more than {max_elements} data elements")
    if units:
        messages.append(units)
    return messages


def _skip_string(buf: bytes | bytearray, j: int, budget: int) -> tuple[int, int]:
    """End of the string opened at ``buf[j]``, and the runs of quotes looked at.

    -151 if it is not closed, -223 after more than ``budget`` runs.
    """
    quote = buf[j]
    runs = _QUOTE_RUNS[quote]
    k = j + 1
    steps = 0
    while True:
        k = buf.find(quote, k)
        if k < 0:
            raise ScpiError(INVALID_STRING_DATA, "unterminated string")
        steps += 1
        if steps > budget:
            raise ScpiError(TOO_MUCH_DATA, "too many doubled quotes")
        run = runs.match(buf, k)
        assert run is not None
        k = run.end()
        if (k - run.start()) % 2:  # doubled quotes, then the closing one
            return k, steps


def find_open_block(data: bytes | bytearray) -> int | None:
    """Where the definite block that ``data`` ends inside of ends, or None.

    ``data`` is the start of a program message (no top-level newline yet). Lets a
    stream reader receive a large block payload straight into one buffer.
    """
    size = len(data)
    pos = 0
    while True:
        m = _OPEN_BLOCK.search(data, pos)
        if m is None:
            return None
        j = m.start()
        char = data[j]
        if char == 0x22 or char == 0x27:
            try:
                pos = _skip_string(data, j, size)[0]
            except ScpiError:
                return None
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
        else:
            return None


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
    """``start, end`` without outer whitespace; ``end`` never moves below ``floor``."""
    m = _NOT_WS.search(buf, start, end)
    start = end if m is None else m.start()
    low = max(start, floor)
    if low < end and buf[end - 1] in _WS_SET:
        end = low + len(buf[low:end].rstrip(_WS))
    return start, end


def _make_unit(
    buf: bytes | bytearray,
    view: memoryview,
    unit_start: int,
    unit_end: int,
    spans: list[tuple[int, int, bool]],
    budget: int,
) -> ProgramUnit | None:
    if not spans and unit_start == unit_end:
        return None
    floor = max((end for _, end, block in spans if block), default=0)
    start, end = _strip(buf, unit_start, unit_end, floor)
    if start == end:
        if buf.find(b",", unit_start, unit_end) >= 0:
            raise ScpiError(SYNTAX_ERROR, "parameters without a header")
        return None
    ws = _WS_CHAR.search(buf, start, min(end, start + MAX_HEADER_LENGTH + 1))
    header_end = min(end, start + MAX_HEADER_LENGTH + 1) if ws is None else ws.start()
    if header_end - start > MAX_HEADER_LENGTH:
        raise ScpiError(
            PROGRAM_MNEMONIC_TOO_LONG,
            f"header of more than {MAX_HEADER_LENGTH} characters:"
            f" {buf[start : start + 40].decode('latin-1')}",
        )
    if buf.find(b",", start, header_end) >= 0:
        raise ScpiError(SYNTAX_ERROR, "',' in header")
    header = buf[start:header_end].decode("latin-1")
    if not _HEADER.fullmatch(header):
        raise ScpiError(SYNTAX_ERROR, f"bad header {header[:40]!r}")
    if header_end == end:
        return ProgramUnit.make(header)
    inner = [span for span in spans if span[0] >= header_end]
    if not inner:  # plain parameters: split and strip in C
        text = view[header_end:end].tobytes()
        if text.count(b",") >= budget:
            raise ScpiError(TOO_MUCH_DATA, "too many parameters")
        parts = list(map(_strip_ws, text.split(b",")))
        if b"" in parts:
            raise ScpiError(SYNTAX_ERROR, "empty parameter")
        return ProgramUnit.make(header, tuple(map(memoryview, parts)))
    # Commas outside strings and blocks separate the parameters.
    gaps = [(header_end, inner[0][0])]
    gaps += [(inner[k][1], inner[k + 1][0]) for k in range(len(inner) - 1)]
    gaps.append((inner[-1][1], end))
    if sum(buf.count(b",", lo, hi) for lo, hi in gaps) >= budget:
        raise ScpiError(TOO_MUCH_DATA, "too many parameters")
    bounds = [header_end]
    for lo, hi in gaps:
        k = buf.find(b",", lo, hi)
        while k >= 0:
            bounds.append(k)
            k = buf.find(b",", k + 1, hi)
    bounds.append(end)
    block_ends = [span_end for _, span_end, block in inner if block]
    args: list[memoryview] = []
    b = 0
    for k in range(len(bounds) - 1):
        lo = bounds[k] + (1 if k else 0)
        hi = bounds[k + 1]
        floor = 0
        while b < len(block_ends) and block_ends[b] <= hi:
            if block_ends[b] > lo:
                floor = block_ends[b]
            b += 1
        lo, hi = _strip(buf, lo, hi, floor)
        if lo == hi:
            raise ScpiError(SYNTAX_ERROR, "empty parameter")
        args.append(view[lo:hi])
    return ProgramUnit.make(header, tuple(args))
