"""Resource names as PyVISA's resource manager wants them described.

aiotmc parses every name it opens (its own grammar: ``SIM::``, ``PRLGX-TCPIP0::...::INSTR``
and the VISA ones); the interface type tells PyVISA which resource class to create. Names
that are not VISA's map to the class with the same abilities: a simulated instrument is an
instrument with SRQ, status byte, trigger and clear like a VXI-11 one (``TCPIPInstrument``),
an instrument behind a Prologix adapter is a ``GPIBInstrument``.
"""

from __future__ import annotations

from typing import Final

from pyvisa.constants import InterfaceType
from pyvisa.highlevel import ResourceInfo

from aiotmc.resources import parse_resource

__all__ = ["resource_info"]

_INTERFACES: Final[dict[str, tuple[InterfaceType, str]]] = {
    "tcpip-socket": (InterfaceType.tcpip, "SOCKET"),
    "tcpip-instr": (InterfaceType.tcpip, "INSTR"),
    "hislip": (InterfaceType.tcpip, "INSTR"),
    "usb": (InterfaceType.usb, "INSTR"),
    "asrl": (InterfaceType.asrl, "INSTR"),
    "prologix-tcpip": (InterfaceType.gpib, "INSTR"),
    "prologix-asrl": (InterfaceType.gpib, "INSTR"),
    "sim": (InterfaceType.tcpip, "INSTR"),
}
#: Kinds registered by plugins: a message-based instrument.
_OTHER: Final = (InterfaceType.tcpip, "INSTR")


def resource_info(name: str) -> ResourceInfo:
    """PyVISA's description of ``name``; :class:`aiotmc.InvalidResourceName` if it is bad."""
    parsed = parse_resource(name)
    interface, resource_class = _INTERFACES.get(parsed.kind, _OTHER)
    board = getattr(parsed, "board", 0)
    return ResourceInfo(
        interface, board if isinstance(board, int) else 0, resource_class, str(parsed), None
    )
