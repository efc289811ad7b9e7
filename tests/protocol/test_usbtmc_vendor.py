"""Vendor-specific USBTMC bulk messages, sans-IO (``aiotmc.protocol.usbtmc_vendor``)."""

from __future__ import annotations

import pytest

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.usbtmc import HEADER_SIZE, MsgID, pack_header, unpack_header
from aiotmc.protocol.usbtmc_vendor import (
    parse_vendor_specific_in,
    request_vendor_specific_in,
    vendor_in_read_size,
    vendor_specific_out,
)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 511, 4096])
def test_vendor_out_is_header_data_and_padding(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    transfer = vendor_specific_out(7, data)
    header = unpack_header(transfer)
    assert (header.msg_id, header.tag, header.transfer_size) == (126, 7, size)
    assert transfer[8:12] == bytes(4)  # reserved
    assert transfer[HEADER_SIZE : HEADER_SIZE + size] == data
    assert len(transfer) % 4 == 0 and len(transfer) - HEADER_SIZE - size < 4


def test_request_vendor_in_header() -> None:
    header = unpack_header(request_vendor_specific_in(255, 1000))
    assert (header.msg_id, header.tag, header.transfer_size) == (127, 255, 1000)


@pytest.mark.parametrize(
    ("max_size", "mps", "expected"), [(1, 64, 64), (52, 64, 64), (53, 64, 128)]
)
def test_read_size_covers_header_payload_and_padding(
    max_size: int, mps: int, expected: int
) -> None:
    assert vendor_in_read_size(max_size, mps) == expected


def test_bounds_are_checked_before_building() -> None:
    with pytest.raises(LocalProtocolError):
        vendor_specific_out(1, b"")
    with pytest.raises(LocalProtocolError):
        request_vendor_specific_in(1, 0)
    with pytest.raises(LocalProtocolError):
        vendor_specific_out(0, b"x")  # bTag 0 is not allowed


def test_parse_vendor_in() -> None:
    reply = pack_header(MsgID.VENDOR_SPECIFIC_IN, 9, 3) + b"abc\0"
    assert parse_vendor_specific_in(reply, tag=9, max_size=3) == 3


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (pack_header(MsgID.DEV_DEP_MSG_IN, 9, 3), "MsgID"),
        (pack_header(MsgID.VENDOR_SPECIFIC_IN, 8, 3), "bTag"),
        (pack_header(MsgID.VENDOR_SPECIFIC_IN, 9, 4), "exceeds"),
        (pack_header(MsgID.VENDOR_SPECIFIC_IN, 9, 3)[:7], "12 bytes"),
        (b"\x7f\x09\x09" + bytes(9), "bTagInverse"),
    ],
)
def test_parse_vendor_in_rejects(reply: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_vendor_specific_in(reply, tag=9, max_size=3)
