"""The GPIB board table: which controller ``GPIB<n>::pad::INSTR`` goes through.

A bare ``GPIB0::12::INSTR`` names an address on *board 0*, not a controller. aiotmc looks
board ``n`` up, first match wins:

1. the ``adapter=`` option of that ``aiotmc.open`` call;
2. the process-wide table (:func:`attach_board`, or :func:`board` for a block): the
   two-step form of pyvisa-py, where opening ``PRLGX-TCPIP0::host::1234::INTFC`` makes
   it board 0;
3. the environment variable ``AIOTMC_GPIB<n>`` (e.g.
   ``AIOTMC_GPIB0=PRLGX-TCPIP0::192.0.2.9::1234::INTFC``), for the command line;
4. otherwise a local controller card through linux-gpib (its board index ``n``).

A board is one of: a Prologix/AR488 adapter ``PRLGX-TCPIP[n]::host::port::INTFC`` or
``PRLGX-ASRL[n]::port::INTFC``; a VXI-11.2 LAN/GPIB gateway's interface
``TCPIP[n]::host::gpib0::INSTR`` (``GPIB0::12`` then opens its device ``gpib0,12``); or
``linux-gpib`` (a local card: the board index is the GPIB board number).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from ...resources import PrologixAsrlInstr, PrologixInstr, TcpipInstr, parse_resource

__all__ = [
    "ENV_PREFIX",
    "Board",
    "attach_board",
    "board",
    "boards",
    "detach_board",
    "parse_board",
    "resolve_board",
]

ENV_PREFIX: Final = "AIOTMC_GPIB"
"""``AIOTMC_GPIB<n>`` names board ``n`` when neither an option nor the table does."""

LINUX_GPIB: Final = "linux-gpib"
_INTFC: Final = re.compile(r"(?i)(PRLGX-(?:TCPIP|ASRL)\d*::.*)::INTFC\s*")
_GATEWAY: Final = re.compile(r"(?i)gpib\d+")

_lock = threading.Lock()
_table: dict[int, Board] = {}


@dataclass(frozen=True, slots=True)
class Board:
    """A parsed board: what controller it is and where.

    ``kind`` is ``"prologix-tcpip"`` (``host``, ``port``), ``"prologix-asrl"`` (``host``
    is the serial device, ``port`` 0), ``"vxi11"`` (``host``, ``port`` the core channel's
    port or 0 for the portmapper, ``interface`` e.g. ``gpib0``) or ``"linux-gpib"``.
    ``number`` is the board number the name carries (``PRLGX-TCPIP1`` -> 1).
    """

    kind: str
    name: str
    number: int = 0
    host: str = ""
    port: int = 0
    interface: str = ""


def parse_board(text: str) -> Board:
    """Parse a board name (see the module docstring); ``ValueError`` saying what is
    accepted otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"a GPIB board is named by a str, got {type(text).__name__}")
    stripped = text.strip()
    if stripped.lower() == LINUX_GPIB:
        return Board(LINUX_GPIB, LINUX_GPIB)
    match = _INTFC.fullmatch(stripped)
    if match is not None:
        instrument = parse_resource(f"{match.group(1)}::0::INSTR")  # address 0: a stand-in
        if isinstance(instrument, PrologixInstr):
            return Board(
                "prologix-tcpip",
                instrument.adapter,
                instrument.board,
                host=instrument.host,
                port=instrument.port,
            )
        assert isinstance(instrument, PrologixAsrlInstr)
        return Board("prologix-asrl", instrument.adapter, instrument.board, host=instrument.device)
    try:
        gateway = parse_resource(stripped)
    except ValueError:
        gateway = None
    if isinstance(gateway, TcpipInstr) and _GATEWAY.fullmatch(gateway.lan_device_name):
        return Board(
            "vxi11",
            str(gateway),
            gateway.board,
            host=gateway.host,
            port=gateway.port or 0,
            interface=gateway.lan_device_name.lower(),
        )
    raise ValueError(
        f"{text!r} is not a GPIB board: expected PRLGX-TCPIP0::host::1234::INTFC, "
        "PRLGX-ASRL0::/dev/ttyUSB0::INTFC, TCPIP0::host::gpib0::INSTR (a VXI-11.2 gateway) "
        "or linux-gpib"
    )


def attach_board(name: str, *, board: int | None = None) -> int:
    """Make ``name`` GPIB board ``board`` (default: the number in the name, as pyvisa-py
    does: ``PRLGX-TCPIP1::...::INTFC`` is ``GPIB1``) for this process; returns the board
    number. Replaces what that board was. ``ValueError`` for a bad name or number."""
    parsed = parse_board(name)
    number = parsed.number if board is None else board
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ValueError(f"board number must be >= 0, got {number!r}")
    with _lock:
        _table[number] = parsed
    return number


def detach_board(number: int) -> None:
    """Forget what board ``number`` was (no error if it was nothing)."""
    with _lock:
        _table.pop(number, None)


def boards() -> dict[int, str]:
    """The board table: board number -> board name (attached ones, then ``AIOTMC_GPIB<n>``
    variables)."""
    found: dict[int, str] = {}
    for key, value in os.environ.items():
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].isdigit():
            found[int(key[len(ENV_PREFIX) :])] = value.strip()
    with _lock:
        found.update({number: entry.name for number, entry in _table.items()})
    return dict(sorted(found.items()))


@contextmanager
def board(name: str, *, board: int | None = None) -> Iterator[int]:
    """:func:`attach_board` for the block, then back to what the board was before."""
    parsed = parse_board(name)
    number = parsed.number if board is None else board
    with _lock:
        before = _table.get(number)
    attach_board(name, board=number)
    try:
        yield number
    finally:
        with _lock:
            if before is None:
                _table.pop(number, None)
            else:
                _table[number] = before


def resolve_board(number: int, adapter: str | None = None) -> Board:
    """What board ``number`` is (see the module docstring for the order)."""
    if adapter is not None:
        return parse_board(adapter)
    with _lock:
        entry = _table.get(number)
    if entry is not None:
        return entry
    value = os.environ.get(f"{ENV_PREFIX}{number}")
    if value:
        try:
            return parse_board(value)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}{number}: {exc}") from None
    return Board(LINUX_GPIB, LINUX_GPIB, number)
