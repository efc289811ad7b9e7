"""VXI-11 structures, portmapper mapping, and error codes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiotmc
from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol import portmap
from aiotmc.protocol import vxi11 as v

INT = st.integers(-0x80000000, 0x7FFFFFFF)
UINT = st.integers(0, 0xFFFFFFFF)
DATA = st.binary(max_size=100)
HANDLE = st.binary(max_size=40)
NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789,", max_size=12)

STRUCTS: list[Any] = [
    st.builds(v.DeviceLink, INT),
    st.builds(v.DeviceError, INT),
    st.builds(v.CreateLinkParms, INT, st.booleans(), UINT, NAME),
    st.builds(v.CreateLinkResp, INT, INT, UINT, UINT),
    st.builds(v.DeviceWriteParms, INT, UINT, UINT, INT, DATA),
    st.builds(v.DeviceWriteResp, INT, UINT),
    st.builds(v.DeviceReadParms, INT, UINT, UINT, UINT, INT, INT),
    st.builds(v.DeviceReadResp, INT, INT, DATA),
    st.builds(v.DeviceReadStbResp, INT, UINT),
    st.builds(v.DeviceGenericParms, INT, INT, UINT, UINT),
    st.builds(v.DeviceLockParms, INT, INT, UINT),
    st.builds(v.DeviceEnableSrqParms, INT, st.booleans(), HANDLE),
    st.builds(v.DeviceDocmdParms, INT, INT, UINT, UINT, INT, st.booleans(), INT, DATA),
    st.builds(v.DeviceDocmdResp, INT, DATA),
    st.builds(v.DeviceRemoteFunc, UINT, UINT, UINT, UINT, INT),
    st.builds(v.DeviceSrqParms, HANDLE),
    st.builds(portmap.Mapping, UINT, UINT, UINT, UINT),
]


@given(st.one_of(*STRUCTS))
def test_round_trip(value: Any) -> None:
    encoded = value.encode()
    assert len(encoded) % 4 == 0
    assert type(value).decode(encoded) == value


@given(st.one_of(*STRUCTS), st.data())
def test_truncated_is_remote_error(value: Any, data: st.DataObject) -> None:
    encoded = value.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(RemoteProtocolError):
        type(value).decode(encoded[:cut])


def test_create_link_wire_format() -> None:
    encoded = v.CreateLinkParms(123, False, 0, "inst0").encode()
    assert encoded == struct.pack(">iII", 123, 0, 0) + b"\x00\x00\x00\x05inst0\x00\x00\x00"


def test_write_head_matches_struct() -> None:
    data = b"*IDN?\n"
    head = v.device_write_head(0, 1000, 0, v.END, len(data))
    assert head + data + b"\0\0" == v.DeviceWriteParms(0, 1000, 0, v.END, data).encode()


def test_srq_handle_limited_to_40_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        v.DeviceEnableSrqParms(0, True, b"x" * 41).encode()
    raw = struct.pack(">iII", 0, 1, 41) + b"x" * 44
    with pytest.raises(RemoteProtocolError):
        v.DeviceEnableSrqParms.decode(raw)


def test_read_resp_data_is_a_view() -> None:
    resp = v.DeviceReadResp.decode(v.DeviceReadResp(0, v.Reason.END, b"abc").encode())
    assert isinstance(resp.data, memoryview)
    assert resp.data == b"abc"


@pytest.mark.parametrize(
    ("code", "operation", "expected"),
    [
        (1, "device_write", aiotmc.LocalProtocolError),
        (3, "create_link", aiotmc.ResourceNotFoundError),
        (3, "device_read", aiotmc.ConnectionLostError),
        (4, "device_read", aiotmc.SessionBrokenError),
        (5, "device_read", aiotmc.LocalProtocolError),
        (6, "device_enable_srq", aiotmc.LocalProtocolError),
        (8, "device_trigger", aiotmc.UnsupportedOperation),
        (9, "create_link", aiotmc.TransportError),
        (11, "device_write", aiotmc.ResourceBusyError),
        (12, "device_unlock", aiotmc.LocalProtocolError),
        (15, "device_write", aiotmc.WriteTimeout),
        (15, "device_read", aiotmc.ReadTimeout),
        (17, "device_read", aiotmc.TransportError),
        (21, "create_link", aiotmc.ResourceNotFoundError),
        (23, "device_read", aiotmc.TransportError),
        (29, "create_intr_chan", aiotmc.LocalProtocolError),
        (99, "device_read", aiotmc.RemoteProtocolError),
    ],
)
def test_every_error_code_is_typed(code: int, operation: str, expected: type) -> None:
    exc = v.error_for(code, operation, resource="TCPIP0::h::inst0::INSTR")
    assert type(exc) is expected or (code in (9, 17, 23) and isinstance(exc, expected))
    assert isinstance(exc, aiotmc.AiotmcError)
    assert f"error {code}" in str(exc)
    assert "TCPIP0::h::inst0::INSTR" in str(exc)


def test_every_known_code_has_a_mapping() -> None:
    for code in v.ErrorCode:
        if code:
            assert not isinstance(v.error_for(code, "x"), aiotmc.RemoteProtocolError)


def test_portmap_port() -> None:
    assert portmap.decode_port(portmap.encode_port(1024)) == 1024
    with pytest.raises(RemoteProtocolError, match="impossible port"):
        portmap.decode_port(b"\x00\x01\x00\x00")
    getport = portmap.Mapping(v.DEVICE_CORE, v.VERSION).encode()
    assert getport == struct.pack(">IIII", 0x0607AF, 1, 6, 0)
