"""SCPI header patterns, program-message parsing and parameter helpers (no device)."""

from __future__ import annotations

import pytest

from aiotmc.sim.commands import (
    Block,
    Call,
    CommandTable,
    ProgramUnit,
    Raw,
    ScpiError,
    find_open_block,
    format_nr3,
    parse_pattern,
    parse_program,
    render,
    short_form,
)


def units(data: bytes) -> list[tuple[str, list[bytes]]]:
    [message] = parse_program(data)
    return [(u.header, [a.tobytes() for a in u.args]) for u in message]


def call(*args: bytes, header: str = "X", suffixes: tuple[int | None, ...] = ()) -> Call:
    return Call(header, tuple(memoryview(a) for a in args), suffixes)


def error_code(excinfo: pytest.ExceptionInfo[ScpiError]) -> int:
    return excinfo.value.code


# -- patterns --------------------------------------------------------------------------------


def test_short_form() -> None:
    assert short_form("MEASure") == "MEAS"
    assert short_form("DC") == "DC"
    assert short_form("IMMediate") == "IMM"


@pytest.mark.parametrize(
    "tokens",
    [
        ("MEAS", "VOLT", "DC"),
        ("MEASURE", "VOLTAGE", "DC"),
        ("MEAS", "VOLT"),
        ("MEASURE", "VOLT"),
    ],
)
def test_pattern_matches_short_long_and_optional(tokens: tuple[str, ...]) -> None:
    pattern = parse_pattern("MEASure:VOLTage[:DC]?")
    assert pattern.query
    assert pattern.match(tokens) == ()


@pytest.mark.parametrize(
    "tokens",
    [("MEASU", "VOLT"), ("MEA", "VOLT"), ("MEAS",), ("MEAS", "VOLT", "AC"), ("MEAS", "DC")],
)
def test_pattern_rejects_partial_or_wrong_mnemonics(tokens: tuple[str, ...]) -> None:
    assert parse_pattern("MEASure:VOLTage[:DC]?").match(tokens) is None


def test_pattern_leading_optional_node_and_suffixes() -> None:
    pattern = parse_pattern("[SOURce#:]FREQuency")
    assert pattern.match(("FREQ",)) == (None,)
    assert pattern.match(("SOUR2", "FREQ")) == (2,)
    assert pattern.match(("SOURCE", "FREQUENCY")) == (None,)
    output = parse_pattern("OUTPut#[:STATe]")
    assert output.match(("OUTP",)) == (None,)
    assert output.match(("OUTPUT3", "STAT")) == (3,)
    assert output.match(("OUTP12",)) == (12,)
    # a node without '#' does not take a suffix
    assert parse_pattern("OUTPut[:STATe]").match(("OUTP2",)) is None


def test_common_command_pattern() -> None:
    pattern = parse_pattern("*IDN?")
    assert pattern.common and pattern.query
    assert pattern.match(("*IDN",)) == ()
    assert pattern.match(("IDN",)) is None


@pytest.mark.parametrize("bad", ["", "[OPT]", "A::B", "A:", "[A", "1ABC", "*", "A b", "A]"])
def test_bad_patterns_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_pattern(bad)


def test_table_resolves_relative_path_then_root() -> None:
    table = CommandTable()
    table.add("SYSTem:ERRor[:NEXT]?", lambda c: None)
    table.add("SYSTem:ERRor:COUNt?", lambda c: None)
    table.add("SYSTem:VERSion?", lambda c: None)
    found = table.resolve(("SYST",), ("ERR", "COUN"), True)
    assert found is not None
    assert found.entry.pattern.text == "SYSTem:ERRor:COUNt?"
    assert found.tokens == ("SYST", "ERR", "COUN")
    # not under the current path: falls back to the root
    root = table.resolve(("SYST", "ERR"), ("SYST", "VERS"), True)
    assert root is not None and root.entry.pattern.text == "SYSTem:VERSion?"
    assert table.resolve((), ("SYST", "ERR"), False) is None  # only the query form exists
    assert table.resolve((), ("NOPE",), True) is None


