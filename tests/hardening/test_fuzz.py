"""Property-based fuzzing of the parsers that do no I/O and were not fuzzed elsewhere.

Already fuzzed: the message framer and block codec (tests/protocol/test_scpi.py,
test_ieee4882.py). Here: the USBTMC response parser fed arbitrary bulk-IN reads, the
class-request and bulk-header decoders, the USB488 interrupt decoder and demultiplexing,
the transport's streaming block parser, resource names, and the simulator's program
parser, header matcher, parameter parsers and device-side USBTMC parser. Every property
says: arbitrary bytes, cut at arbitrary points, give a result or one of the documented
errors (:class:`~aiotmc.ProtocolError`, the simulator's ``ScpiError``), always terminate,
and leave the parser usable.

CI runs a seeded slice (``derandomize=True``, ``AIOTMC_FUZZ_EXAMPLES`` examples per
property, 150 by default); ``scripts/fuzz_all.py`` runs them much longer, randomised.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotmc import InvalidResourceName, LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.events import ControlRequest
from aiotmc.protocol.ieee4882 import block_header, parse_idn
from aiotmc.protocol.quirks import KNOWN_QUIRKS, NO_QUIRKS, Quirks
from aiotmc.protocol.usb488 import (
    SrqNotification,
    StatusByteReply,
    VendorNotification,
    parse_interrupt,
    parse_read_status_byte,
    srq_notification,
    status_byte_notification,
)
from aiotmc.protocol.usbtmc import (
    HEADER_SIZE,
    NEED_DATA,
    EndOfMessage,
    MsgID,
    NeedRequest,
    ResponseData,
    UsbtmcConnection,
    UsbtmcState,
    pack_header,
    parse_capabilities,
    parse_check_abort_bulk_in,
    parse_check_abort_bulk_out,
    parse_check_clear_status,
    parse_initiate_abort,
    parse_status,
    unpack_header,
)
from aiotmc.resources import ResourceName, parse_resource
from aiotmc.sim.commands import Call, ScpiError, find_open_block, parse_pattern, parse_program
from aiotmc.sim.device import ERROR_QUEUE_SIZE
from aiotmc.sim.devices import MODELS, create_device
from aiotmc.sim.usb_function import STALL
from aiotmc.sim.usbtmc_device import BULK_IN, BULK_OUT, UsbtmcFunction
from aiotmc.transports.usbtmc._block_sink import BlockSink

EXAMPLES = int(os.environ.get("AIOTMC_FUZZ_EXAMPLES", "150"))
RANDOM = os.environ.get("AIOTMC_FUZZ_RANDOM", "") not in ("", "0")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

QUIRKS: list[Quirks] = [NO_QUIRKS, *(entry for entry in KNOWN_QUIRKS.values())]


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length), in order."""
    if not data:
        return [data]
    cuts = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


# Bytes biased towards what matters to the parsers.
_interesting = st.sampled_from(
    [b"#", b"#1", b"#2", b"#0", b"#9", b"9", b"\n", b";", b",", b'"', b" ", b"\0", b"\xff"]
)
garbage = st.lists(st.one_of(_interesting, st.binary(max_size=40)), max_size=40).map(b"".join)


# -- USBTMC: the host-side response parser ----------------------------------------------------


def _well_formed_transfer(conn: UsbtmcConnection, payload: bytes, eom: bool) -> bytes:
    header = pack_header(MsgID.DEV_DEP_MSG_IN, conn.in_tag, len(payload), 1 if eom else 0)
    return header + payload + b"\0" * (-len(payload) % 4)


@st.composite
def bulk_in_streams(draw: st.DrawFn) -> tuple[bytes, list[int], bool, int]:
    """(stream, read cut points, start with a valid header?, requested size)."""
    body = draw(garbage)
    valid = draw(st.booleans())
    return (
        body,
        draw(st.lists(st.integers(0, 4096), max_size=20)),
        valid,
        draw(st.integers(1, 5000)),
    )


