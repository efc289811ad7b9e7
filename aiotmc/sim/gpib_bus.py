"""A simulated GPIB bus behind a VXI-11.2 gateway: the devices at their addresses and
the bus state that ``device_docmd`` on the interface link (``gpib0``) reads and changes.

No timing, no handshake: command bytes act at once on the simulated devices (GET
triggers, SDC/DCL clear, LLO/GTL and REN set the remote state the server reports).

Control (IEEE 488.1 C function): the gateway is system controller and starts as
controller in charge (CIC). PASS_CONTROL makes the device at the address given the CIC
(talk address, then TCT); from then on what needs the CIC (SEND_COMMAND, ATN_CONTROL,
PASS_CONTROL, and every operation on a device link, which addresses the device) answers
I/O error 17 until control comes back: the device passes it back (:meth:`GpibBus.return_control`,
what a real instrument does by addressing the gateway to talk and sending TCT), or the
gateway takes it with IFC (the system controller's interface clear always makes it CIC
again). REN_CONTROL, BUS_STATUS and BUS_ADDRESS do not need the CIC.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Final

from ..protocol.vxi11 import BusStatus, Docmd, ErrorCode
from .device import SimDevice

__all__ = ["GpibBus", "gpib_buses", "parse_gpib_name"]

_NAME: Final = re.compile(r"(gpib\d+),(\d+)(?:,(\d+))?")
MAX_COMMAND_BYTES: Final = 4096  #: SEND_COMMAND data accepted at once
_RQS: Final = 0x40

# GPIB command bytes (IEEE 488.1), parity bit ignored
_GTL, _SDC, _GET, _TCT, _LLO, _DCL = 0x01, 0x04, 0x08, 0x09, 0x11, 0x14
_UNL, _UNT = 0x3F, 0x5F

_NEEDS_CIC: Final = frozenset({Docmd.SEND_COMMAND, Docmd.ATN_CONTROL, Docmd.PASS_CONTROL})

Address = tuple[int, int | None]  #: (primary, secondary or None)


def parse_gpib_name(name: str) -> tuple[str, Address] | None:
    """``"gpib0,5"`` -> ``("gpib0", (5, None))``; ``"gpib0,5,2"`` -> ``(..., (5, 2))``;
    None for another name or an address out of range (primary 0..30, secondary 0..30)."""
    match = _NAME.fullmatch(name.lower())
    if match is None:
        return None
    primary = int(match[2])
    secondary = None if match[3] is None else int(match[3])
    if primary > 30 or (secondary is not None and secondary > 30):
        return None
    return match[1], (primary, secondary)


def gpib_buses(devices: Mapping[str, SimDevice]) -> dict[str, GpibBus]:
    """One bus per interface name found in ``devices``' names (``gpib0,5`` -> ``gpib0``)."""
    buses: dict[str, GpibBus] = {}
    for name, device in devices.items():
        parsed = parse_gpib_name(name)
        if parsed is not None:
            interface, address = parsed
            buses.setdefault(interface, GpibBus(interface)).devices[address] = device
    return buses


