"""VXI-11.2 gateway bus commands by name, on an interface link (``TCPIP0::host::gpib0::INSTR``).

Each function sends one ``device_docmd`` (:meth:`Vxi11Transport.docmd`) with the element
size and byte order VXI-11.2 gives the command::

    async with aiotmc.open("TCPIP0::192.0.2.9::gpib0::INSTR", srq=False) as bus:
        await gateway.send_command(bus.transport, bytes([0x3F, 0x25, 0x08]))  # UNL LAD5 GET
        print(await gateway.bus_status(bus.transport, BusStatus.SRQ))
"""

from __future__ import annotations

import math
import struct

from ...protocol.vxi11 import BusStatus, Docmd
from .transport import Vxi11Transport

__all__ = [
    "BusStatus",
    "bus_status",
    "interface_clear",
    "pass_control",
    "send_command",
    "set_atn",
    "set_bus_address",
    "set_ren",
]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


async def send_command(
    transport: Vxi11Transport, commands: bytes, *, deadline: float = math.inf
) -> bytes:
    """Send GPIB command bytes with ATN asserted (SEND_COMMAND); the gateway's echo."""
    return await transport.docmd(Docmd.SEND_COMMAND, commands, datasize=1, deadline=deadline)


async def bus_status(
    transport: Vxi11Transport, item: BusStatus, *, deadline: float = math.inf
) -> int:
    """One bus status item (BUS_STATUS): a flag (0/1) or, for BUS_ADDRESS, the address."""
    out = await transport.docmd(Docmd.BUS_STATUS, _U16.pack(item), datasize=2, deadline=deadline)
    return int(_U16.unpack(out[:2])[0]) if len(out) >= 2 else 0


async def set_atn(transport: Vxi11Transport, on: bool, *, deadline: float = math.inf) -> None:
    """Assert or release ATN (ATN_CONTROL)."""
    await transport.docmd(Docmd.ATN_CONTROL, _U16.pack(int(on)), datasize=2, deadline=deadline)


async def set_ren(transport: Vxi11Transport, on: bool, *, deadline: float = math.inf) -> None:
    """Assert or release REN (REN_CONTROL)."""
    await transport.docmd(Docmd.REN_CONTROL, _U16.pack(int(on)), datasize=2, deadline=deadline)


async def pass_control(
    transport: Vxi11Transport, address: int, *, deadline: float = math.inf
) -> None:
    """Pass control to the device at ``address`` (PASS_CONTROL)."""
    await transport.docmd(Docmd.PASS_CONTROL, _U32.pack(address), datasize=4, deadline=deadline)


async def set_bus_address(
    transport: Vxi11Transport, address: int, *, deadline: float = math.inf
) -> None:
    """Set the gateway's own bus address, 0..30 (BUS_ADDRESS)."""
    if not 0 <= address <= 30:
        raise ValueError(f"GPIB address must be 0..30, got {address}")
    await transport.docmd(Docmd.BUS_ADDRESS, _U32.pack(address), datasize=4, deadline=deadline)


async def interface_clear(transport: Vxi11Transport, *, deadline: float = math.inf) -> None:
    """Pulse IFC (IFC_CONTROL): every device unaddressed."""
    await transport.docmd(Docmd.IFC_CONTROL, b"", datasize=1, deadline=deadline)