@FUZZ
@given(
    stream=bulk_in_streams(),
    quirks=st.sampled_from(QUIRKS),
    max_packet_size=st.sampled_from([8, 64, 512]),
    max_transfer_size=st.integers(1, 3000),
)
def test_usbtmc_response_parser_takes_any_bulk_in_data(
    stream: tuple[bytes, list[int], bool, int],
    quirks: Quirks,
    max_packet_size: int,
    max_transfer_size: int,
) -> None:
    """Bulk-IN reads made of arbitrary bytes: only RemoteProtocolError, bounded work, and
    after the abort sequence and ``reset()`` a clean response parses exactly."""
    body, cuts, valid, requested = stream
    conn = UsbtmcConnection(
        max_packet_size=max_packet_size, max_transfer_size=max_transfer_size, quirks=quirks
    )
    conn.request_response(requested)
    data = (_well_formed_transfer(conn, body[:requested], True) if valid else b"") + body
    reads = iter(cuts)
    pos = 0
    steps = 0
    failed = False
    try:
        while True:
            steps += 1
            assert steps < 10 * (len(data) + len(cuts) + 10), "the parser does not terminate"
            event = conn.next_event()
            if event is NEED_DATA:
                if pos >= len(data):
                    break  # the device has nothing more to say: the host would time out
                asked = conn.next_read_size()
                assert asked > 0 and asked % max_packet_size == 0
                size = min(next(reads, asked), asked, len(data) - pos)
                conn.receive_bulk_in(data[pos : pos + size])
                pos += size
            elif isinstance(event, ResponseData):
                assert len(event.data) <= len(data)
            elif isinstance(event, NeedRequest):
                conn.request_response(requested)
            else:
                assert isinstance(event, EndOfMessage)
                if pos >= len(data):
                    break
                conn.request_response(requested)  # keep reading the rest as a new response
    except RemoteProtocolError:
        failed = True
        assert conn.state is UsbtmcState.ERROR
    # Whatever happened, the abort sequence and reset() bring the session back in step.
    if conn.state is not UsbtmcState.IDLE:
        conn.initiate_abort_bulk_in()
        conn.check_abort_bulk_in_status()
        conn.reset()
    assert conn.state is UsbtmcState.IDLE, failed
    asked = unpack_header(conn.request_response(64)).transfer_size
    clean = b"ok\n"[-asked:]  # ends with the terminator: the end even without a usable EOM
    wire = _well_formed_transfer(conn, clean, True)
    events: list[object] = []
    for _ in range(100):
        event = conn.next_event()
        if event is NEED_DATA:
            chunk = wire[: conn.next_read_size()]
            wire = wire[len(chunk) :]
            conn.receive_bulk_in(chunk)
            continue
        events.append(event)
        if isinstance(event, EndOfMessage):
            break
    received = b"".join(bytes(e.data) for e in events if isinstance(e, ResponseData))
    assert received == clean and isinstance(events[-1], EndOfMessage), events


@FUZZ
@given(data=st.binary(max_size=64))
def test_bulk_header_and_class_reply_decoders(data: bytes) -> None:
    for parse in (
        unpack_header,
        parse_status,
        parse_initiate_abort,
        parse_check_abort_bulk_in,
        parse_check_abort_bulk_out,
        parse_check_clear_status,
        parse_capabilities,
    ):
        try:
            parse(data)
        except RemoteProtocolError:
            pass
    if len(data) >= HEADER_SIZE:
        fixed = bytearray(data)
        fixed[2] = ~fixed[1] & 0xFF
        header = unpack_header(fixed)  # a matching bTagInverse always decodes
        assert header.tag == fixed[1]


# -- USB488: interrupt-IN ------------------------------------------------------------------


_packets = st.one_of(
    st.integers(0, 0xFF).map(lambda stb: ("srq", stb, srq_notification(stb))),
    st.tuples(st.integers(2, 127), st.integers(0, 0xFF)).map(
        lambda t: ("stb", t, status_byte_notification(*t))
    ),
    st.binary(max_size=10).map(lambda raw: ("raw", None, raw)),
)


@FUZZ
@given(packets=st.lists(_packets, max_size=30), reply=st.binary(max_size=8))
def test_interrupt_demultiplexing_of_any_packet_stream(
    packets: list[tuple[str, Any, bytes]], reply: bytes
) -> None:
    """Every well-formed notification is recognised, whatever surrounds it; anything else
    is a notification of some kind or a RemoteProtocolError (the reader logs and goes on)."""
    for kind, value, raw in packets:
        try:
            note = parse_interrupt(raw)
        except RemoteProtocolError:
            assert kind == "raw"
            continue
        if kind == "srq":
            assert note == SrqNotification(value)
        elif kind == "stb":
            assert note == StatusByteReply(*value)
        else:
            assert isinstance(note, (SrqNotification, StatusByteReply, VendorNotification))
    try:
        parse_read_status_byte(reply)
    except RemoteProtocolError:
        pass