class GpibBus:
    """The bus of one interface: its devices by address and the controller's state."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.devices: dict[Address, SimDevice] = {}
        self.address = 0  #: the gateway's own bus address
        self.ren = False
        self.atn = False
        self.lockout = False  #: LLO sent (and REN still asserted)
        self.listeners: set[Address] = set()
        self.talker: Address | None = None
        self.commands: list[bytes] = []  #: every SEND_COMMAND, in order (tests)
        #: the primary address of the device holding control; None: the gateway is CIC
        self.controller: int | None = None
        self._last: tuple[str, int] | None = None  # the primary address just sent
        self._remote: set[Address] = set()  # addressed to listen while REN was asserted

    def remote(self, address: Address) -> bool:
        """True when the device at ``address`` is in remote (REN and addressed, or LLO)."""
        return self.ren and (self.lockout or address in self._remote)

    @property
    def in_charge(self) -> bool:
        """True while the gateway is controller in charge."""
        return self.controller is None

    def pass_control(self, address: int) -> int:
        """PASS_CONTROL: make the device at primary ``address`` the CIC (an error code:
        5 for an address out of 0..30 or the gateway's own, 17 when the gateway is not
        CIC or nobody is at ``address`` to take control)."""
        if not 0 <= address <= 30 or address == self.address:
            return ErrorCode.PARAMETER_ERROR
        if not self.in_charge or not any(a[0] == address for a in self.devices):
            return ErrorCode.IO_ERROR
        self.listeners.clear()
        self.talker = (address, None)  # talk address, then TCT; ATN released
        self._last = None
        self.atn = False
        self.controller = address
        return ErrorCode.NO_ERROR

    def return_control(self) -> bool:
        """The device in charge passes control back to the gateway (it addresses the
        gateway to talk and sends TCT); False when the gateway already is CIC."""
        if self.controller is None:
            return False
        self.controller = None
        self.talker = None
        self.listeners.clear()
        self._last = None
        return True

    def docmd(self, cmd: int, datasize: int, data: bytes) -> tuple[int, bytes]:
        """Carry out one device_docmd: (error code, data_out)."""
        if cmd in _NEEDS_CIC and not self.in_charge:
            return ErrorCode.IO_ERROR, b""
        if cmd == Docmd.SEND_COMMAND:
            if datasize != 1 or len(data) > MAX_COMMAND_BYTES:
                return ErrorCode.PARAMETER_ERROR, b""
            self.send_command(data)
            return ErrorCode.NO_ERROR, data
        if cmd == Docmd.IFC_CONTROL:
            self.ifc()
            return ErrorCode.NO_ERROR, b""
        if cmd in (Docmd.BUS_STATUS, Docmd.ATN_CONTROL, Docmd.REN_CONTROL):
            if datasize != 2 or len(data) != 2:
                return ErrorCode.PARAMETER_ERROR, b""
            (value,) = struct.unpack(">H", data)
            if cmd == Docmd.BUS_STATUS:
                status = self.status(value)
                if status is None:
                    return ErrorCode.PARAMETER_ERROR, b""
                return ErrorCode.NO_ERROR, struct.pack(">H", status)
            if cmd == Docmd.ATN_CONTROL:
                self.atn = bool(value)
            else:
                self.set_ren(bool(value))
            return ErrorCode.NO_ERROR, data
        if cmd == Docmd.BUS_ADDRESS:
            if datasize != 4 or len(data) != 4:
                return ErrorCode.PARAMETER_ERROR, b""
            (address,) = struct.unpack(">I", data)
            if address > 30:
                return ErrorCode.PARAMETER_ERROR, b""
            self.address = address
            return ErrorCode.NO_ERROR, data
        if cmd == Docmd.PASS_CONTROL:
            if datasize != 4 or len(data) != 4:
                return ErrorCode.PARAMETER_ERROR, b""
            error = self.pass_control(struct.unpack(">I", data)[0])
            return error, b"" if error else data
        return ErrorCode.OPERATION_NOT_SUPPORTED, b""

    def status(self, item: int) -> int | None:
        """The BUS_STATUS value of ``item`` (None: unknown item)."""
        if item == BusStatus.REMOTE:
            return int(self.ren)
        if item == BusStatus.SRQ:
            return int(any(d.status_byte & _RQS for d in self.devices.values()))
        if item == BusStatus.NDAC:
            return 0
        if item == BusStatus.SYSTEM_CONTROLLER:
            return 1
        if item == BusStatus.CONTROLLER_IN_CHARGE:
            return int(self.in_charge)
        if item == BusStatus.TALKER:
            return int(self.talker == (self.address, None))
        if item == BusStatus.LISTENER:
            return int((self.address, None) in self.listeners)
        if item == BusStatus.BUS_ADDRESS:
            return self.address
        return None

    def set_ren(self, on: bool) -> None:
        """Assert or release REN (released: every device local, lockout gone)."""
        self.ren = on
        if not on:
            self.lockout = False
            self._remote = set()

    def ifc(self) -> None:
        """Interface clear: nobody addressed; the gateway (system controller) is CIC."""
        self.controller = None
        self.listeners.clear()
        self.talker = None
        self._last = None

    def send_command(self, data: bytes) -> None:
        """Interpret GPIB command bytes (sent with ATN) on the simulated devices."""
        self.commands.append(bytes(data))
        for raw in data:
            byte = raw & 0x7F
            if 0x20 <= byte < _UNL:
                self.listeners.add((byte - 0x20, None))
                self._last = ("listen", byte - 0x20)
                if self.ren:
                    self._remote.add((byte - 0x20, None))
            elif byte == _UNL:
                self.listeners.clear()
                self._last = None
            elif 0x40 <= byte < _UNT:
                self.talker = (byte - 0x40, None)
                self._last = ("talk", byte - 0x40)
            elif byte == _UNT:
                self.talker = None
                self._last = None
            elif byte >= 0x60 and self._last is not None:
                role, primary = self._last
                address = (primary, byte - 0x60)
                if role == "listen":
                    self.listeners.discard((primary, None))
                    self.listeners.add(address)
                    if self.ren:
                        self._remote.add(address)
                else:
                    self.talker = address
            elif byte == _GET:
                for device in self._addressed():
                    device.trigger()
            elif byte == _SDC:
                for device in self._addressed():
                    device.device_clear()
            elif byte == _DCL:
                for device in self.devices.values():
                    device.device_clear()
            elif byte == _LLO:
                self.lockout = self.ren
            elif byte == _GTL:
                self._remote -= self.listeners

    def _addressed(self) -> list[SimDevice]:
        return [device for address, device in self.devices.items() if address in self.listeners]
