"""USBTMC sans-IO: host UsbtmcConnection <-> device UsbtmcFunction over a synchronous link.

No event loop, no I/O (h11 ``ConnectionPair`` style). :class:`Pair` joins the two sides;
a NAK where the host would wait forever raises :class:`Hang` instead.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.events import ControlRequest
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.protocol.quirks import NO_QUIRKS, Quirks
from aiotmc.protocol.usbtmc import (
    HEADER_SIZE,
    NEED_DATA,
    EndOfMessage,
    MsgID,
    NeedRequest,
    ResponseData,
    UsbtmcCapabilities,
    UsbtmcConnection,
    UsbtmcRequest,
    UsbtmcState,
    UsbtmcStatus,
    check_abort_bulk_in_status_request,
    clear_feature_endpoint_halt_request,
    pack_header,
    parse_capabilities,
    parse_check_abort_bulk_in,
    parse_check_abort_bulk_out,
    parse_check_clear_status,
    parse_initiate_abort,
    parse_status,
    unpack_header,
)
from aiotmc.sim.commands import Block, Call, Response, command
from aiotmc.sim.device import SimDevice, test_pattern
from aiotmc.sim.usb_function import STALL, UsbFunction
from aiotmc.sim.usbtmc_device import BULK_IN, BULK_OUT, INTERRUPT_IN, UsbtmcFunction

BytesLike = bytes | bytearray | memoryview


IDN = b"aiotmc,TMC-TEST,0001,0.1\n"


class TmcTestDevice(SimDevice):
    """The instrument behind these tests: ``DATA? <n>`` answers an n-byte block of
    00 01 .. FF (0x0A inside), ``UPLoad <block>`` keeps a block, ``UPLoad?`` answers
    ``<length>,<crc32>``, ``ARM <ms>`` starts an operation that runs on the next trigger."""

    def __init__(self, **options: Any) -> None:
        super().__init__(identity=IDN.decode().strip(), **options)
        self.upload: bytes = b""

    @command("DATA?", args=1)
    def _data(self, call: Call) -> Response:
        return Block(test_pattern(call.integer(0, minimum=0, maximum=999_999_999)))

    @command("UPLoad", args=1)
    def _upload(self, call: Call) -> Response:
        self.upload = call.block(0).tobytes()
        return None

    @command("UPLoad?")
    def _upload_query(self, call: Call) -> Response:
        return f"{len(self.upload)},{zlib.crc32(self.upload)}"

    @command("ARM", args=1)
    def _arm(self, call: Call) -> Response:
        """An operation of ``<seconds>`` that starts on the next trigger."""
        self.start_operation(float(call.integer(0, minimum=0)) / 1000, wait_for_trigger=True)
        return None


class Hang(Exception):
    """The device NAKs where the host would wait: a real read would never complete."""


class Pair:
    """A host connection and an emulated device joined by a synchronous fake bus."""

    def __init__(
        self,
        model: SimDevice | None = None,
        *,
        quirks: Quirks = NO_QUIRKS,
        device_quirks: Quirks | None = None,
        max_packet_size: int = 512,
        max_transfer_size: int = 1 << 20,
        **function_options: Any,
    ) -> None:
        self.model = model or TmcTestDevice()
        self.function = UsbtmcFunction(
            self.model,
            quirks=quirks if device_quirks is None else device_quirks,
            max_packet_size=max_packet_size,
            **function_options,
        )
        assert isinstance(self.function, UsbFunction)
        self.conn = UsbtmcConnection(
            max_packet_size=max_packet_size, max_transfer_size=max_transfer_size, quirks=quirks
        )
        self.caps = self.conn.receive_capabilities(self.control(self.conn.get_capabilities()))
        self.reads: list[tuple[int, int]] = []  # (asked, got) per bulk-IN read
        self.requests = 0

    def control(self, request: ControlRequest) -> bytes:
        reply = self.function.control(request)
        assert reply is not STALL, request
        assert isinstance(reply, bytes)
        return reply

    def out(self, transfer: bytes) -> None:
        assert self.function.bulk_out(BULK_OUT, transfer) is None

    def write(self, data: BytesLike | Sequence[BytesLike], *, end: bool = True) -> list[bytes]:
        transfers = self.conn.send_message(data, end=end)
        for transfer in transfers:
            self.out(transfer)
        return transfers

    def bulk_in(self, size: int) -> bytes:
        data = self.function.bulk_in(BULK_IN, size)
        if data is None:
            raise Hang(f"bulk-IN read of {size} bytes never completes")
        assert data is not STALL
        assert isinstance(data, bytes)
        self.reads.append((size, len(data)))
        return data

    def events(self, max_bytes: int = 1 << 30, *, term_char: int | None = None) -> list[Any]:
        """Request a response; return every event up to EndOfMessage (bounded)."""
        self.out(self.conn.request_response(max_bytes, term_char=term_char))
        self.requests += 1
        events: list[Any] = []
        received = 0
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_bulk_in(self.bulk_in(self.conn.next_read_size()))
                continue
            if isinstance(event, ResponseData):
                event = ResponseData(memoryview(event.data.tobytes()))
                received += len(event.data)
                if received > max_bytes:
                    raise OverflowError(f"more than {max_bytes} bytes")
            events.append(event)
            if isinstance(event, NeedRequest):
                if term_char is not None:
                    return events
                if received >= max_bytes:
                    raise OverflowError(f"more than {max_bytes} bytes")
                self.out(self.conn.request_response(max_bytes - received, term_char=term_char))
                self.requests += 1
            elif isinstance(event, EndOfMessage):
                return events

    def read(self, max_bytes: int = 1 << 30) -> bytes:
        return b"".join(e.data for e in self.events(max_bytes) if isinstance(e, ResponseData))

    def query(self, command: bytes, max_bytes: int = 1 << 30) -> bytes:
        self.write(command)
        return self.read(max_bytes)


def block_response(size: int) -> bytes:
    return block_header(size) + bytes(test_pattern(size)) + b"\n"


# -- headers and tags ----------------------------------------------------------------------------


def test_pack_and_unpack_header() -> None:
    raw = pack_header(MsgID.DEV_DEP_MSG_OUT, 7, 1000, 1)
    assert raw == bytes([1, 7, 0xF8, 0]) + struct.pack("<I", 1000) + bytes([1, 0, 0, 0])
    header = unpack_header(raw)
    assert (header.msg_id, header.tag, header.transfer_size, header.eom) == (1, 7, 1000, True)
    request = unpack_header(pack_header(MsgID.REQUEST_DEV_DEP_MSG_IN, 9, 64, 2, 0x0A))
    assert request.term_char_set and request.term_char == 0x0A


@pytest.mark.parametrize("tag", [0, 256, -1])
def test_pack_header_rejects_bad_tags(tag: int) -> None:
    with pytest.raises(LocalProtocolError):
        pack_header(1, tag, 0)


def test_unpack_header_checks_inverse_and_length() -> None:
    raw = bytearray(pack_header(2, 5, 10))
    raw[2] ^= 0xFF
    with pytest.raises(RemoteProtocolError, match="bTagInverse"):
        unpack_header(raw)
    with pytest.raises(RemoteProtocolError):
        unpack_header(raw[:11])


def test_btag_runs_1_to_255_and_skips_zero() -> None:
    conn = UsbtmcConnection()
    tags = []
    for _ in range(600):
        (transfer,) = conn.send_message(b"X")
        assert transfer[2] == ~transfer[1] & 0xFF
        tags.append(transfer[1])
    assert tags[:3] == [1, 2, 3]
    assert tags[254:257] == [255, 1, 2]
    assert 0 not in tags
    assert conn.last_btag == conn.out_tag == tags[-1]


def test_requests_and_messages_share_the_tag_sequence() -> None:
    pair = Pair()
    for _ in range(300):  # wraps through 255 -> 1 with queries in between
        assert pair.query(b"*IDN?\n") == IDN
    assert pair.conn.in_tag == pair.conn.last_btag
    assert pair.conn.out_tag == pair.conn.in_tag - 1 or pair.conn.in_tag == 1


# -- sending -------------------------------------------------------------------------------------


def test_message_padding_and_eom() -> None:
    conn = UsbtmcConnection()
    (transfer,) = conn.send_message(b"*IDN?\n")
    header = unpack_header(transfer)
    assert header.msg_id == MsgID.DEV_DEP_MSG_OUT
    assert header.transfer_size == 6 and header.eom
    assert transfer[HEADER_SIZE:] == b"*IDN?\n\0\0"
    assert len(transfer) % 4 == 0
    (aligned,) = conn.send_message(b"ABCD")
    assert len(aligned) == HEADER_SIZE + 4


def test_chunking_puts_eom_on_the_last_transfer_only() -> None:
    conn = UsbtmcConnection(max_transfer_size=10)
    parts = [b"abc", memoryview(b"defghijklmnop"), bytearray(b"qrstuvwxy")]
    transfers = conn.send_message(parts)
    sizes = [unpack_header(t).transfer_size for t in transfers]
    assert sizes == [10, 10, 5]
    assert [unpack_header(t).eom for t in transfers] == [False, False, True]
    tags = [t[1] for t in transfers]
    assert tags == [1, 2, 3]
    payload = b"".join(
        t[HEADER_SIZE : HEADER_SIZE + s] for t, s in zip(transfers, sizes, strict=True)
    )
    assert payload == b"abcdefghijklmnopqrstuvwxy"


def test_one_header_per_transfer_not_per_packet() -> None:
    conn = UsbtmcConnection(max_packet_size=64)
    transfers = conn.send_message(b"x" * 200)
    assert len(transfers) == 1
    assert unpack_header(transfers[0]).transfer_size == 200


def test_send_without_end_then_finish() -> None:
    pair = Pair()
    first = pair.write(b"*ID", end=False)
    assert not unpack_header(first[0]).eom
    assert pair.conn.state is UsbtmcState.SENDING
    with pytest.raises(LocalProtocolError):
        pair.conn.request_response(100)  # the message is not finished
    assert pair.write(b"", end=False) == []
    pair.write(b"N?\n")
    assert pair.conn.state is UsbtmcState.IDLE
    assert pair.read() == IDN


def test_empty_message_with_end_is_refused() -> None:
    conn = UsbtmcConnection()
    with pytest.raises(LocalProtocolError, match="empty"):
        conn.send_message(b"")
    assert conn.state is UsbtmcState.IDLE


def test_trigger_message() -> None:
    pair = Pair()
    message = pair.conn.trigger()
    header = unpack_header(message)
    assert (header.msg_id, header.transfer_size, len(message)) == (MsgID.TRIGGER, 0, 12)
    pair.out(message)
    assert pair.function.seen.triggers == 1
    assert pair.conn.out_tag == header.tag


def test_device_accepts_transfers_split_over_urbs() -> None:
    pair = Pair(max_packet_size=64)
    payload = b"UPL " + block_header(1000) + bytes(test_pattern(1000)) + b"\n"
    (transfer,) = pair.conn.send_message(payload)
    for start in range(0, len(transfer), 64):  # libusb may split a transfer into URBs
        pair.out(transfer[start : start + 64])
    assert pair.query(b"UPL?\n").startswith(b"1000,")


# -- receiving -----------------------------------------------------------------------------------


def test_request_header_and_term_char_only_when_capable() -> None:
    conn = UsbtmcConnection(max_transfer_size=4096)
    header = unpack_header(conn.request_response(1 << 30, term_char=0x0A))
    assert header.msg_id == MsgID.REQUEST_DEV_DEP_MSG_IN
    assert header.transfer_size == 4096  # capped per transfer
    assert not header.term_char_set  # capabilities unknown: no TermChar
    conn.reset()
    conn.receive_capabilities(UsbtmcCapabilities(term_char=True).to_bytes())
    header = unpack_header(conn.request_response(100, term_char=0x0A))
    assert header.term_char_set and header.term_char == 0x0A and header.transfer_size == 100


def test_query_round_trip_reads_once() -> None:
    pair = Pair()
    assert pair.query(b"*IDN?\n") == IDN
    assert len(pair.reads) == 1
    assert pair.conn.state is UsbtmcState.IDLE


def test_multi_transfer_response() -> None:
    pair = Pair(max_transfer_size=1000)
    pair.write(b"DATA? 4000\n")
    events = pair.events()
    kinds = [type(e) for e in events]
    assert kinds.count(NeedRequest) == 4 and kinds[-1] is EndOfMessage
    data = b"".join(e.data for e in events if isinstance(e, ResponseData))
    assert data == block_response(4000)
    assert pair.requests == 5


@pytest.mark.parametrize("max_packet_size", [64, 512])
def test_block_sizes_around_packet_boundaries(max_packet_size: int) -> None:
    """Transfers that are exact multiples end with a ZLP; the host absorbs stale ones."""
    pair = Pair(max_packet_size=max_packet_size, max_transfer_size=3000)
    for size in [*range(0, 40), *range(470, 530), *range(990, 1040), 2988, 2989, 5000, 9000]:
        assert pair.query(b"DATA? %d\n" % size) == block_response(size)
        assert pair.conn.state is UsbtmcState.IDLE


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 20_000),
    max_packet_size=st.sampled_from([16, 64, 512]),
    max_transfer_size=st.integers(1, 5000),
)
def test_block_round_trip_any_sizes(
    size: int, max_packet_size: int, max_transfer_size: int
) -> None:
    pair = Pair(max_packet_size=max_packet_size, max_transfer_size=max_transfer_size)
    assert pair.query(b"DATA? %d\n" % size) == block_response(size)
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")


def test_reads_are_packet_multiples_and_larger_than_the_transfer() -> None:
    pair = Pair(max_packet_size=64)
    pair.query(b"DATA? 100\n", max_bytes=500)
    ((asked, got),) = pair.reads
    assert asked % 64 == 0 and asked > got


def test_large_transfer_takes_a_header_read_then_one_exact_read() -> None:
    pair = Pair()
    assert pair.query(b"DATA? 500000\n") == block_response(500000)
    (first, first_got), (rest, rest_got) = pair.reads
    assert first == first_got == 16 * 1024  # full: the transfer goes on
    size = len(block_response(500000))
    assert rest_got == HEADER_SIZE + size + (-size % 4) - first
    assert rest_got < rest <= rest_got + 512


def test_term_char_read_stops_at_the_character() -> None:
    pair = Pair()
    pair.write(b"*IDN?\n")
    events = pair.events(term_char=ord(","))
    assert isinstance(events[-1], NeedRequest) and events[-1].term_char
    assert b"".join(e.data for e in events[:-1]) == b"aiotmc,"
    assert pair.read() == b"TMC-TEST,0001,0.1\n"


def test_response_data_is_a_view_without_copies() -> None:
    pair = Pair()
    pair.write(b"DATA? 2000\n")
    pair.out(pair.conn.request_response(1 << 20))
    assert pair.conn.next_event() is NEED_DATA
    raw = pair.bulk_in(pair.conn.next_read_size())
    pair.conn.receive_bulk_in(raw)
    event = pair.conn.next_event()
    assert isinstance(event, ResponseData)
    assert event.data.obj is raw


# -- the device breaking the protocol ------------------------------------------------------------


def _feed(conn: UsbtmcConnection, data: bytes) -> Any:
    conn.next_read_size()
    conn.receive_bulk_in(data)
    return conn.next_event()


def test_inverse_mismatch_is_a_remote_error_and_error_is_sticky() -> None:
    conn = UsbtmcConnection()
    conn.request_response(100)
    bad = bytearray(pack_header(2, conn.in_tag, 3, 1) + b"ok\n\0")
    bad[2] ^= 1
    with pytest.raises(RemoteProtocolError, match="bTagInverse"):
        _feed(conn, bytes(bad))
    assert conn.state is UsbtmcState.ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.request_response(10)
    conn.initiate_abort_bulk_in()
    assert conn.state is UsbtmcState.ABORTING
    conn.reset()
    assert conn.state is UsbtmcState.IDLE


def test_btag_mismatch() -> None:
    conn = UsbtmcConnection()
    conn.request_response(100)
    with pytest.raises(RemoteProtocolError, match="does not match"):
        _feed(conn, pack_header(2, conn.in_tag + 1, 3, 1) + b"ok\n\0")


def test_wrong_msgid() -> None:
    conn = UsbtmcConnection()
    conn.request_response(100)
    with pytest.raises(RemoteProtocolError, match="MsgID"):
        _feed(conn, pack_header(1, conn.in_tag, 3, 1) + b"ok\n\0")


def test_transfer_larger_than_requested() -> None:
    conn = UsbtmcConnection()
    conn.request_response(2)
    with pytest.raises(RemoteProtocolError, match="request"):
        _feed(conn, pack_header(2, conn.in_tag, 3, 1) + b"ok\n\0")


def test_transfer_shorter_than_its_transfer_size() -> None:
    conn = UsbtmcConnection()
    conn.request_response(100)
    assert isinstance(_feed(conn, pack_header(2, conn.in_tag, 50, 1) + b"ok\n\0"), ResponseData)
    with pytest.raises(RemoteProtocolError, match="short"):
        conn.next_event()


def test_unexpected_empty_read() -> None:
    conn = UsbtmcConnection()
    conn.request_response(100)
    assert _feed(conn, b"") is NEED_DATA  # one stale ZLP is allowed at the start
    with pytest.raises(RemoteProtocolError, match="empty"):
        _feed(conn, b"")


def test_read_longer_than_asked() -> None:
    conn = UsbtmcConnection(max_packet_size=64)
    conn.request_response(10)
    size = conn.next_read_size()
    with pytest.raises(RemoteProtocolError):
        conn.receive_bulk_in(b"\0" * (size + 64))


def test_header_split_over_reads() -> None:
    # Reads of one 8-byte packet (exact reads) split the 12-byte header.
    conn = UsbtmcConnection(
        max_packet_size=8, quirks=Quirks(no_short_packet_on_exact_multiple=True)
    )
    conn.request_response(100)
    transfer = pack_header(2, conn.in_tag, 3, 1) + b"ok\n\0"
    assert conn.next_read_size() == 8
    conn.receive_bulk_in(transfer[:8])
    assert conn.next_event() is NEED_DATA
    assert conn.next_read_size() == 8
    conn.receive_bulk_in(transfer[8:])
    event = conn.next_event()
    assert isinstance(event, ResponseData) and event.data == b"ok\n"
    assert isinstance(conn.next_event(), EndOfMessage)


def test_extra_alignment_bytes_are_drained() -> None:
    conn = UsbtmcConnection(max_packet_size=16)
    conn.request_response(100)
    size = conn.next_read_size()
    # The device pads far beyond 4 bytes and fills the whole read: the transfer goes on.
    conn.receive_bulk_in(pack_header(2, conn.in_tag, 3, 1) + b"ok\n" + b"\xaa" * (size - 15))
    event = conn.next_event()
    assert isinstance(event, ResponseData) and event.data == b"ok\n"
    assert conn.next_event() is NEED_DATA
    assert conn.next_read_size() == 16
    conn.receive_bulk_in(b"\xaa" * 4)  # the short packet ends it
    assert isinstance(conn.next_event(), EndOfMessage)


# -- state rules ---------------------------------------------------------------------------------


def test_state_rules() -> None:
    conn = UsbtmcConnection()
    with pytest.raises(LocalProtocolError):
        conn.next_read_size()
    with pytest.raises(LocalProtocolError):
        conn.receive_bulk_in(b"")
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.request_response(0)
    conn.request_response(10)
    assert conn.state is UsbtmcState.REQUESTED
    with pytest.raises(LocalProtocolError):
        conn.send_message(b"x")
    with pytest.raises(LocalProtocolError, match="next_read_size"):
        conn.receive_bulk_in(b"")
    with pytest.raises(LocalProtocolError):
        UsbtmcConnection(max_packet_size=0)
    with pytest.raises(LocalProtocolError):
        UsbtmcConnection(max_transfer_size=0)


def test_new_message_after_partial_response() -> None:
    pair = Pair(max_transfer_size=100)
    pair.write(b"DATA? 1000\n")
    pair.out(pair.conn.request_response(100))
    while not isinstance(event := pair.conn.next_event(), NeedRequest):
        if event is NEED_DATA:
            pair.conn.receive_bulk_in(pair.bulk_in(pair.conn.next_read_size()))
    assert pair.conn.state is UsbtmcState.PARTIAL
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")  # the rest was dropped


# -- class requests ------------------------------------------------------------------------------


def test_capabilities_round_trip() -> None:
    caps = UsbtmcCapabilities(
        bcd_usbtmc=0x0100,
        indicator_pulse=True,
        listen_only=True,
        term_char=True,
        bcd_usb488=0x0100,
        usb488_2=True,
        trigger=True,
        scpi=True,
        dt1=True,
    )
    raw = caps.to_bytes()
    assert len(raw) == 0x18 and raw[0] == UsbtmcStatus.SUCCESS
    assert raw[4] == 0b101 and raw[5] == 1 and raw[14] == 0b101 and raw[15] == 0b1001
    assert parse_capabilities(raw) == caps
    assert parse_capabilities(raw[:6]).bcd_usb488 == 0  # short replies are zero-extended
    assert caps.usb488 and not UsbtmcCapabilities().usb488
    with pytest.raises(RemoteProtocolError):
        parse_capabilities(caps.to_bytes(status=UsbtmcStatus.FAILED))


def test_device_capabilities() -> None:
    pair = Pair()
    assert pair.caps.usb488 and pair.caps.trigger and pair.caps.ren_control and pair.caps.term_char
    plain = Pair(usb488=False, interrupt_endpoint=False)
    assert not plain.caps.usb488 and not plain.caps.trigger


def test_reply_parsers() -> None:
    assert parse_status(b"\x01") is UsbtmcStatus.SUCCESS
    assert parse_initiate_abort(b"\x81\x07").tag == 7
    out = parse_check_abort_bulk_out(b"\x01\0\0\0\x10\0\0\0")
    assert (out.status, out.count) == (UsbtmcStatus.SUCCESS, 16)
    in_ = parse_check_abort_bulk_in(b"\x02\x01\0\0\0\0\0\0")
    assert in_.status is UsbtmcStatus.PENDING and in_.more_data
    assert parse_check_clear_status(b"\x02\x01").more_data
    for bad in (b"", b"\x01"):
        with pytest.raises(RemoteProtocolError):
            parse_initiate_abort(bad)
    with pytest.raises(RemoteProtocolError, match="unknown status"):
        parse_status(b"\x55")
    with pytest.raises(RemoteProtocolError):
        parse_check_abort_bulk_in(b"\x01\0")


def test_control_request_shapes() -> None:
    conn = UsbtmcConnection(interface=2, bulk_out_endpoint=0x03, bulk_in_endpoint=0x84)
    conn.request_response(10)
    tag = conn.in_tag
    abort_in = conn.initiate_abort_bulk_in()
    assert (abort_in.request_type, abort_in.request, abort_in.value, abort_in.index) == (
        0xA2,
        UsbtmcRequest.INITIATE_ABORT_BULK_IN,
        tag,
        0x84,
    )
    assert abort_in.length == 2 and abort_in.is_in
    assert conn.check_abort_bulk_in_status() == check_abort_bulk_in_status_request(0x84)
    abort_out = conn.initiate_abort_bulk_out(9)
    assert (abort_out.value, abort_out.index, abort_out.length) == (9, 0x03, 2)
    assert conn.check_abort_bulk_out_status().length == 8
    clear = conn.initiate_clear()
    assert (clear.request_type, clear.index, clear.length) == (0xA1, 2, 1)
    assert conn.check_clear_status().length == 2
    assert conn.get_capabilities().length == 0x18
    assert conn.indicator_pulse().request == UsbtmcRequest.INDICATOR_PULSE
    halt = clear_feature_endpoint_halt_request(0x03)
    assert (halt.request_type, halt.request, halt.value, halt.index) == (0x02, 1, 0, 0x03)


def _start_long_read(pair: Pair, size: int) -> int:
    pair.write(b"DATA? %d\n" % size)
    pair.out(pair.conn.request_response(1 << 20))
    pair.conn.next_event()
    pair.conn.next_read_size()
    pair.conn.receive_bulk_in(pair.bulk_in(512))  # one packet of a long transfer
    assert isinstance(pair.conn.next_event(), ResponseData)
    return pair.conn.in_tag


def _drain(pair: Pair) -> None:
    while len(pair.bulk_in(4096)) == 4096:
        pass


def test_abort_bulk_in_sequence() -> None:
    pair = Pair()
    tag = _start_long_read(pair, 100_000)
    reply = parse_initiate_abort(pair.control(pair.conn.initiate_abort_bulk_in()))
    assert (reply.status, reply.tag) == (UsbtmcStatus.SUCCESS, tag)
    check = parse_check_abort_bulk_in(pair.control(pair.conn.check_abort_bulk_in_status()))
    assert check.status is UsbtmcStatus.PENDING and check.more_data
    assert pair.bulk_in(4096) == b""  # the short packet that ends the transfer
    check = parse_check_abort_bulk_in(pair.control(pair.conn.check_abort_bulk_in_status()))
    assert check.status is UsbtmcStatus.SUCCESS and check.count == 512
    pair.conn.reset()
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")
    # Nothing in progress now: FAILED.
    reply = parse_initiate_abort(pair.control(pair.conn.initiate_abort_bulk_in()))
    assert reply.status is UsbtmcStatus.FAILED
    pair.conn.reset()


def test_abort_bulk_in_with_the_wrong_tag_names_the_current_one() -> None:
    pair = Pair()
    tag = _start_long_read(pair, 100_000)
    reply = parse_initiate_abort(pair.control(pair.conn.initiate_abort_bulk_in(tag + 1)))
    assert (reply.status, reply.tag) == (UsbtmcStatus.TRANSFER_NOT_IN_PROGRESS, tag)
    reply = parse_initiate_abort(pair.control(pair.conn.initiate_abort_bulk_in(reply.tag)))
    assert reply.status is UsbtmcStatus.SUCCESS


def test_device_clear_sequence_drains_bulk_in() -> None:
    pair = Pair()
    _start_long_read(pair, 100_000)
    assert parse_status(pair.control(pair.conn.initiate_clear())) is UsbtmcStatus.SUCCESS
    check = parse_check_clear_status(pair.control(pair.conn.check_clear_status()))
    assert check.status is UsbtmcStatus.PENDING and check.more_data
    _drain(pair)
    check = parse_check_clear_status(pair.control(pair.conn.check_clear_status()))
    assert check.status is UsbtmcStatus.SUCCESS
    pair.function.clear_halt(BULK_OUT)
    pair.conn.reset()
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")


def test_abort_bulk_out_sequence() -> None:
    pair = Pair()
    payload = b"UPL " + block_header(5000) + bytes(test_pattern(5000)) + b"\n"
    (transfer,) = pair.conn.send_message(payload)
    pair.out(transfer[:1024])  # the host controller sent two packets, then was cancelled
    tag = pair.conn.out_tag
    reply = parse_initiate_abort(pair.control(pair.conn.initiate_abort_bulk_out()))
    assert (reply.status, reply.tag) == (UsbtmcStatus.SUCCESS, tag)
    check = parse_check_abort_bulk_out(pair.control(pair.conn.check_abort_bulk_out_status()))
    assert check.status is UsbtmcStatus.SUCCESS and check.count == 1024 - HEADER_SIZE
    pair.control(clear_feature_endpoint_halt_request(BULK_OUT))
    pair.conn.reset()
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")
    assert pair.model.errors == []  # the half transfer was dropped, not executed


def test_device_halts_bulk_out_on_a_bad_header() -> None:
    pair = Pair()
    bad = bytearray(pack_header(1, 3, 4, 1) + b"abcd")
    bad[2] = 0
    assert pair.function.bulk_out(BULK_OUT, bytes(bad)) is STALL
    assert pair.function.bulk_out(BULK_OUT, pack_header(1, 4, 4, 1) + b"abcd") is STALL
    status = pair.function.control(
        ControlRequest(request_type=0x82, request=0, value=0, index=1, length=2)
    )
    assert status == b"\x01\x00"
    pair.function.clear_halt(BULK_OUT)
    assert pair.query(b"*IDN?\n").startswith(b"aiotmc")


# -- descriptors ---------------------------------------------------------------------------------


def test_descriptors() -> None:
    function = UsbtmcFunction(TmcTestDevice(), vid=0x1234, pid=0x5678)
    raw = function.descriptors
    device, config = raw[:18], raw[18:]
    assert device[0] == 18 and device[1] == 1
    assert struct.unpack_from("<HH", device, 8) == (0x1234, 0x5678)
    assert (device[14], device[15], device[16]) == (1, 2, 3)  # string indexes
    (total,) = struct.unpack_from("<H", config, 2)
    assert total == len(config) == 9 + 9 + 3 * 7
    interface = config[9:18]
    assert (interface[4], interface[5], interface[6], interface[7]) == (3, 0xFE, 0x03, 1)
    endpoints = [config[18 + 7 * i : 25 + 7 * i] for i in range(3)]
    assert [(e[2], e[3] & 3) for e in endpoints] == [(BULK_OUT, 2), (BULK_IN, 2), (INTERRUPT_IN, 3)]
    assert struct.unpack_from("<H", endpoints[1], 4) == (512,)
    full_speed = UsbtmcFunction(
        TmcTestDevice(), max_packet_size=64, interrupt_endpoint=False, usb488=False
    )
    interface = full_speed.descriptors[27:36]
    assert (interface[4], interface[7]) == (2, 0)
    assert not full_speed.high_speed
    with pytest.raises(LocalProtocolError):
        UsbtmcFunction(TmcTestDevice(), max_packet_size=100)


def test_string_descriptors() -> None:
    function = UsbtmcFunction(TmcTestDevice(), serial="SN42")

    def get(index: int, language: int = 0x0409) -> Any:
        return function.control(
            ControlRequest(
                request_type=0x80, request=6, value=0x0300 | index, index=language, length=255
            )
        )

    assert get(0, 0) == bytes([4, 3, 0x09, 0x04])
    serial = get(3)
    assert isinstance(serial, bytes) and serial[0] == len(serial) and serial[1] == 3
    assert serial[2:].decode("utf-16-le") == "SN42"
    assert get(1)[2:].decode("utf-16-le") == "aiotmc"
    assert get(9) is STALL
    device = function.control(
        ControlRequest(request_type=0x80, request=6, value=0x0100, index=0, length=18)
    )
    assert device == function.descriptors[:18]


def test_unknown_requests_stall() -> None:
    function = UsbtmcFunction(TmcTestDevice())
    assert (
        function.control(ControlRequest(request_type=0xC1, request=1, value=0, index=0, length=1))
        is STALL
    )
    assert (
        function.control(ControlRequest(request_type=0xA1, request=99, value=0, index=0, length=1))
        is STALL
    )
    assert (
        function.control(ControlRequest(request_type=0xA1, request=7, value=0, index=5, length=24))
        is STALL
    )
    assert function.bulk_in(0x81, 64) is STALL