def test_table_first_entry_wins() -> None:
    table = CommandTable()
    table.add("FOO?", lambda c: "a")
    table.add("FOO?", lambda c: "b", first=True)
    found = table.resolve((), ("FOO",), True)
    assert found is not None and found.entry.handler(call()) == "b"
    assert table.patterns() == ["FOO?", "FOO?"]


# -- program messages -------------------------------------------------------------------------


def test_compound_message_units_and_args() -> None:
    assert units(b"*RST; :VOLT 1.5 , 2 ;MEAS:VOLT?\r\n") == [
        ("*RST", []),
        (":VOLT", [b"1.5", b"2"]),
        ("MEAS:VOLT?", []),
    ]


def test_unit_flags() -> None:
    [[common, absolute, relative]] = parse_program(b"*idn?;:meas:volt?;curr 1")
    assert common.common and common.query and common.tokens == ("*IDN",)
    assert absolute.absolute and absolute.tokens == ("MEAS", "VOLT")
    assert not relative.query and not relative.absolute and relative.tokens == ("CURR",)


def test_quoted_strings_keep_separators() -> None:
    assert units(b"DISP:TEXT \"a;b,c\nd\", 'it''s';*IDN?") == [
        ("DISP:TEXT", [b'"a;b,c\nd"', b"'it''s'"]),
        ("*IDN?", []),
    ]


def test_block_with_newline_semicolon_and_whitespace_inside() -> None:
    payload = b"\n;,\"' \r\n"
    message = b"DATA name,#1%d%s;*OPC\n" % (len(payload), payload)
    result = units(message)
    assert result == [
        ("DATA", [b"name", b"#1" + str(len(payload)).encode() + payload]),
        ("*OPC", []),
    ]


def test_top_level_newlines_split_messages() -> None:
    messages = parse_program(b"*IDN?\n\n*RST;*CLS\n")
    assert [[u.header for u in m] for m in messages] == [["*IDN?"], ["*RST", "*CLS"]]
    assert parse_program(b"") == []
    assert parse_program(b"  \r\n") == []


def test_indefinite_block_runs_to_final_newline() -> None:
    assert units(b"DATA #0a\nb;c\n") == [("DATA", [b"#0a\nb;c"])]


def test_hex_number_is_not_a_block() -> None:
    assert units(b"*ESE #H1F") == [("*ESE", [b"#H1F"])]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"DATA #15abc\n", -161),  # announces 5, holds 3 (+ newline)
        (b"DATA #3ab", -161),  # truncated length field
        (b'DISP "open', -151),
        (b"VOLT 1,,2", -102),
        (b"VOLT,1", -102),
        (b"A$B 1", -102),
        (b",1", -102),
    ],
)
def test_malformed_messages(data: bytes, code: int) -> None:
    with pytest.raises(ScpiError) as excinfo:
        parse_program(data)
    assert error_code(excinfo) == code


def test_parse_accepts_bytearray_without_copy() -> None:
    data = bytearray(b"DATA #14abcd\n")
    [[unit]] = parse_program(data)
    assert unit.args[0].obj is data


def test_find_open_block() -> None:
    assert find_open_block(b"DATA x,#9000001000abc") == 7 + 11 + 1000
    assert find_open_block(b"DATA x,#14abcd;DATA #15ab") == 20 + 3 + 5
    assert find_open_block(b"DATA x,#14abcd") is None  # complete
    assert find_open_block(b"DATA #0abc") is None
    assert find_open_block(b'DISP "#9000001000') is None  # inside a string
    assert find_open_block(b"DATA #9000") is None  # header incomplete


# -- parameters ---------------------------------------------------------------------------------


def test_number_parsing() -> None:
    assert call(b"1.5").number(0) == 1.5
    assert call(b"-2E-3").number(0) == -0.002
    assert call(b".5").number(0) == 0.5
    assert call(b"MIN").number(0, minimum=1.0, maximum=2.0) == 1.0
    assert call(b"maximum").number(0, minimum=1.0, maximum=2.0) == 2.0
    assert call(b"DEF").number(0, default=7.0) == 7.0
    assert call(b"250 mV").number(0, unit="V") == pytest.approx(0.25)
    assert call(b"2kHz").number(0, unit="HZ") == 2000.0
    assert call(b"1MHZ").number(0, unit="HZ") == 1e6
    assert call(b"3V").number(0, unit="V") == 3.0


