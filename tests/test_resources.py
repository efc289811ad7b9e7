"""Resource names: every form, canonical round trips, and every error with its caret."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiotmc
from aiotmc import InvalidResourceName
from aiotmc.resources import (
    DEFAULT_HISLIP_PORT,
    AsrlInstr,
    GpibInstr,
    PrologixAsrlInstr,
    PrologixInstr,
    ResourceName,
    SimInstr,
    TcpipHislip,
    TcpipInstr,
    TcpipSocket,
    UsbInstr,
    parse_resource,
)

# --------------------------------------------------------------------------- valid forms

VALID: list[tuple[str, ResourceName, str | None]] = [
    # serial ports and Prologix adapters (issue 17)
    ("ASRL/dev/ttyUSB0::INSTR", AsrlInstr(path="/dev/ttyUSB0"), None),
    ("asrl1::instr", AsrlInstr(board=1), "ASRL1::INSTR"),
    ("ASRL/dev/pts/3", AsrlInstr(path="/dev/pts/3"), "ASRL/dev/pts/3::INSTR"),
    (
        "prlgx-tcpip::192.0.2.1::1234::12",
        PrologixInstr(host="192.0.2.1", primary=12),
        "PRLGX-TCPIP0::192.0.2.1::1234::12::INSTR",
    ),
    (
        "prlgx-asrl::/dev/ttyUSB0::12",
        PrologixAsrlInstr(port="/dev/ttyUSB0", primary=12),
        "PRLGX-ASRL0::/dev/ttyUSB0::12::INSTR",
    ),
    (
        "PRLGX-TCPIP1::[::1]::4000::5::3::INSTR",
        PrologixInstr(board=1, host="::1", port=4000, primary=5, secondary=3),
        None,
    ),
    ("GPIB0::12::INSTR", GpibInstr(primary=12), None),
    ("gpib::5", GpibInstr(primary=5), "GPIB0::5::INSTR"),
    ("GPIB1::5::30::INSTR", GpibInstr(board=1, primary=5, secondary=30), None),
    # raw sockets
    (
        "TCPIP::10.0.0.5::5025::SOCKET",
        TcpipSocket(host="10.0.0.5", port=5025),
        "TCPIP0::10.0.0.5::5025::SOCKET",
    ),
    (
        "tcpip3::scope.lab.example::1::socket",
        TcpipSocket(board=3, host="scope.lab.example", port=1),
        "TCPIP3::scope.lab.example::1::SOCKET",
    ),
    ("TCPIP::h::65535::SOCKET", TcpipSocket(host="h", port=65535), "TCPIP0::h::65535::SOCKET"),
    (
        "TCPIP::[::1]::5025::SOCKET",
        TcpipSocket(host="::1", port=5025),
        "TCPIP0::[::1]::5025::SOCKET",
    ),
    ("TCPIP::::1::5025::SOCKET", TcpipSocket(host="::1", port=5025), "TCPIP0::[::1]::5025::SOCKET"),
    (
        "TCPIP::fe80::1%eth0::5025::SOCKET",
        TcpipSocket(host="fe80::1%eth0", port=5025),
        "TCPIP0::[fe80::1%eth0]::5025::SOCKET",
    ),
    (
        "TCPIP::FE80:0:0::1::5025::SOCKET",
        TcpipSocket(host="fe80::1", port=5025),
        "TCPIP0::[fe80::1]::5025::SOCKET",
    ),
    (
        "TCPIP::dead::5025::SOCKET",
        TcpipSocket(host="dead", port=5025),
        "TCPIP0::dead::5025::SOCKET",
    ),
    ("  TCPIP::h::7::SOCKET \n", TcpipSocket(host="h", port=7), "TCPIP0::h::7::SOCKET"),
    # VXI-11
    ("TCPIP::host", TcpipInstr(host="host"), "TCPIP0::host::inst0::INSTR"),
    ("TCPIP::host::INSTR", TcpipInstr(host="host"), "TCPIP0::host::inst0::INSTR"),
    ("TCPIP2::host::inst0::instr", TcpipInstr(board=2, host="host"), "TCPIP2::host::inst0::INSTR"),
    (
        "TCPIP::10.1.1.1::gpib0,5::INSTR",
        TcpipInstr(host="10.1.1.1", lan_device_name="gpib0,5"),
        "TCPIP0::10.1.1.1::gpib0,5::INSTR",
    ),
    ("TCPIP::host::inst1", TcpipInstr(host="host", lan_device_name="inst1"), None),
    # VXI-11 with an explicit core port (pyvisa-py's host,port form)
    (
        "TCPIP::127.0.0.1,1024::inst0::INSTR",
        TcpipInstr(host="127.0.0.1", port=1024),
        "TCPIP0::127.0.0.1,1024::inst0::INSTR",
    ),
    ("TCPIP::host,7::INSTR", TcpipInstr(host="host", port=7), "TCPIP0::host,7::inst0::INSTR"),
    (
        "TCPIP::host,7::gpib0,5",
        TcpipInstr(host="host", port=7, lan_device_name="gpib0,5"),
        "TCPIP0::host,7::gpib0,5::INSTR",
    ),
    ("TCPIP::fe80::1::INSTR", TcpipInstr(host="fe80::1"), "TCPIP0::[fe80::1]::inst0::INSTR"),
    ("TCPIP::::1", TcpipInstr(host="::1"), "TCPIP0::[::1]::inst0::INSTR"),
    ("TCPIP::[::1]", TcpipInstr(host="::1"), "TCPIP0::[::1]::inst0::INSTR"),
    (
        "TCPIP::[fe80::1]::inst2::INSTR",
        TcpipInstr(host="fe80::1", lan_device_name="inst2"),
        "TCPIP0::[fe80::1]::inst2::INSTR",
    ),
    (
        "TCPIP::fe80::1::inst2::INSTR",
        TcpipInstr(host="fe80::1", lan_device_name="inst2"),
        "TCPIP0::[fe80::1]::inst2::INSTR",
    ),
    # HiSLIP
    ("TCPIP::host::hislip0::INSTR", TcpipHislip(host="host"), "TCPIP0::host::hislip0::INSTR"),
    ("TCPIP::host::HiSLIP0", TcpipHislip(host="host"), "TCPIP0::host::hislip0::INSTR"),
    (
        "TCPIP1::host::hislip1,4881::INSTR",
        TcpipHislip(board=1, host="host", session_name="hislip1", port=4881),
        "TCPIP1::host::hislip1,4881::INSTR",
    ),
    ("TCPIP::host::hislip0,4880::INSTR", TcpipHislip(host="host"), "TCPIP0::host::hislip0::INSTR"),
    ("TCPIP::[::1]::hislip0::INSTR", TcpipHislip(host="::1"), "TCPIP0::[::1]::hislip0::INSTR"),
    # USB
    (
        "USB::0x0957::0x1796::MY123::INSTR",
        UsbInstr(vid=0x0957, pid=0x1796, serial="MY123"),
        "USB0::0x0957::0x1796::MY123::INSTR",
    ),
    (
        "usb1::2391::6038::MY123::2::instr",
        UsbInstr(board=1, vid=0x0957, pid=0x1796, serial="MY123", interface=2),
        "USB1::0x0957::0x1796::MY123::2::INSTR",
    ),
    (
        "USB::0X0957::0x1796::INSTR",
        UsbInstr(vid=0x0957, pid=0x1796),
        "USB0::0x0957::0x1796::INSTR",
    ),
    ("USB::0x0957::0x1796", UsbInstr(vid=0x0957, pid=0x1796), "USB0::0x0957::0x1796::INSTR"),
    (
        "USB::0xabcd::0::12345",
        UsbInstr(vid=0xABCD, pid=0, serial="12345"),
        "USB0::0xABCD::0x0000::12345::INSTR",
    ),
    # simulated
    ("SIM::dmm", SimInstr(model="dmm"), "SIM::dmm"),
    ("sim::DMM::INSTR", SimInstr(model="dmm", name="dmm"), "SIM::dmm"),
    ("SIM::scope::bench2", SimInstr(model="scope", name="bench2"), "SIM::scope::bench2"),
    ("SIM::my_model::x-1.a", SimInstr(model="my_model", name="x-1.a"), None),
]


@pytest.mark.parametrize(("text", "expected", "canonical"), VALID, ids=[v[0] for v in VALID])
def test_parse_valid(text: str, expected: ResourceName, canonical: str | None) -> None:
    parsed = parse_resource(text)
    assert parsed == expected
    assert type(parsed) is type(expected)
    if canonical is not None:
        assert str(parsed) == canonical
    assert parse_resource(str(parsed)) == parsed


def test_kinds_and_interface_types() -> None:
    table = {
        TcpipSocket: ("tcpip-socket", "TCPIP", "SOCKET"),
        TcpipInstr: ("tcpip-instr", "TCPIP", "INSTR"),
        TcpipHislip: ("hislip", "TCPIP", "INSTR"),
        UsbInstr: ("usb", "USB", "INSTR"),
        SimInstr: ("sim", "SIM", "INSTR"),
    }
    for cls, (kind, interface_type, resource_class) in table.items():
        assert issubclass(cls, ResourceName)
        assert (cls.kind, cls.interface_type, cls.resource_class) == (
            kind,
            interface_type,
            resource_class,
        )


def test_defaults() -> None:
    assert TcpipHislip(host="h").port == DEFAULT_HISLIP_PORT == 4880
    assert TcpipInstr(host="h").lan_device_name == "inst0"
    assert SimInstr(model="psu").name == "psu"
    usb = parse_resource("USB::1::2::S::INSTR")
    assert isinstance(usb, UsbInstr)
    assert (usb.board, usb.interface) == (0, None)


def test_instances_are_frozen_hashable_and_keyword_only() -> None:
    res = TcpipSocket(host="h", port=1)
    with pytest.raises(AttributeError):
        res.port = 2  # type: ignore[misc]
    assert len({res, TcpipSocket(host="h", port=1), parse_resource("TCPIP::h::1::SOCKET")}) == 1
    with pytest.raises(TypeError):
        TcpipSocket(0, "h", 1)  # type: ignore[call-arg]


def test_pass_through_and_type_check() -> None:
    res = SimInstr(model="dmm")
    assert parse_resource(res) is res
    assert ResourceName.parse("SIM::dmm") == res
    with pytest.raises(TypeError):
        parse_resource(5025)  # type: ignore[arg-type]


def test_lazy_exports() -> None:
    assert aiotmc.parse_resource is parse_resource
    assert aiotmc.ResourceName is ResourceName


# --------------------------------------------------------------------------- errors

ERRORS: list[tuple[str, str, int | None]] = [
    # (text, message fragment, caret position)
    ("", "empty resource name", None),
    ("   ", "empty resource name", None),
    ("FOO::x", "unknown interface type 'FOO', expected TCPIP, USB or SIM", 0),
    ("  foo::x", "unknown interface type 'foo'", 2),
    ("GPIB-VXI0::1::INSTR", "interface type 'GPIB-VXI0' is not supported", 0),
    ("GPIB0::31::INSTR", "GPIB address must be 0..30, got '31'", 7),
    ("GPIB0::5::x::INSTR", "GPIB address must be 0..30, got 'x'", 10),
    ("GPIB0::INTFC", "GPIB interface resources are not supported", 7),
    ("GPIB0::1::2::3::INSTR", "unexpected '3'", 13),
    ("ASRL::INSTR", "missing port, expected ASRL<n>::INSTR", 4),
    ("ASRL1::SOCKET", "unknown resource class 'SOCKET', expected ::INSTR", 7),
    ("PRLGX-TCPIP0::h::1234::INTFC", "an adapter interface cannot be opened alone", 23),
    ("PRLGX-TCPIP0::h::1234::31::INSTR", "GPIB address must be 0..30, got '31'", 23),
    ("PRLGX-TCPIP0::h::1234::INSTR", "missing GPIB address", 28),
    ("PRLGX-ASRL::/dev/ttyUSB0::INSTR", "missing GPIB address", 31),
    ("PRLGX-ASRL::/dev/ttyUSB0::INTFC", "an adapter interface cannot be opened alone", 26),
    ("::x", "expected an interface type", 0),
    ("TCPIP0x::h", "expected '::' after 'TCPIP0'", 6),
    ("TCPIP", "missing host", 5),
    ("TCPIP::", "missing host", 7),
    ("TCPIP::::5025::SOCKET", "missing host", 7),
    ("TCPIP::host::99999::SOCKET", "port must be 1..65535, got '99999'", 13),
    ("TCPIP::host::0::SOCKET", "port must be 1..65535, got '0'", 13),
    ("TCPIP::host::http::SOCKET", "port must be 1..65535, got 'http'", 13),
    ("TCPIP::host::SOCKET", "missing port", 11),
    ("TCPIP::host::5025", "missing resource class, expected ::SOCKET or ::INSTR", 17),
    ("TCPIP::host::5025::SOCK", "unknown resource class 'SOCK', expected SOCKET or INSTR", 19),
    ("TCPIP::host::5025::INSTR", "expected a LAN device name such as inst0 or hislip0", 13),
    ("TCPIP::host::5025::SOCKET::x", "unexpected 'x' after ::SOCKET", 27),
    ("TCPIP::host::inst0::5025::SOCKET", "port must be 1..65535, got 'inst0'", 13),
    ("TCPIP::host::1::2::SOCKET", "unexpected '2', expected ::SOCKET", 16),
    ("TCPIP::host::inst0::x::INSTR", "unexpected 'x', expected ::INSTR", 20),
    ("TCPIP::host:5025", "invalid host 'host:5025', a port is written host::port::SOCKET", 7),
    ("TCPIP::a b::INSTR", "invalid host 'a b'", 7),
    ("TCPIP::-bad::INSTR", "invalid host '-bad'", 7),
    ("TCPIP::1:2:3::4::5::6::SOCKET", "invalid IPv6 address", 7),
    ("TCPIP::[::1", "missing ']' after the IPv6 address", 11),
    ("TCPIP::[zz]::1::SOCKET", "invalid IPv6 address 'zz'", 8),
    ("TCPIP::[::1]x::1::SOCKET", "expected '::' after ']'", 12),
    ("TCPIP::[::1]::SOCKET", "missing port", 12),
    ("TCPIP::host::hislip0,0::INSTR", "port must be 1..65535, got '0'", 21),
    ("TCPIP::host::hislip0,x::INSTR", "port must be 1..65535, got 'x'", 21),
    ("TCPIP::host,0::INSTR", "port must be 1..65535, got '0'", 12),
    ("TCPIP::host,x::inst0::INSTR", "port must be 1..65535, got 'x'", 12),
    ("TCPIP::host,5::hislip0::INSTR", "a HiSLIP port is written ::hislip0,port::INSTR", 11),
    ("TCPIP::host,5::SOCKET", "invalid host 'host,5'", 7),
    ("USB", "missing vendor ID", 3),
    ("USB::0x1::INSTR", "missing product ID", 8),
    ("USB::INSTR", "missing product ID", 5),
    ("USB::0x10000::1::INSTR", "vendor ID must be 0x0000..0xFFFF, got '0x10000'", 5),
    ("USB::65536::1::INSTR", "vendor ID must be 0x0000..0xFFFF, got '65536'", 5),
    ("USB::0x1::0xZZ::INSTR", "product ID must be hex (0x0957) or decimal, got '0xZZ'", 10),
    ("USB::0x1::0x::INSTR", "product ID must be hex (0x0957) or decimal, got '0x'", 10),
    ("USB::abc::1::INSTR", "vendor ID must be hex (0x0957) or decimal, got 'abc'", 5),
    ("USB::0x1::0x2::S::300::INSTR", "USB interface number must be 0..255, got '300'", 18),
    ("USB::0x1::0x2::S::x::INSTR", "USB interface number must be 0..255, got 'x'", 18),
    ("USB::0x1::0x2::S::INST", "unknown resource class 'INST', expected INSTR", 18),
    ("USB::0x1::0x2::S::0::1::INSTR", "unexpected '1', expected ::INSTR", 21),
    ("USB::0x1::0x2::a b::INSTR", "invalid serial number 'a b'", 15),
    ("USB::1::2::RAW", "USB RAW resources are not supported", 11),
    ("SIM", "missing model", 3),
    ("SIM0::dmm", "SIM resources take no board number", 3),
    ("SIM::1dmm", "simulated model must be an identifier", 5),
    ("SIM::", "simulated model must be an identifier", 5),
    ("SIM::dmm::a b", "simulated name must be an identifier", 10),
    ("SIM::dmm::a::b", "unexpected 'b', expected SIM::model[::name]", 13),
]


@pytest.mark.parametrize(("text", "message", "position"), ERRORS, ids=[e[0] for e in ERRORS])
def test_parse_errors(text: str, message: str, position: int | None) -> None:
    with pytest.raises(InvalidResourceName) as info:
        parse_resource(text)
    error = info.value
    assert message in str(error)
    assert isinstance(error, ValueError)
    if position is None:
        return
    assert error.position == position
    # The message ends with the resource and a caret under the offending character.
    *_, shown, caret = str(error).splitlines()
    assert shown == f"  {error.resource}"
    assert caret == " " * (position + 2) + "^"
    assert text.startswith(error.resource)


def test_caret_drawing() -> None:
    with pytest.raises(InvalidResourceName) as info:
        parse_resource("TCPIP::host::99999::SOCKET")
    assert str(info.value) == (
        "port must be 1..65535, got '99999'\n  TCPIP::host::99999::SOCKET\n               ^"
    )


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: TcpipSocket(host="h", port=0), "port must be 1..65535"),
        (lambda: TcpipSocket(host="", port=1), "missing host"),
        (lambda: TcpipSocket(host="a::b::c", port=1), "invalid IPv6 address"),
        (lambda: TcpipSocket(board=-1, host="h", port=1), "board number"),
        (lambda: TcpipInstr(host="h", lan_device_name="5025"), "invalid LAN device name"),
        (lambda: TcpipInstr(host="h", lan_device_name="a::b"), "invalid LAN device name"),
        (lambda: TcpipInstr(host="h", lan_device_name="hislip0"), "use TcpipHislip"),
        (lambda: TcpipHislip(host="h", session_name="inst0"), "HiSLIP session name"),
        (lambda: TcpipHislip(host="h", port=70000), "port must be 1..65535"),
        (lambda: UsbInstr(vid=0x10000, pid=1), "vendor ID must be"),
        (lambda: UsbInstr(vid=1, pid=-1), "product ID must be"),
        (lambda: UsbInstr(vid=1, pid=1, interface=0), "needs a serial number"),
        (lambda: UsbInstr(vid=1, pid=1, serial="S", interface=256), "0..255"),
        (lambda: UsbInstr(vid=1, pid=1, serial="instr"), "resource class"),
        (lambda: UsbInstr(vid=1, pid=1, serial=""), "invalid serial number"),
        (lambda: SimInstr(model="1x"), "identifier"),
        (lambda: SimInstr(model="dmm", name="INSTR"), "identifier"),
    ],
)
def test_construction_validates(factory: object, message: str) -> None:
    assert callable(factory)
    with pytest.raises(InvalidResourceName, match=message):
        factory()


# --------------------------------------------------------------------------- round trips

_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.integers(1, 65535)
boards = st.integers(0, 20)
ids = st.integers(0, 0xFFFF)
serials = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True).filter(
    lambda s: s.upper() not in ("INSTR", "RAW", "SOCKET")
)
lan_devices = st.from_regex(r"(inst|gpib|com)[0-9]{1,2}(,[0-9]{1,2})?", fullmatch=True)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(
    lambda s: s.upper() != "INSTR"
)


@given(boards, hosts, ports, st.booleans())
def test_socket_round_trip(board: int, host: str, port: int, lower: bool) -> None:
    res = TcpipSocket(board=board, host=host, port=port)
    assert parse_resource(str(res)) == res
    text = f"TCPIP{board}::{host}::{port}::SOCKET"  # bare IPv6 too
    assert parse_resource(text.lower() if lower else text) == (
        res if not lower else TcpipSocket(board=board, host=host.lower(), port=port)
    )


@given(boards, hosts, st.one_of(st.none(), lan_devices))
def test_vxi11_round_trip(board: int, host: str, device: str | None) -> None:
    res = TcpipInstr(board=board, host=host, lan_device_name=device or "inst0")
    assert parse_resource(str(res)) == res
    suffix = f"::{device}" if device else ""
    assert parse_resource(f"TCPIP{board}::{host}{suffix}::INSTR") == res


@given(boards, hosts, st.integers(0, 9), ports)
def test_hislip_round_trip(board: int, host: str, index: int, port: int) -> None:
    res = TcpipHislip(board=board, host=host, session_name=f"hislip{index}", port=port)
    assert parse_resource(str(res)) == res
    shown = f"[{host}]" if ":" in host else host
    assert parse_resource(f"tcpip{board}::{shown}::HISLIP{index},{port}::instr") == res


@given(
    boards,
    ids,
    ids,
    st.one_of(st.none(), serials),
    st.one_of(st.none(), st.integers(0, 255)),
    st.booleans(),
)
def test_usb_round_trip(
    board: int, vid: int, pid: int, serial: str | None, interface: int | None, decimal: bool
) -> None:
    if serial is None:
        interface = None
    res = UsbInstr(board=board, vid=vid, pid=pid, serial=serial, interface=interface)
    text = str(res)
    assert parse_resource(text) == res
    assert f"::0x{vid:04X}::0x{pid:04X}" in text
    parts = [f"usb{board}", str(vid) if decimal else hex(vid), str(pid) if decimal else hex(pid)]
    parts += [p for p in (serial, None if interface is None else str(interface)) if p is not None]
    assert parse_resource("::".join(parts)) == res


@given(identifiers, st.one_of(st.none(), identifiers))
def test_sim_round_trip(model: str, name: str | None) -> None:
    res = SimInstr(model=model, name=name or "")
    assert res.model == model.lower()
    assert res.name == (name or model.lower())
    assert parse_resource(str(res)) == res


@given(ipv6)
def test_ipv6_is_normalised(host: str) -> None:
    exploded = ipaddress.IPv6Address(host).exploded.upper()
    res = parse_resource(f"TCPIP::{exploded}::5025::SOCKET")
    assert res == TcpipSocket(host=host, port=5025)


@pytest.mark.parametrize("serial", [":", ":A", "A:", "a::b"])
def test_a_name_that_would_not_parse_back_is_refused(serial: str) -> None:
    """A ':' at either end merges with the '::' separator beside it (found by hypothesis)."""
    with pytest.raises(InvalidResourceName, match="serial number"):
        UsbInstr(vid=0x0957, pid=0x1796, serial=serial)
    assert UsbInstr(vid=0x0957, pid=0x1796, serial="A:B").serial == "A:B"
