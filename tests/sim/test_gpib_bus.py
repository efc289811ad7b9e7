"""The simulated GPIB bus behind the VXI-11 simulator's gateway mode (sans-IO)."""

from __future__ import annotations

import struct

import pytest

from aiotmc.protocol.vxi11 import BusStatus, Docmd, ErrorCode
from aiotmc.sim import create_device
from aiotmc.sim.gpib_bus import GpibBus, gpib_buses, parse_gpib_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpib0,5", ("gpib0", (5, None))),
        ("GPIB1,30,2", ("gpib1", (30, 2))),
        ("gpib0,31", None),
        ("gpib0,5,31", None),
        ("inst0", None),
        ("gpib0", None),
        ("gpib0,5,", None),
    ],
)
def test_parse_gpib_name(name: str, expected: object) -> None:
    assert parse_gpib_name(name) == expected


def test_buses_by_interface() -> None:
    five, seven, other = create_device("dmm"), create_device("psu"), create_device("dmm")
    buses = gpib_buses({"gpib0,5": five, "gpib0,7,1": seven, "gpib1,5": other, "inst0": five})
    assert set(buses) == {"gpib0", "gpib1"}
    assert buses["gpib0"].devices == {(5, None): five, (7, 1): seven}


def test_docmd_checks_sizes_and_items() -> None:
    bus = GpibBus("gpib0")
    assert bus.docmd(Docmd.BUS_STATUS, 4, b"\0\0\0\1") == (ErrorCode.PARAMETER_ERROR, b"")
    assert bus.docmd(Docmd.BUS_STATUS, 2, b"\0\x63") == (ErrorCode.PARAMETER_ERROR, b"")
    assert bus.docmd(Docmd.SEND_COMMAND, 2, b"\0\1") == (ErrorCode.PARAMETER_ERROR, b"")
    assert bus.docmd(Docmd.SEND_COMMAND, 1, bytes(5000))[0] == ErrorCode.PARAMETER_ERROR
    assert bus.docmd(Docmd.BUS_ADDRESS, 4, struct.pack(">I", 31))[0] == ErrorCode.PARAMETER_ERROR
    assert bus.docmd(Docmd.PASS_CONTROL, 2, b"\0\5")[0] == ErrorCode.PARAMETER_ERROR
    assert bus.docmd(0x7777, 1, b"")[0] == ErrorCode.OPERATION_NOT_SUPPORTED
    item = struct.pack(">H", BusStatus.SYSTEM_CONTROLLER)
    assert bus.docmd(Docmd.BUS_STATUS, 2, item) == (ErrorCode.NO_ERROR, b"\0\1")


def test_remote_follows_ren_addressing_and_lockout() -> None:
    bus = GpibBus("gpib0")
    bus.send_command(bytes([0x25]))  # listen 5 without REN: stays local
    assert not bus.remote((5, None))
    bus.set_ren(True)
    bus.send_command(bytes([0x3F, 0x25]))
    assert bus.remote((5, None)) and not bus.remote((7, None))
    bus.send_command(bytes([0x01]))  # GTL to the listeners
    assert not bus.remote((5, None))
    bus.send_command(bytes([0x11]))  # LLO: everyone
    assert bus.remote((7, None))
    bus.set_ren(False)
    assert not bus.remote((7, None)) and not bus.lockout
    bus.send_command(bytes([0x3F, 0x47, 0x61]))  # talk 7, secondary 1
    assert bus.talker == (7, 1)
    bus.send_command(bytes([0x5F]))
    assert bus.talker is None


def test_pass_control_and_back() -> None:
    bus = GpibBus("gpib0")
    bus.devices[(5, None)] = create_device("dmm")
    bus.devices[(9, 2)] = create_device("dmm")
    address = struct.pack(">I", 5)
    assert bus.docmd(Docmd.PASS_CONTROL, 4, struct.pack(">I", 31))[0] == ErrorCode.PARAMETER_ERROR
    assert bus.docmd(Docmd.PASS_CONTROL, 4, struct.pack(">I", 0))[0] == ErrorCode.PARAMETER_ERROR
    assert bus.docmd(Docmd.PASS_CONTROL, 4, struct.pack(">I", 7))[0] == ErrorCode.IO_ERROR
    assert bus.in_charge
    assert bus.docmd(Docmd.PASS_CONTROL, 4, address) == (ErrorCode.NO_ERROR, address)
    assert bus.controller == 5 and bus.talker == (5, None)
    cic = struct.pack(">H", BusStatus.CONTROLLER_IN_CHARGE)
    assert bus.docmd(Docmd.BUS_STATUS, 2, cic) == (ErrorCode.NO_ERROR, b"\0\0")
    # what needs the CIC fails; what the system controller does alone still works
    for cmd, data in [
        (Docmd.SEND_COMMAND, b"\x3f"),
        (Docmd.ATN_CONTROL, b"\0\1"),
        (Docmd.PASS_CONTROL, struct.pack(">I", 9)),
    ]:
        assert bus.docmd(cmd, len(data) if cmd != Docmd.SEND_COMMAND else 1, data)[0] == (
            ErrorCode.IO_ERROR
        )
    assert bus.docmd(Docmd.REN_CONTROL, 2, b"\0\1")[0] == ErrorCode.NO_ERROR
    assert bus.docmd(Docmd.BUS_ADDRESS, 4, struct.pack(">I", 3))[0] == ErrorCode.NO_ERROR
    assert bus.return_control() and bus.in_charge and not bus.return_control()
    assert bus.docmd(Docmd.BUS_STATUS, 2, cic) == (ErrorCode.NO_ERROR, b"\0\1")
    assert bus.docmd(Docmd.PASS_CONTROL, 4, struct.pack(">I", 9))[0] == ErrorCode.NO_ERROR
    assert bus.docmd(Docmd.IFC_CONTROL, 1, b"")[0] == ErrorCode.NO_ERROR  # IFC takes it back
    assert bus.in_charge and bus.talker is None
