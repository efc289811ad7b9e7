"""The GetDescriptorsResponse payload codec: round trip and bounds on untrusted lengths."""

from __future__ import annotations

import struct

import pytest

from aiotmc import RemoteProtocolError
from aiotmc.protocol.hislip_descriptors import (
    MAX_DESCRIPTOR_DATA,
    Descriptor,
    decode_descriptors,
    encode_descriptors,
)


def test_round_trip() -> None:
    descriptors = [Descriptor(1, b"AS,DMM,0001"), Descriptor(0x80, b""), Descriptor(7, b"x" * 300)]
    count, payload = encode_descriptors(descriptors)
    assert count == 3
    assert payload[:3] == b"\x01\x00\x0b"
    assert decode_descriptors(payload, count) == descriptors
    assert decode_descriptors(b"", 0) == []
    assert descriptors[0].text == "AS,DMM,0001"


@pytest.mark.parametrize(
    ("payload", "count", "match"),
    [
        (b"\x01\x00\x05abc", 1, "announces 5 bytes, 3 left"),
        (b"\x01\x00", 1, "announces 1 descriptors in 2 bytes"),
        (b"\x01\x00\x01a\x02\x00", 2, "cut short"),
        (b"\x01\x00\x01ab", 1, "1 bytes after 1 descriptors"),
        (b"", 0xFFFFFFFF, "announces 4294967295 descriptors in 0 bytes"),
    ],
)
def test_bad_payloads_are_typed_errors(payload: bytes, count: int, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_descriptors(payload, count)


def test_descriptor_fields_are_bounded() -> None:
    with pytest.raises(ValueError, match="byte"):
        Descriptor(256, b"")
    with pytest.raises(ValueError, match="at most"):
        Descriptor(1, b"x" * (MAX_DESCRIPTOR_DATA + 1))
    assert struct.calcsize("!BH") == 3
