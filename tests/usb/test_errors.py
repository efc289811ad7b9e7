"""libusb error codes / transfer statuses -> aiotmc exceptions; library loading; names."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from aiotmc import (
    AiotmcError,
    ConnectError,
    ConnectionLostError,
    InvalidResourceName,
    PermissionDeniedError,
    ResourceBusyError,
    UsbStallError,
    UsbTransferError,
)
from aiotmc._usb import library
from aiotmc._usb.descriptors import (
    EndpointDescriptor,
    InterfaceDescriptor,
    find_usbtmc_interfaces,
)
from aiotmc._usb.discovery import UsbResourceInfo, visa_usb_name
from aiotmc._usb.errors import (
    LibusbError,
    TransferStatus,
    error_from_code,
    error_from_status,
    map_usb_errors,
    udev_hint,
    usb_error_code,
)
from aiotmc.resources import UsbInstr, parse_resource

from .fakes import FakeUSBError


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (LibusbError.ACCESS, PermissionDeniedError),
        (LibusbError.BUSY, ResourceBusyError),
        (LibusbError.NO_DEVICE, ConnectionLostError),
        (LibusbError.PIPE, UsbStallError),
        (LibusbError.IO, UsbTransferError),
        (LibusbError.OVERFLOW, UsbTransferError),
        (LibusbError.TIMEOUT, UsbTransferError),
        (-1234, UsbTransferError),
    ],
)
def test_error_from_code(code: int, expected: type[Exception]) -> None:
    error = error_from_code(code, operation="op", resource="USB0::1::2::3::INSTR", endpoint=0x82)
    assert type(error) is expected
    assert "USB0::1::2::3::INSTR" in str(error)
    if isinstance(error, UsbTransferError):
        assert error.status == code
        assert error.endpoint == 0x82


def test_access_error_has_a_udev_hint() -> None:
    error = error_from_code(LibusbError.ACCESS, operation="open", vid=0x0957, pid=0x1796)
    assert isinstance(error, PermissionError)
    assert 'ATTR{idVendor}=="0957"' in str(error)
    assert "udev" in str(error)
    assert "uaccess" in udev_hint()


def test_generic_error_while_opening_is_a_connect_error() -> None:
    error = error_from_code(LibusbError.NOT_SUPPORTED, operation="open", opening=True)
    assert type(error) is ConnectError


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (TransferStatus.NO_DEVICE, ConnectionLostError),
        (TransferStatus.STALL, UsbStallError),
        (TransferStatus.ERROR, UsbTransferError),
        (TransferStatus.TIMED_OUT, UsbTransferError),
        (TransferStatus.OVERFLOW, UsbTransferError),
        (TransferStatus.CANCELLED, UsbTransferError),
    ],
)
def test_error_from_status(status: int, expected: type[Exception]) -> None:
    error = error_from_status(status, endpoint=0x01)
    assert type(error) is expected
    assert "0x01" in str(error)


def test_completed_status_is_no_error() -> None:
    assert error_from_status(TransferStatus.COMPLETED) is None


def test_map_usb_errors() -> None:
    with pytest.raises(ResourceBusyError) as info, map_usb_errors("claim", resource="R"):
        raise FakeUSBError(LibusbError.BUSY)
    assert isinstance(info.value.__cause__, FakeUSBError)
    with pytest.raises(KeyError), map_usb_errors("claim"):
        raise KeyError("not a USB error")
    with pytest.raises(ConnectionLostError), map_usb_errors("x"):
        raise ConnectionLostError("already mapped")


def test_usb_error_code() -> None:
    assert usb_error_code(FakeUSBError(-4)) == -4
    assert usb_error_code(ValueError()) is None


def test_numbers_match_python_libusb1() -> None:
    usb1 = pytest.importorskip("usb1")
    for member in LibusbError:
        if member is not LibusbError.SUCCESS:
            assert getattr(usb1, f"ERROR_{member.name}") == member
    for status in TransferStatus:
        assert getattr(usb1, f"TRANSFER_{status.name}") == status
    assert usb_error_code(usb1.USBErrorBusy(usb1.ERROR_BUSY)) == LibusbError.BUSY


def test_library_choice_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(library.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="AIOTMC_LIBUSB"):
        library._resolve_choice(None)
    assert library._resolve_choice("SYSTEM") == "system"


def test_load_libusb() -> None:
    pytest.importorskip("usb1")
    loaded = library.load_libusb()
    assert loaded in ("system",) or loaded.startswith("package:")
    assert library.loaded_library() == loaded
    assert library.load_libusb("package") == loaded  # one library per process


def test_not_found_error_is_an_oserror_and_connect_error() -> None:
    from aiotmc._usb.errors import LibusbNotFoundError

    error = LibusbNotFoundError("no libusb")
    assert isinstance(error, OSError) and isinstance(error, ConnectError)
    assert isinstance(error, AiotmcError)


def test_visa_names() -> None:
    assert visa_usb_name(0x0957, 0x1796, "MY123") == "USB0::0x0957::0x1796::MY123::INSTR"
    assert visa_usb_name(0x1AB1, 0x04CE, "DS1ZA", 2) == "USB0::0x1AB1::0x04CE::DS1ZA::2::INSTR"
    info = UsbResourceInfo(vid=0x0957, pid=0x1796, serial="MY123", interface=0)
    assert info.visa_name == "USB0::0x0957::0x1796::MY123::INSTR"
    # No serial number: no interface either (the grammar could not tell them apart).
    assert visa_usb_name(0x0957, 0x1796, None, 2) == "USB0::0x0957::0x1796::INSTR"
    assert visa_usb_name(0x0957, 0x1796, "", 2) == "USB0::0x0957::0x1796::INSTR"
    # A serial number the grammar cannot hold is still named (for messages and listings).
    assert visa_usb_name(0x0957, 0x1796, "S N", 1) == "USB0::0x0957::0x1796::S N::1::INSTR"


@example(vid=0, pid=0, serial=":", interface=0, board=0)  # once failed: a ':' beside '::'
@given(
    vid=st.integers(0, 0xFFFF),
    pid=st.integers(0, 0xFFFF),
    serial=st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    interface=st.integers(0, 255),
    board=st.integers(0, 9),
)
def test_visa_names_match_the_resource_grammar(
    vid: int, pid: int, serial: str | None, interface: int, board: int
) -> None:
    """_usb formats names itself (it imports nothing above it): the same text as UsbInstr."""
    try:
        resource = UsbInstr(
            board=board,
            vid=vid,
            pid=pid,
            serial=serial or None,
            interface=(interface or None) if serial else None,
        )
    except InvalidResourceName:
        assume(False)
        return
    name = visa_usb_name(vid, pid, serial, interface, board)
    assert name == str(resource)
    assert parse_resource(name) == resource


def _ep(address: int, kind: int, size: int = 512) -> EndpointDescriptor:
    return EndpointDescriptor(address=address, attributes=kind, max_packet_size=size)


def test_find_usbtmc_interfaces() -> None:
    usbtmc = InterfaceDescriptor(
        number=1,
        alt_setting=0,
        interface_class=0xFE,
        interface_subclass=0x03,
        interface_protocol=1,
        endpoints=(_ep(0x02, 2), _ep(0x81, 2, 64), _ep(0x83, 3, 8)),
    )
    other = InterfaceDescriptor(
        number=0,
        alt_setting=0,
        interface_class=0xFF,
        interface_subclass=0,
        interface_protocol=0,
        endpoints=(_ep(0x01, 2), _ep(0x82, 2)),
    )
    no_bulk_in = InterfaceDescriptor(
        number=2,
        alt_setting=0,
        interface_class=0xFE,
        interface_subclass=0x03,
        interface_protocol=0,
        endpoints=(_ep(0x04, 2),),
    )
    (found,) = find_usbtmc_interfaces([other, usbtmc, no_bulk_in])
    assert found.number == 1
    assert (found.bulk_out, found.bulk_in, found.interrupt_in) == (0x02, 0x81, 0x83)
    assert found.max_packet_size == 64
    assert found.interrupt_max_packet_size == 8
    assert found.usb488
