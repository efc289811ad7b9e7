"""Compound messages and value lists (aiotmc.protocol.scpi)."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, ProtocolError, RemoteProtocolError
from aiotmc.protocol import (
    binary_format,
    encode_block,
    format_values,
    pack_binary,
    parse_values,
    split_compound,
    unpack_binary,
)

from .strategies import blocks, numbers, quoted_strings, words

# scripts/fuzz_protocol.py raises this for a long run.
PROPERTY = settings(max_examples=int(os.environ.get("AIOTMC_FUZZ_EXAMPLES", "200")), deadline=None)

# -- split_compound -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "parts"),
    [
        ('1.0;"a;b";#13abc\n', ["1.0", '"a;b"', "#13abc"]),
        ("1;2;3", ["1", "2", "3"]),
        (" 1 ; 2 \r\n", ["1", "2"]),
        ("", [""]),
        ("\n", [""]),
        ("1;;2;", ["1", "", "2", ""]),
        ("'it''s;x';\"q\"\"\";", ["'it''s;x'", '"q"""', ""]),
        ("#14;; \n;x", ["#14;; \n", "x"]),  # payload whitespace is kept
        ("#12 \n\n", ["#12 \n"]),
        ("O'Neil;5\";x", ["O'Neil", '5"', "x"]),
        ("#H1F;#B1;#", ["#H1F", "#B1", "#"]),
        ("1;#2x1;#3", ["1", "#2x1", "#3"]),  # not block headers
        ("1;#0a;b\n", ["1", "#0a;b"]),
        (":VOLT 1.0;:CURR 2E-3\n", [":VOLT 1.0", ":CURR 2E-3"]),
        ('"unterminated;x', ['"unterminated;x']),
    ],
)
def test_split_compound(response: str, parts: list[str]) -> None:
    assert split_compound(response) == parts


def test_split_compound_bytes() -> None:
    block = encode_block(b";\n\xff ")
    assert split_compound(b"1;" + block + b";2\n") == [b"1", block, b"2"]
    assert split_compound(bytearray(b"a;b")) == [b"a", b"b"]


def test_split_compound_truncated_block() -> None:
    with pytest.raises(RemoteProtocolError, match="header announces 5 characters, 2 present"):
        split_compound("1;#15ab")


@PROPERTY
@given(
    elements=st.lists(st.one_of(words, numbers, quoted_strings(), blocks), min_size=1, max_size=6)
)
def test_split_compound_inverts_join(elements: list[bytes]) -> None:
    elements = [
        element.strip(b" ") if not element.startswith(b"#") else element for element in elements
    ]
    response = b";".join(elements) + b"\n"
    assert split_compound(response) == elements
    assert split_compound(response.decode("latin-1")) == [e.decode("latin-1") for e in elements]


@PROPERTY
@given(text=st.text(max_size=60))
def test_split_compound_raises_only_protocol_errors(text: str) -> None:
    try:
        split_compound(text)
    except ProtocolError:
        pass


# -- ASCII values -------------------------------------------------------------------------------


def test_parse_values() -> None:
    assert parse_values("1.0,2.5E-3,-4\n") == [1.0, 2.5e-3, -4.0]
    assert parse_values(" +1.0E+00 , 9.91E37 ") == [1.0, 9.91e37]
    assert parse_values("") == []
    assert parse_values(" \r\n") == []
    assert parse_values("1,2,3", converter=int) == [1, 2, 3]
    assert parse_values("1;2", separator=";") == [1.0, 2.0]
    assert parse_values(" ON , OFF ", converter=lambda s: s == "ON") == [True, False]


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("1,2,x", {}, "item 2 'x' of 3 with float"),
        ("1,,2", {}, "item 1 '' of 3"),
        ("1.5", {"converter": int}, "item 0 '1.5' of 1 with int"),
    ],
)
def test_parse_values_errors(text: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_values(text, **kwargs)  # type: ignore[call-overload]


def test_parse_values_empty_separator() -> None:
    with pytest.raises(LocalProtocolError):
        parse_values("1", separator="")


def test_format_values() -> None:
    assert format_values([1.5, 2, -3.25e-7]) == "1.5,2,-3.25e-07"
    assert format_values([math.inf, -math.inf, math.nan]) == "INF,NINF,NAN"
    assert format_values([True, False]) == "1,0"
    assert format_values([]) == ""
    assert format_values((x for x in (1, 2)), separator=" ") == "1 2"
    assert format_values([1.5, 2], fmt="{:.3f}") == "1.500,2.000"


def test_format_values_normalises_number_subclasses() -> None:
    class Volts(float):
        def __repr__(self) -> str:
            return f"Volts({float(self)})"

    class Count:
        def __index__(self) -> int:
            return 7

    assert format_values([Volts(1.5), Count()]) == "1.5,7"  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("values", "fmt", "match"),
    [(["1"], "{!r}", "value 0"), ([1, None], "{!r}", "value 1"), ([1], "{:q}", "value 0")],
)
def test_format_values_errors(values: list[object], fmt: str, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        format_values(values, fmt=fmt)  # type: ignore[arg-type]


@PROPERTY
@given(
    values=st.lists(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53))
    )
)
def test_format_parse_round_trip(values: list[float]) -> None:
    assert parse_values(format_values(values)) == [float(v) for v in values]