# -- the transport's streaming block parser ------------------------------------------------------


@FUZZ
@given(
    data=st.one_of(garbage, st.binary(max_size=300).map(lambda p: block_header(len(p)) + p)),
    tail=st.sampled_from([b"", b"\n", b" \r\n", b"x", b"\n\n"]),
    points=st.lists(st.integers(0), max_size=12),
    max_size=st.integers(0, 400),
    into=st.one_of(st.none(), st.integers(0, 400)),
)
def test_block_sink_takes_any_message_in_any_pieces(
    data: bytes, tail: bytes, points: list[int], max_size: int, into: int | None
) -> None:
    message = data + tail
    buffer = memoryview(bytearray(into)) if into is not None else None

    def outcome(pieces: list[bytes]) -> object:
        sink = BlockSink(buffer, max_size, 0x0A)
        try:
            for piece in pieces:
                sink(memoryview(piece))
            return bytes(sink.result())
        except LocalProtocolError:
            return "local"
        except RemoteProtocolError:
            return "remote"

    whole = outcome([message])
    assert outcome(split_at(message, points)) == whole  # the cut points never matter
    if message.startswith(b"#") and data[1:2] not in (b"0", b"") and tail.strip() == b"":
        header_digits = data[1] - 0x30
        size = len(data) - 2 - header_digits
        if size <= max_size and (into is None or into >= size) and whole not in ("remote",):
            assert whole == data[2 + header_digits :]


# -- resource names --------------------------------------------------------------------------

_resource_tokens = st.sampled_from(
    [
        "TCPIP",
        "TCPIP0",
        "USB",
        "USB1",
        "SIM",
        "GPIB",
        "::",
        ":",
        "SOCKET",
        "INSTR",
        "hislip0",
        "inst0",
        "0x0957",
        "0x",
        "5025",
        "65536",
        "[",
        "]",
        "::1",
        "fe80::1%eth0",
        "192.168.0.1",
        "a-b.example",
        ",",
        " ",
        "\0",
        "é",
    ]
)
resource_texts = st.one_of(
    st.text(max_size=60), st.lists(_resource_tokens, max_size=14).map("".join)
)


@FUZZ
@given(text=resource_texts)
def test_resource_names_parse_or_raise_invalid_resource_name(text: str) -> None:
    try:
        res = parse_resource(text)
    except InvalidResourceName as exc:
        assert exc.position is None or 0 <= exc.position <= len(text)
        return
    assert isinstance(res, ResourceName)
    assert parse_resource(str(res)) == res  # the canonical form parses back to itself


@FUZZ
@given(text=st.text(max_size=80))
def test_parse_idn_takes_anything(text: str) -> None:
    identity = parse_idn(text)
    fields = (identity.manufacturer, identity.model, identity.serial, identity.firmware)
    assert all(isinstance(field, str) and field == field.strip() for field in fields)


# -- the simulator ------------------------------------------------------------------------------

_scpi_tokens = st.sampled_from(
    [
        b"*IDN?",
        b"*RST",
        b"*OPC",
        b"*OPC?",
        b"*WAI",
        b"*ESE 255",
        b"*SRE 32",
        b"*TRG",
        b"SYST:ERR?",
        b":MEAS:VOLT:DC?",
        b"CONF:VOLT 10",
        b"FREQ 1MHZ",
        b"OUTP ON",
        b":SOUR1:VOLT MAX",
        b"WAV:DATA?",
        b"VOLT",
        b"?",
        b":",
        b";",
        b",",
        b" ",
        b"\n",
        b'"a;b"',
        b"'x'",
        b"#15abcde",
        b"#0xyz\n",
        b"#9",
        b"1e999",
        b"-",
        b"NAN",
        b"\xff",
    ]
)
programs = st.one_of(garbage, st.lists(_scpi_tokens, max_size=20).map(b"".join))