@pytest.mark.parametrize(
    ("arg", "kwargs", "code"),
    [
        (b"abc", {}, -104),
        (b"#15abcde", {}, -104),
        (b"11", {"minimum": 0.0, "maximum": 10.0}, -222),
        (b"-1", {"minimum": 0.0}, -222),
        (b"3 A", {"unit": "V"}, -131),
        (b"3 V", {}, -131),
        (b"3 QV", {"unit": "V"}, -131),
    ],
)
def test_number_errors(arg: bytes, kwargs: dict[str, object], code: int) -> None:
    with pytest.raises(ScpiError) as excinfo:
        call(arg).number(0, **kwargs)  # type: ignore[arg-type]
    assert error_code(excinfo) == code


def test_missing_parameter_is_109() -> None:
    with pytest.raises(ScpiError) as excinfo:
        call().number(0)
    assert error_code(excinfo) == -109


def test_integer_boolean_choice_string() -> None:
    assert call(b"2.6").integer(0) == 3
    assert [call(x).boolean(0) for x in (b"ON", b"off", b"1", b"0", b"0.2")] == [
        True,
        False,
        True,
        False,
        False,
    ]
    with pytest.raises(ScpiError) as excinfo:
        call(b"maybe").boolean(0)
    assert error_code(excinfo) == -141
    options = ("IMMediate", "BUS", "EXTernal")
    assert call(b"imm").choice(0, options) == "IMMediate"
    assert call(b"EXTERNAL").choice(0, options) == "EXTernal"
    with pytest.raises(ScpiError) as excinfo:
        call(b"IMME").choice(0, options)
    assert error_code(excinfo) == -141
    assert call(b'"say ""hi"""').string(0) == 'say "hi"'
    assert call(b"'x'").string(0) == "x"
    assert call(b"bare").string(0) == "bare"


def test_block_parameter() -> None:
    assert call(b"#15a\nb;c").block(0).tobytes() == b"a\nb;c"
    assert call(b"#0raw\n").block(0).tobytes() == b"raw\n"
    with pytest.raises(ScpiError) as excinfo:
        call(b"12").block(0)
    assert error_code(excinfo) == -104


def test_suffix_range() -> None:
    assert call(suffixes=(None,)).suffix(0) == 1
    assert call(suffixes=(None,)).suffix(0, default=3) == 3
    assert call(suffixes=(2,)).suffix(0, maximum=2) == 2
    for bad in (0, 3):
        with pytest.raises(ScpiError) as excinfo:
            call(suffixes=(bad,)).suffix(0, maximum=2)
        assert error_code(excinfo) == -114


# -- responses ----------------------------------------------------------------------------------


def test_render() -> None:
    assert render("x") == [b"x"]
    assert render(True) == [b"1"]
    assert render(-3) == [b"-3"]
    assert render(1.5) == [b"+1.500000000E+00"]
    assert render([1.0, -2.0]) == [b"+1.000000000E+00,-2.000000000E+00"]
    payload = bytearray(b"ab\ncd")
    header, body = render(Block(payload))
    assert header == b"#15"
    assert isinstance(body, memoryview) and body.obj is payload  # not copied
    assert render(Raw(b"#9")) == [b"#9"]
    with pytest.raises(TypeError):
        render(object())  # type: ignore[arg-type]


def test_format_nr3() -> None:
    assert format_nr3(0.001234, 3) == "+1.234E-03"
    assert format_nr3(float("nan")) == "+9.91E+37"
    assert format_nr3(float("-inf")) == "-9.9E+37"


def test_scpi_error_message() -> None:
    assert ScpiError(-113).message == "Undefined header"
    assert ScpiError(-222, "11 V").message == "Data out of range; 11 V"
    assert ScpiError(1234).message == "Error"


def test_program_unit_make() -> None:
    unit = ProgramUnit.make(":SOUR2:VOLT?")
    assert unit.absolute and unit.query and not unit.common
    assert unit.tokens == ("SOUR2", "VOLT")