# -- binary values ------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list("bBhHiIlLqQfde"))
@pytest.mark.parametrize("big_endian", [False, True])
def test_binary_round_trip(datatype: str, big_endian: bool) -> None:
    values: Sequence[float] = [0, 1, 2, 100]
    fmt = binary_format(datatype, big_endian=big_endian)
    assert fmt == (">" if big_endian else "<") + datatype
    payload = pack_binary(values, datatype, big_endian=big_endian)
    assert len(payload) == 4 * struct.calcsize(fmt)
    assert unpack_binary(payload, datatype, big_endian=big_endian) == values


def test_binary_endianness() -> None:
    assert pack_binary([1, 2], "h", big_endian=True) == b"\x00\x01\x00\x02"
    assert pack_binary([1, 2], "h", big_endian=False) == b"\x01\x00\x02\x00"
    assert pack_binary([1.0], "f", big_endian=True) == b"\x3f\x80\x00\x00"
    assert pack_binary(iter([1]), "L", big_endian=False) == b"\x01\x00\x00\x00"  # standard size
    assert unpack_binary(b"\x00\x00\x80\x3f", "f", big_endian=False) == [1.0]
    assert unpack_binary(memoryview(b"\xff\xfe"), "h", big_endian=True) == [-2]
    assert unpack_binary(b"", "d", big_endian=True) == []


@pytest.mark.parametrize("datatype", ["s", "x", "", "ff", "c", "?", "<f", "n"])
def test_binary_format_rejects_other_types(datatype: str) -> None:
    with pytest.raises(LocalProtocolError, match="unsupported binary datatype"):
        binary_format(datatype, big_endian=False)


def test_unpack_binary_rejects_partial_items() -> None:
    with pytest.raises(
        RemoteProtocolError, match="7 bytes is not a whole number of 4-byte 'f' items"
    ):
        unpack_binary(b"\x00" * 7, "f", big_endian=False)


@pytest.mark.parametrize(
    ("values", "datatype"), [([256], "B"), ([-1], "H"), (["x"], "f"), ([1.5], "i")]
)
def test_pack_binary_rejects_unrepresentable_values(values: list[object], datatype: str) -> None:
    with pytest.raises(LocalProtocolError, match="cannot pack"):
        pack_binary(values, datatype, big_endian=False)  # type: ignore[arg-type]


@PROPERTY
@given(values=st.lists(st.integers(-(2**31), 2**31 - 1)), big_endian=st.booleans())
def test_binary_int_round_trip(values: list[int], big_endian: bool) -> None:
    payload = pack_binary(values, "i", big_endian=big_endian)
    assert unpack_binary(payload, "i", big_endian=big_endian) == values


def test_join_compound_never_puts_a_colon_before_a_common_command() -> None:
    from aiotmc.protocol import join_compound

    assert join_compound(["MEAS:VOLT?", "*IDN?", "CURR?", ":SYST:ERR?"]) == (
        "MEAS:VOLT?;*IDN?;:CURR?;:SYST:ERR?"
    )
    assert join_compound(["", "*OPC?"]) == "*OPC?"
    assert join_compound([]) == ""