@FUZZ
@given(data=programs)
def test_program_parser_gives_units_or_scpi_error(data: bytes) -> None:
    try:
        messages = parse_program(data)
    except ScpiError as exc:
        assert -199 <= exc.code <= -100, exc.code
    else:
        assert all(isinstance(units, list) for units in messages)
    end = find_open_block(data)
    assert end is None or end >= 0


@FUZZ
@given(
    pattern=st.text(alphabet="ABCabc:[]#?*_1 ", max_size=24),
    tokens=st.lists(st.text(alphabet="ABCabc1", max_size=6), max_size=6),
)
def test_header_patterns_and_matching(pattern: str, tokens: list[str]) -> None:
    try:
        compiled = parse_pattern(pattern)
    except ValueError:
        return
    result = compiled.match(tuple(t.upper() for t in tokens))
    assert result is None or isinstance(result, tuple)


@FUZZ
@given(arg=st.binary(max_size=30), unit=st.sampled_from(["", "V", "HZ", "OHM", "S"]))
def test_parameter_parsers_give_values_or_scpi_error(arg: bytes, unit: str) -> None:
    call = Call("TEST#", (memoryview(arg),), (len(arg) - 3,))
    parsers: list[Any] = [
        lambda: call.number(0, unit=unit, minimum=-1e9, maximum=1e9, default=0.0),
        lambda: call.integer(0, minimum=0, maximum=255),
        lambda: call.boolean(0),
        lambda: call.string(0),
        lambda: call.choice(0, ["IMMediate", "BUS", "EXTernal"]),
        lambda: call.block(0),
        lambda: call.suffix(0, maximum=4),
        lambda: call.raw(1),
    ]
    for parse in parsers:
        try:
            parse()
        except ScpiError as exc:
            assert -299 <= exc.code <= -100, exc.code


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), messages=st.lists(programs, max_size=6))
def test_simulated_instruments_survive_any_program_message(
    model: str, messages: list[bytes]
) -> None:
    """No input makes a device raise, grow its error queue past 20 or stop answering."""
    device = create_device(model, clock=lambda: 0.0)
    for message in messages:
        device.write(message)
        while device.read() is not None:
            pass
        assert len(device.errors) <= ERROR_QUEUE_SIZE
    device.device_clear()
    device.cancel_operations()
    device.write(b"*IDN?\n")
    assert device.read() == device.identity.encode() + b"\n"


@FUZZ
@given(
    transfers=st.lists(st.one_of(garbage, st.binary(min_size=12, max_size=80)), max_size=8),
    points=st.lists(st.integers(0), max_size=8),
)
def test_device_side_usbtmc_parser_takes_any_bulk_out_data(
    transfers: list[bytes], points: list[int]
) -> None:
    """The emulator's DEV_DEP_MSG_OUT parser answers data or STALL, never raises; after a
    clear and CLEAR_FEATURE it serves a clean exchange."""
    function = UsbtmcFunction(create_device("dmm", clock=lambda: 0.0), clock=lambda: 0.0)
    for transfer in transfers:
        for piece in split_at(transfer, points):
            assert function.bulk_out(BULK_OUT, piece) in (None, STALL)
        function.bulk_in(BULK_IN, 512)  # whatever it answers (data, NAK, STALL)
    clear = ControlRequest(request_type=0xA1, request=5, value=0, index=0, length=1)
    check = ControlRequest(request_type=0xA1, request=6, value=0, index=0, length=2)
    assert function.control(clear) == b"\x01"
    for _ in range(100):
        status = function.control(check)
        assert isinstance(status, bytes)
        if status[0] != 0x02:  # not PENDING
            break
        function.bulk_in(BULK_IN, 512)  # drain what the clear is waiting for
    else:
        raise AssertionError("CHECK_CLEAR_STATUS stays PENDING")
    function.clear_halt(BULK_OUT)
    function.clear_halt(BULK_IN)
    message = b"*IDN?\n"
    transfer = pack_header(1, 7, len(message), 1) + message + b"\0\0"
    assert function.bulk_out(BULK_OUT, transfer) is None
    assert function.bulk_out(BULK_OUT, pack_header(2, 8, 512, 0)) is None
    reply = function.bulk_in(BULK_IN, 1024)
    assert isinstance(reply, bytes) and reply[1] == 8, reply
    assert reply[HEADER_SIZE:].startswith(b"aiotmc,SIM-DMM")
