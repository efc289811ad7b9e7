"""The program-message parser on hostile input: bounded work, standard errors."""

from __future__ import annotations

import time

import pytest

from aiotmc.sim import SimDevice
from aiotmc.sim.commands import MAX_HEADER_LENGTH, ScpiError, escape_text, parse_program
from aiotmc.sim.program import MAX_DATA_ELEMENTS

MB = 1 << 20


def error_code(data: bytes) -> int:
    with pytest.raises(ScpiError) as info:
        parse_program(data)
    return info.value.code


def test_header_length_cap_gives_112() -> None:
    ok = b"A" * MAX_HEADER_LENGTH
    [[unit]] = parse_program(ok + b" 1\n")
    assert unit.header == ok.decode()
    assert error_code(b"A" * (MAX_HEADER_LENGTH + 1) + b" 1\n") == -112
    assert error_code(b"A" * (4 * MB) + b"\n") == -112


def test_data_element_cap_gives_223() -> None:
    n = MAX_DATA_ELEMENTS
    assert error_code(b"A " + b"1," * n + b"1\n") == -223
    assert error_code(b";" * (n + 1) + b"\n") == -223
    assert error_code(b'A "' + b'a""' * n + b'"\n') == -223
    assert error_code(b"A " + b"#10," * n + b"#10\n") == -223
    [[unit]] = parse_program(b"A " + b"1," * (n // 2) + b"1\n")
    assert len(unit.args) == n // 2 + 1
    # the cap is per program message
    assert len(parse_program((b"A " + b"1," * (n // 2) + b"1\n") * 3)) == 3


@pytest.mark.parametrize(
    "data",
    [
        b"A " + b"1," * (2 * MB) + b"1\n",  # took 4 s: one Python step per comma
        b";" * (4 * MB) + b"\n",
        b'A "a",' * 700_000 + b'"a"\n',
        b"A #10," * 700_000 + b"#10\n",  # was quadratic
        b"A" * (4 * MB) + b"\n",  # header scanned byte by byte
        b"A " + b" " * (4 * MB) + b"1\n",  # whitespace stripped byte by byte
        b'A "' + b'""' * (2 * MB) + b'"\n',
        b'A "' + b'a""' * (2 * MB) + b'"\n',
    ],
    ids=["commas", "semicolons", "strings", "blocks", "header", "spaces", "quotes", "runs"],
)
def test_4_mb_of_hostile_text_is_parsed_or_refused_quickly(data: bytes) -> None:
    start = time.perf_counter()
    try:
        parse_program(data)
    except ScpiError as exc:
        assert exc.code in (-112, -223)
    assert time.perf_counter() - start < 1.0  # each took seconds before; ~50 ms now


def test_device_data_element_limit_is_configurable() -> None:
    device = SimDevice()
    device.max_data_elements = 10
    device.write(b"*ESE " + b"1," * 10 + b"1\n")
    assert [code for code, _ in device.errors] == [-223]
    device.write(b"*ESE 4\n")
    device.write(b"*ESE?\n")
    assert device.read() == b"4\n"


def test_echoed_text_is_escaped() -> None:
    assert escape_text("caf\xe9\x00\n") == r"caf\xe9\x00\n"
    assert escape_text("x" * 300).endswith("x...") and len(escape_text("x" * 300)) == 203
    assert ScpiError(-113, "\xff\x7f").message == r"Undefined header; \xff\x7f"
    device = SimDevice()
    device.write(b"\xe9T\xc3\xa9 1\n")
    device.write(b"SYST:ERR?\n")
    answer = device.read()
    assert answer is not None and answer.isascii()
    assert answer == b"-102,\"Syntax error; bad header '\\xe9T\\xc3\\xa9'\"\n"
