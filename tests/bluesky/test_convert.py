"""SCPI answers to values and values to SCPI text, per datatype (no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from ophyd_async.core import Array1D, StrictEnum, Table

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.bluesky import check_template, make_converter, scpi_short_form


class Source(StrictEnum):
    IMMEDIATE = "IMMediate"
    BUS = "BUS"
    EXTERNAL = "EXTernal"


@pytest.mark.parametrize(
    ("datatype", "answer", "value"),
    [
        (float, "+1.000000942E+00\n", 1.000000942),
        (float, "9.9E37", 9.9e37),
        (float, "-INF", float("-inf")),
        (int, "+12", 12),
        (int, "+1.20000000E+01", 12),
        (bool, "1", True),
        (bool, "0", False),
        (bool, "ON", True),
        (bool, "off", False),
        (bool, "+1.0E+00", True),
        (str, '"VOLT 10,3E-06"', "VOLT 10,3E-06"),
        (str, '"say ""hi"""', 'say "hi"'),
        (str, "  plain  ", "plain"),
        (Source, "IMM", Source.IMMEDIATE),
        (Source, "immediate", Source.IMMEDIATE),
        (Source, "bus", Source.BUS),
        (Source, '"EXT"', Source.EXTERNAL),
        (Sequence[str], '"a","b,c",d', ["a", "b,c", "d"]),
    ],
)
def test_answers_parse(datatype: Any, answer: str, value: Any) -> None:
    got = make_converter(datatype).parse(answer)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("datatype", "answer"),
    [
        (float, "abc"),
        (float, ""),
        (int, "1.5"),
        (int, "many"),
        (bool, "maybe"),
        (Source, "INTernal"),
        (Array1D[np.float64], "1,two,3"),
        (Array1D[np.int16], "1,2.5"),
        (Sequence[str], '"a"b,c'),
    ],
)
def test_bad_answers_are_remote_protocol_errors(datatype: Any, answer: str) -> None:
    with pytest.raises(RemoteProtocolError, match="the instrument answered"):
        make_converter(datatype).parse(answer)


def test_ascii_arrays_parse_to_the_dtype() -> None:
    floats = make_converter(Array1D[np.float32]).parse("1.5,-2,3E-1\n")
    assert floats.dtype == np.float32 and floats.tolist() == pytest.approx([1.5, -2, 0.3])
    ints = make_converter(Array1D[np.int16]).parse("+1,-2,3.0E+00")
    assert ints.dtype == np.int16 and ints.tolist() == [1, -2, 3]
    flags = make_converter(Array1D[np.bool_]).parse("1,0,ON")
    assert flags.tolist() == [True, False, True]
    assert make_converter(Array1D[np.float64]).parse("").shape == (0,)


@pytest.mark.parametrize(
    ("datatype", "value", "encoded"),
    [
        (float, 2.5, 2.5),
        (float, 3, 3.0),
        (float, np.float32(0.5), 0.5),
        (float, float("inf"), "INF"),
        (float, float("nan"), "NAN"),
        (int, 7, 7),
        (int, np.int64(7), 7),
        (bool, True, 1),
        (bool, np.bool_(False), 0),
        (str, "hello", "hello"),
        (Source, Source.BUS, "BUS"),
        (Source, "EXTernal", "EXTernal"),
        (Array1D[np.float64], np.array([1.5, 2.0]), "1.5,2.0"),
        (Array1D[np.int32], [1, 2], "1,2"),
        (Sequence[str], ["a", "b"], '"a","b"'),
    ],
)
def test_values_encode(datatype: Any, value: Any, encoded: Any) -> None:
    got = make_converter(datatype).encode(value)
    assert got == encoded and type(got) is type(encoded)


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (float, "1.0"),
        (float, True),
        (float, None),
        (int, 1.5),
        (int, False),
        (bool, "yes"),
        (str, 5),
        (Source, "TRIANGLE"),
        (Source, 3),
        (Array1D[np.float64], [[1.0, 2.0]]),
        (Sequence[str], "ab"),
        (Sequence[str], [1, 2]),
    ],
)
def test_bad_values_are_local_protocol_errors(datatype: Any, value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        make_converter(datatype).encode(value)


class Plain(enum.Enum):
    A = "A"


class Rows(Table):
    a: Array1D[np.int32]


@pytest.mark.parametrize("datatype", [dict, complex, Rows, np.ndarray, Sequence[int]])
def test_unsupported_datatypes_are_type_errors(datatype: Any) -> None:
    with pytest.raises(TypeError, match="SCPI signals support"):
        make_converter(datatype)


def test_a_plain_enum_is_refused_naming_strict_enum() -> None:
    with pytest.raises(TypeError, match="StrictEnum"):
        make_converter(Plain)


def test_binary_needs_an_array_with_a_block_format() -> None:
    assert make_converter(Array1D[np.uint16], binary=True, big_endian=True)
    with pytest.raises(TypeError, match="binary=True"):
        make_converter(int, binary=True)
    with pytest.raises(TypeError, match="no binary block format"):
        make_converter(Array1D[np.bool_], binary=True)


@pytest.mark.parametrize(
    ("keyword", "short"),
    [("IMMediate", "IMM"), ("BUS", "BUS"), ("SINusoid", "SIN"), ("ramp", "ramp"), ("DC", "DC")],
)
def test_short_forms(keyword: str, short: str) -> None:
    assert scpi_short_form(keyword) == short


def test_templates() -> None:
    assert check_template("VOLT {value}") == "VOLT {value}"
    assert check_template("VOLT {value:.3f};:OUTP {value}") is not None
    for bad in ("VOLT", "VOLT {}", "VOLT {0}", "VOLT {value} {other}", "VOLT {value"):
        with pytest.raises(ValueError):
            check_template(bad)
