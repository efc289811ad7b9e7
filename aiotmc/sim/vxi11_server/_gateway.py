"""Gateway mode (VXI-11.2): the calls on an interface link (``gpibN``), carried out on
the simulated GPIB bus, and which bus a device link's device is on."""

from __future__ import annotations

from collections.abc import Mapping

from ...protocol.vxi11 import (
    DeviceDocmdParms,
    DeviceDocmdResp,
    DeviceError,
    DeviceReadResp,
    DeviceWriteResp,
    ErrorCode,
    Proc,
)
from ..gpib_bus import GpibBus, parse_gpib_name
from ._args import error_only

__all__ = ["bus_of", "interface_call"]


def bus_of(buses: Mapping[str, GpibBus], name: str) -> GpibBus | None:
    """The bus of the device named ``name`` (``gpibN,addr``), None if not a GPIB name."""
    parsed = parse_gpib_name(name)
    return None if parsed is None else buses.get(parsed[0])


def interface_call(bus: GpibBus, proc: Proc, args: memoryview) -> bytes:
    """A call on an interface link other than destroy_link: device_docmd,
    device_remote/local (REN), device_clear (DCL); the device operations are not
    supported there."""
    if proc == Proc.DEVICE_DOCMD:
        parms = DeviceDocmdParms.decode(args)
        error, data = bus.docmd(parms.cmd, parms.datasize, bytes(parms.data_in))
        return DeviceDocmdResp(error, data).encode()
    if proc in (Proc.DEVICE_REMOTE, Proc.DEVICE_LOCAL):
        bus.set_ren(proc == Proc.DEVICE_REMOTE)
        return DeviceError(0).encode()
    if proc == Proc.DEVICE_CLEAR:  # the interface: DCL to every device on the bus
        if not bus.in_charge:
            return DeviceError(ErrorCode.IO_ERROR).encode()
        bus.send_command(bytes([0x14]))
        return DeviceError(0).encode()
    if proc == Proc.DEVICE_WRITE:
        return DeviceWriteResp(ErrorCode.OPERATION_NOT_SUPPORTED, 0).encode()
    if proc == Proc.DEVICE_READ:
        return DeviceReadResp(ErrorCode.OPERATION_NOT_SUPPORTED, 0, b"").encode()
    return error_only(proc, ErrorCode.OPERATION_NOT_SUPPORTED)
