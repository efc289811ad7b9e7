"""The Linux kernel's own usbtmc driver against the emulator (through xHCI + usb-redir).

Nobody here wrote ``drivers/usb/class/usbtmc.c``: if it accepts the emulated instrument,
the emulator behaves like an instrument, not only like what aiotmc expects.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from .link import HostLink, UsbDevice

# include/uapi/linux/usb/tmc.h
_NR = 91


def _io(nr: int) -> int:
    return (_NR << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (_NR << 8) | nr


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (_NR << 8) | nr


USBTMC_IOCTL_INDICATOR_PULSE = _io(1)
USBTMC_IOCTL_CLEAR = _io(2)
USBTMC_IOCTL_CTRL_REQUEST = (3 << 30) | (16 << 16) | (_NR << 8) | 8  # _IOWR, 16-byte struct
USBTMC_IOCTL_SET_TIMEOUT = _iow(10, 4)
USBTMC_IOCTL_API_VERSION = _ior(16, 4)
USBTMC488_IOCTL_GET_CAPS = _ior(17, 1)
USBTMC488_IOCTL_READ_STB = _ior(18, 1)
USBTMC488_IOCTL_REN_CONTROL = _iow(19, 1)
USBTMC488_IOCTL_GOTO_LOCAL = _io(20)
USBTMC488_IOCTL_LOCAL_LOCKOUT = _io(21)
USBTMC488_IOCTL_TRIGGER = _io(22)
USBTMC_IOCTL_GET_STB = _ior(26, 1)
USBTMC_IOCTL_GET_SRQ_STB = _ior(27, 1)


class Tmc:
    """/dev/usbtmcN as a file descriptor."""

    def __init__(self, device: UsbDevice) -> None:
        node = device.usbtmc_node()
        assert node is not None, "no usbtmc node"
        self.fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
        fcntl.ioctl(self.fd, USBTMC_IOCTL_SET_TIMEOUT, struct.pack("I", 5000))

    def write(self, text: bytes) -> None:
        assert os.write(self.fd, text) == len(text)

    def read(self, size: int = 65536) -> bytes:
        return os.read(self.fd, size)

    def query(self, text: bytes) -> bytes:
        self.write(text)
        return self.read()

    def ioctl_u8(self, request: int, value: int | None = None) -> int:
        buffer = bytearray(struct.pack("B", value or 0))
        fcntl.ioctl(self.fd, request, buffer)
        return buffer[0]

    def ioctl(self, request: int, value: int = 0) -> None:
        fcntl.ioctl(self.fd, request, value)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def tmc(plugged: HostLink) -> Iterator[Tmc]:
    device = plugged.plug("dmm")
    handle = Tmc(device)
    yield handle
    handle.close()


def test_driver_binds_and_reads_capabilities(plugged: HostLink) -> None:
    device = plugged.plug("dmm")
    assert device.driver() == "usbtmc"
    interface = device.interface
    # The driver issued GET_CAPABILITIES at probe and exposes what it understood.
    attrs = {
        name: int((interface / name).read_text(), 0)
        for name in (
            "interface_capabilities",
            "device_capabilities",
            "usb488_interface_capabilities",
            "usb488_device_capabilities",
        )
        if (interface / name).is_file()
    }
    assert attrs.get("interface_capabilities") == 0x04, attrs  # INDICATOR_PULSE
    assert attrs.get("device_capabilities") == 0x01, attrs  # TermChar
    assert attrs.get("usb488_interface_capabilities") == 0x07, attrs  # 488.2, REN, TRIGGER
    assert attrs.get("usb488_device_capabilities") == 0x0F, attrs  # SCPI, SR1, RL1, DT1


def test_idn_write_then_read(tmc: Tmc) -> None:
    idn = tmc.query(b"*IDN?\n")
    assert idn.startswith(b"aiotmc,") and idn.endswith(b"\n"), idn
    assert idn.count(b",") == 3
    for _ in range(5):
        assert tmc.query(b"*IDN?\n") == idn


def test_get_caps_ioctl(tmc: Tmc) -> None:
    caps = tmc.ioctl_u8(USBTMC488_IOCTL_GET_CAPS)
    # (bmInterfaceCapabilities488 & 7) | (bmDeviceCapabilities488 & 0xF) << 4
    assert caps == 0x07 | (0x0F << 4), hex(caps)
    api = bytearray(4)
    fcntl.ioctl(tmc.fd, USBTMC_IOCTL_API_VERSION, api)
    assert struct.unpack("I", api)[0] >= 2


def test_get_capabilities_through_the_drivers_control_request(tmc: Tmc) -> None:
    """USBTMC_IOCTL_CTRL_REQUEST: a raw GET_CAPABILITIES through the kernel's control path."""
    reply = ctypes.create_string_buffer(0x18)
    request = struct.pack("<BBHHH", 0xA1, 7, 0, 0, 0x18) + struct.pack(
        "<Q", ctypes.addressof(reply)
    )
    fcntl.ioctl(tmc.fd, USBTMC_IOCTL_CTRL_REQUEST, bytearray(request))
    caps = reply.raw
    assert caps[0] == 0x01, caps.hex()  # STATUS_SUCCESS
    assert caps[2:4] == b"\x00\x01"  # bcdUSBTMC 1.00
    assert (caps[4], caps[5], caps[14], caps[15]) == (0x04, 0x01, 0x07, 0x0F), caps.hex()


