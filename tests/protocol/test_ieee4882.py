"""IEEE 488.2 blocks and *IDN? parsing (sans-IO, plain sync tests)."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, ProtocolError, RemoteProtocolError
from aiotmc.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BlockHeader,
    Identity,
    block_header,
    decode_block,
    encode_block,
    find_block_header,
    parse_block_header,
    parse_idn,
)

# scripts/fuzz_protocol.py raises this for a long run.
PROPERTY = settings(max_examples=int(os.environ.get("AIOTMC_FUZZ_EXAMPLES", "200")), deadline=None)

ALL_BYTES = bytes(range(256))


# -- block_header / encode_block -----------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"#10"),
        (1, b"#11"),
        (9, b"#19"),
        (10, b"#210"),
        (1000, b"#41000"),
        (10**9 - 1, b"#9999999999"),
    ],
)
def test_block_header(length: int, header: bytes) -> None:
    assert block_header(length) == header


@pytest.mark.parametrize("length", [-1, 10**9, 10**12])
def test_block_header_rejects_impossible_lengths(length: int) -> None:
    with pytest.raises(LocalProtocolError, match="block"):
        block_header(length)


def test_encode_block_accepts_bytes_like() -> None:
    assert encode_block(b"abc") == b"#13abc"
    assert encode_block(bytearray(b"abc")) == b"#13abc"
    assert encode_block(memoryview(b"xabcx")[1:4]) == b"#13abc"
    assert encode_block(b"") == b"#10"


def test_block_with_every_byte_round_trips() -> None:
    payload = ALL_BYTES * 4  # 0x0A, '#', quotes, digits... everywhere
    encoded = encode_block(payload)
    assert encoded[:6] == b"#41024"
    assert decode_block(encoded) == payload
    assert decode_block(encoded + b"\n") == payload
    assert decode_block(b" \r\n" + encoded + b"\r\n") == payload


@PROPERTY
@given(payload=st.binary(max_size=3000), prefix=st.sampled_from([b"", b" ", b"\t\r\n "]))
def test_encode_decode_round_trip(payload: bytes, prefix: bytes) -> None:
    encoded = encode_block(payload)
    header = parse_block_header(encoded)
    assert header == BlockHeader(len(encoded) - len(payload), len(payload))
    assert decode_block(prefix + encoded + b"\n") == payload
    assert decode_block(bytearray(encoded), terminator=b"\r\n") == payload


# -- parse_block_header --------------------------------------------------------------------


def test_parse_block_header_needs_more_data_for_every_proper_prefix() -> None:
    header = b"#9000001000"
    for end in range(len(header)):
        assert parse_block_header(header[:end]) is None, header[:end]
    assert parse_block_header(header) == BlockHeader(11, 1000)
    assert parse_block_header(memoryview(header + b"payload")) == BlockHeader(11, 1000)


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", (0, None)),
        (b" \r\n\t", (4, None)),
        (b"  #", (2, None)),
        (b"\n#21", (1, None)),
        (b"#210abc", (0, BlockHeader(4, 10))),
        (b" \t#0abc", (2, BlockHeader(2, None))),
        (b"1.25\n", None),
        (b"  ERR", None),
    ],
)
def test_find_block_header_skips_whitespace(data: bytes, found: object) -> None:
    assert find_block_header(data) == found
    assert find_block_header(memoryview(bytearray(data))) == found


def test_find_block_header_refuses_a_length_beyond_max_size() -> None:
    with pytest.raises(RemoteProtocolError, match="more than max_size=99"):
        find_block_header(b"  #3100", max_size=99)


def test_parse_block_header_indefinite() -> None:
    assert parse_block_header(b"#0") == BlockHeader(2, None)
    assert parse_block_header(b"#0abc\n") == BlockHeader(2, None)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"12", "expected an IEEE 488.2 block"),
        (b"#A", "digit count not 0-9"),
        (b"# 1", "digit count not 0-9"),
        (b"#2x", "length is not 2 digits"),
        (b"#31x", "length is not 3 digits"),
        (b"#3-12", "length is not 3 digits"),
    ],
)
def test_parse_block_header_rejects_malformed(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_block_header(data)


def test_oversized_header_fails_fast_without_allocating() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            parse_block_header(b"#9999999999")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert str(info.value) == (
        f"block header announces 999999999 bytes, more than max_size={DEFAULT_MAX_MESSAGE_SIZE}"
    )


def test_oversized_header_detected_from_leading_digits() -> None:
    # Two digits of nine already make the length at least 900 000 000.
    with pytest.raises(RemoteProtocolError, match="at least 900000000 bytes"):
        parse_block_header(b"#99")
    with pytest.raises(RemoteProtocolError, match="more than max_size=99"):
        parse_block_header(b"#3100", max_size=99)
    assert parse_block_header(b"#3099", max_size=99) == BlockHeader(5, 99)
    assert parse_block_header(b"#30", max_size=99) is None


@PROPERTY
@given(data=st.binary(max_size=40), max_size=st.integers(0, 10**10))
def test_parse_block_header_decides_within_11_bytes(data: bytes, max_size: int) -> None:
    data = b"#" + data

    def outcome(chunk: bytes) -> object:
        try:
            return parse_block_header(chunk, max_size=max_size)
        except RemoteProtocolError:
            return "error"

    result = outcome(data)
    assert outcome(data[:11]) == result
    if len(data) >= 11:
        assert result is not None
    # A prefix either waits for more bytes or decides as the whole does.
    for end in range(len(data)):
        assert outcome(data[:end]) in (None, result)


@PROPERTY
@given(data=st.binary(max_size=200))
def test_block_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for candidate in (data, b"#" + data, b" #" + data):
        try:
            parse_block_header(candidate, max_size=100)
        except ProtocolError:
            pass
        try:
            decode_block(candidate, max_size=100)
        except ProtocolError:
            pass


# -- decode_block --------------------------------------------------------------------------


def test_decode_block_indefinite_runs_to_the_final_terminator() -> None:
    assert decode_block(b"#0abc\ndef\n") == b"abc\ndef"
    assert decode_block(b"#0abc") == b"abc"
    assert decode_block(b"#0\n") == b""
    assert decode_block(b"#0ab\r\n", terminator=b"\r\n") == b"ab"


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"", "empty response"),
        (b" \n", "empty response"),
        (b"1.0,2.0\n", "expected an IEEE 488.2 block"),
        (b"#", "truncated block header"),
        (b"#4100", "truncated block header"),
        (b"#15abc", "header announces 5 bytes, message holds 3"),
        (b"#13abcX\n", "unexpected bytes after the block"),
        (b"#13abc\n\n1", "unexpected bytes after the block"),
        (b"#2x1abc", "length is not 2 digits"),
    ],
)
def test_decode_block_errors(message: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_block(message)


def test_decode_block_max_size() -> None:
    assert decode_block(b"#13abc", max_size=3) == b"abc"
    with pytest.raises(RemoteProtocolError, match="more than max_size=2"):
        decode_block(b"#13abc", max_size=2)
    with pytest.raises(RemoteProtocolError, match="indefinite block of 3 bytes"):
        decode_block(b"#0abc\n", max_size=2)


def test_decode_block_tolerates_trailing_whitespace_besides_the_terminator() -> None:
    assert decode_block(b"#13abc \r\n") == b"abc"
    assert decode_block(b"#13abc;", terminator=b";") == b"abc"


# -- *IDN? ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "identity"),
    [
        (
            "KEYSIGHT TECHNOLOGIES,34461A,MY12345678,A.02.14-02.40-02.14-00.49-01-01\n",
            Identity(
                "KEYSIGHT TECHNOLOGIES", "34461A", "MY12345678", "A.02.14-02.40-02.14-00.49-01-01"
            ),
        ),
        (" Rigol , DS1104Z , DS1ZA1 , 00.04 \r\n", Identity("Rigol", "DS1104Z", "DS1ZA1", "00.04")),
        ("ACME,Box", Identity("ACME", "Box", "", "")),
        ("", Identity("", "", "", "")),
        ("A,B,C,fw 1,build 2", Identity("A", "B", "C", "fw 1,build 2")),
    ],
)
def test_parse_idn(text: str, identity: Identity) -> None:
    assert parse_idn(text) == identity