def test_read_stb_on_interrupt_endpoint(tmc: Tmc, plugged: HostLink) -> None:
    tmc.write(b"*CLS;*SRE 0\n")
    assert tmc.ioctl_u8(USBTMC488_IOCTL_READ_STB) & 0x10 == 0  # no MAV
    tmc.write(b"*IDN?\n")
    time.sleep(0.05)
    assert tmc.ioctl_u8(USBTMC488_IOCTL_READ_STB) & 0x10  # MAV: a response is waiting
    assert tmc.read().startswith(b"aiotmc,")
    counts = plugged.stats()["usbredir"]
    # The driver's READ_STATUS_BYTE answers came back as interrupt-IN packets.
    assert counts.get("sent_interrupt_packet", 0) >= 2, counts
    assert counts.get("start_interrupt_receiving") == 1, counts


def test_trigger(tmc: Tmc, plugged: HostLink) -> None:
    tmc.ioctl(USBTMC488_IOCTL_TRIGGER)
    tmc.ioctl(USBTMC488_IOCTL_TRIGGER)
    assert plugged.stats()["triggers"] == 2
    assert tmc.query(b"*IDN?\n").startswith(b"aiotmc,")


def test_clear(tmc: Tmc) -> None:
    tmc.write(b"*IDN?\n")  # leave a response unread
    tmc.ioctl(USBTMC_IOCTL_CLEAR)
    assert tmc.query(b"*OPC?\n").strip() == b"1"


def test_indicator_pulse(tmc: Tmc, plugged: HostLink) -> None:
    tmc.ioctl(USBTMC_IOCTL_INDICATOR_PULSE)
    assert plugged.stats()["indicator_pulses"] == 1


def test_ren_gtl_llo(tmc: Tmc, plugged: HostLink) -> None:
    tmc.ioctl_u8(USBTMC488_IOCTL_REN_CONTROL, 1)
    assert plugged.stats()["remote_enabled"]
    tmc.ioctl(USBTMC488_IOCTL_LOCAL_LOCKOUT)
    assert plugged.stats()["local_lockout"]
    tmc.ioctl(USBTMC488_IOCTL_GOTO_LOCAL)
    assert not plugged.stats()["local_lockout"]
    tmc.ioctl_u8(USBTMC488_IOCTL_REN_CONTROL, 0)
    assert not plugged.stats()["remote_enabled"]
    assert tmc.query(b"*IDN?\n").startswith(b"aiotmc,")


def test_srq_wakes_a_poll_waiter(tmc: Tmc, plugged: HostLink) -> None:
    woke: list[tuple[float, int]] = []
    poller = select.poll()
    poller.register(tmc.fd, select.POLLPRI)

    def wait() -> None:
        started = time.monotonic()
        for fd, events in poller.poll(10_000):
            woke.append((time.monotonic() - started, events))
            assert fd == tmc.fd

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    assert not woke
    plugged.call("inject_srq", 0x51)
    waiter.join(15)
    assert woke and woke[0][1] & select.POLLPRI, woke
    assert tmc.ioctl_u8(USBTMC_IOCTL_GET_SRQ_STB) == 0x51


def test_srq_from_operation_complete(tmc: Tmc) -> None:
    """The instrument model raises the SRQ itself: *OPC with ESB enabled in *SRE."""
    poller = select.poll()
    poller.register(tmc.fd, select.POLLPRI)
    tmc.write(b"*CLS;*ESE 1;*SRE 32;*OPC\n")
    events = poller.poll(10_000)
    assert events and events[0][1] & select.POLLPRI, events
    stb = tmc.ioctl_u8(USBTMC_IOCTL_GET_SRQ_STB)
    assert stb & 0x60 == 0x60, hex(stb)  # RQS + ESB
