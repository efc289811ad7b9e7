"""ONC-RPC v2 messages and record marking."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotmc import RemoteProtocolError
from aiotmc.protocol.framing import NEED_DATA
from aiotmc.protocol.oncrpc import (
    AcceptStat,
    RecordReassembler,
    RecordTooLarge,
    RpcError,
    call_header,
    decode_call,
    decode_reply,
    encode_accepted_error,
    encode_call,
    encode_denied,
    encode_reply,
    peek_xid,
    record_mark,
)


def test_call_encoding_matches_rfc5531() -> None:
    call = encode_call(7, 0x0607AF, 1, 10, b"ARGS")
    assert call == struct.pack(">IIIIIIIIII", 7, 0, 2, 0x0607AF, 1, 10, 0, 0, 0, 0) + b"ARGS"
    assert call_header(7, 0x0607AF, 1, 10) + b"ARGS" == call


def test_call_round_trip() -> None:
    decoded = decode_call(encode_call(0xFFFFFFFF, 100000, 2, 3, b"\x00" * 16))
    assert (decoded.xid, decoded.prog, decoded.vers, decoded.proc) == (0xFFFFFFFF, 100000, 2, 3)
    assert decoded.args.tobytes() == b"\x00" * 16


def test_call_with_auth_unix_credentials_is_skipped() -> None:
    cred = struct.pack(">II", 1, 8) + b"12345678"
    message = struct.pack(">IIIIII", 5, 0, 2, 9, 1, 4) + cred + struct.pack(">II", 0, 0) + b"XY"
    assert decode_call(message).args.tobytes() == b"XY"


def test_call_wrong_rpc_version() -> None:
    with pytest.raises(RpcError):
        decode_call(struct.pack(">IIIIIIIIII", 1, 0, 3, 9, 1, 1, 0, 0, 0, 0))


def test_reply_is_not_a_call() -> None:
    with pytest.raises(RemoteProtocolError, match="CALL"):
        decode_call(encode_reply(1))


def test_reply_success() -> None:
    reply = decode_reply(encode_reply(42, b"\x00\x00\x00\x00"))
    assert reply.xid == 42
    assert reply.check().tobytes() == b"\x00" * 4


@pytest.mark.parametrize("stat", [s for s in AcceptStat if s != AcceptStat.SUCCESS])
def test_reply_errors_raise_rpc_error(stat: AcceptStat) -> None:
    reply = decode_reply(encode_accepted_error(3, stat, mismatch=(1, 1)))
    assert reply.xid == 3
    with pytest.raises(RpcError, match=stat.name) as info:
        reply.check()
    assert info.value.stat == stat
    assert isinstance(info.value, RemoteProtocolError)


def test_prog_mismatch_names_versions() -> None:
    reply = decode_reply(encode_accepted_error(3, AcceptStat.PROG_MISMATCH, mismatch=(4, 6)))
    with pytest.raises(RpcError, match=r"4\.\.6"):
        reply.check()


def test_denied_reply() -> None:
    reply = decode_reply(encode_denied(9))
    assert not reply.accepted
    with pytest.raises(RpcError, match="version mismatch"):
        reply.check()


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00\x00", b"\x00\x00\x00\x01\x00\x00\x00\x00", struct.pack(">III", 1, 1, 7)],
)
def test_garbage_reply_is_remote_error(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_reply(garbage)


def test_peek_xid() -> None:
    assert peek_xid(encode_reply(77)) == 77
    assert peek_xid(b"ab") is None


def test_record_mark() -> None:
    assert record_mark(5) == b"\x80\x00\x00\x05"
    assert record_mark(5, last=False) == b"\x00\x00\x00\x05"
    with pytest.raises(ValueError):
        record_mark(1 << 31)


def test_reassembler_multi_fragment_record() -> None:
    r = RecordReassembler(max_size=100)
    r.receive_data(record_mark(3, last=False) + b"abc" + record_mark(2) + b"de")
    assert r.next_record() == b"abcde"
    assert r.next_record() is NEED_DATA
    assert r.at_record_start


def test_reassembler_byte_by_byte_and_several_records() -> None:
    stream = record_mark(4) + b"wxyz" + record_mark(0, last=False) + record_mark(1) + b"q"
    r = RecordReassembler(max_size=10)
    records = []
    for byte in stream:
        r.receive_data(bytes([byte]))
        while (record := r.next_record()) is not NEED_DATA:
            records.append(record)
    assert records == [b"wxyz", b"q"]


def test_two_gigabyte_header_is_typed_error_before_any_payload() -> None:
    r = RecordReassembler(max_size=1 << 20)
    r.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(RecordTooLarge, match="exceeds max_size"):
        r.next_record()
    assert r.buffered == 0  # nothing allocated for the announced payload
    with pytest.raises(RecordTooLarge):  # the framing is lost for good
        r.receive_data(b"more")


def test_fragments_adding_up_beyond_max_size() -> None:
    r = RecordReassembler(max_size=10)
    r.receive_data(record_mark(8, last=False) + b"x" * 8 + record_mark(8))
    with pytest.raises(RecordTooLarge):
        r.next_record()


def test_buffered_grows_only_with_received_bytes() -> None:
    r = RecordReassembler(max_size=1 << 30)
    r.receive_data(record_mark(1 << 29) + b"abc")
    assert r.next_record() is NEED_DATA
    assert r.buffered == 3


@given(
    st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), max_size=6),
    st.integers(1, 17),
)
def test_reassembler_round_trip(records: list[list[bytes]], step: int) -> None:
    stream = b""
    for fragments in records:
        for i, fragment in enumerate(fragments):
            stream += record_mark(len(fragment), last=i == len(fragments) - 1) + fragment
    r = RecordReassembler(max_size=200)
    out = []
    for start in range(0, len(stream), step):
        r.receive_data(stream[start : start + step])
        while (record := r.next_record()) is not NEED_DATA:
            out.append(record)
    assert out == [b"".join(fragments) for fragments in records]


def test_reassembler_hands_over_a_large_record_without_copying() -> None:
    size = 1 << 20
    r = RecordReassembler(max_size=2 * size)
    payload = bytes(range(256)) * (size // 256)
    r.receive_data(record_mark(size) + payload[:1000])
    assert r.next_record_view() is NEED_DATA
    r.receive_data(payload[1000:])
    record = r.next_record_view()
    assert isinstance(record, memoryview) and record == payload
    assert r.at_record_start
    r.receive_data(record_mark(2) + b"ok")  # the next record in a new buffer
    assert r.next_record_view() == b"ok"
    assert record == payload  # the handed-over view is untouched
    # Small records, or one followed by more data, are copied as before.
    r.receive_data(record_mark(size) + payload + record_mark(1) + b"x")
    assert isinstance(r.next_record_view(), bytes)
    assert r.next_record_view() == b"x"


def test_reassembler_receives_a_large_record_in_place() -> None:
    size = 3 << 20
    r = RecordReassembler(max_size=size)
    payload = bytes(range(256)) * (size // 256)
    assert r.receive_buffer() is None  # nothing known yet: receive as usual
    r.receive_data(record_mark(size) + payload[:5000])
    assert r.receive_buffer() is None  # no wish for a view yet (next_record only copies)
    assert r.next_record_view() is NEED_DATA
    sent = 5000
    while (target := r.receive_buffer()) is not None:
        assert len(target) == size - sent  # exactly the rest of the record, never more
        step = min(len(target), 1 << 20)
        target[:step] = payload[sent : sent + step]
        r.commit(step)
        sent += step
        if sent < size:
            assert r.next_record_view() is NEED_DATA
        else:
            break
    record = r.next_record_view()
    assert isinstance(record, memoryview) and record == payload
    assert r.at_record_start and r.receive_buffer() is None
    # The rest of a large record and the next one in the same data: split correctly.
    r.receive_data(record_mark(size) + payload[:10])
    assert r.next_record_view() is NEED_DATA
    r.receive_data(payload[10:] + record_mark(2) + b"ok")
    assert r.next_record_view() == payload
    assert r.next_record_view() == b"ok"
    # A header announcing more than max_size still fails before anything is allocated.
    with pytest.raises(RecordTooLarge):
        r.receive_data(record_mark(size + 1))
        r.next_record_view()


def test_reassembler_reuses_its_in_place_buffer_only_when_free() -> None:
    size = 1 << 20
    r = RecordReassembler(max_size=2 * size)
    first, second = b"a" * size, b"b" * size

    def receive(payload: bytes) -> bytes | memoryview:
        r.receive_data(record_mark(size) + payload[:10])
        assert r.next_record_view() is NEED_DATA
        r.receive_data(payload[10:])
        record = r.next_record_view()
        assert isinstance(record, memoryview)
        return record

    kept = receive(first)
    other = receive(second)  # ``kept`` is alive: a new buffer, ``kept`` untouched
    assert kept == first and other == second
    del kept
    again = receive(first)  # the first buffer is free again: reused
    assert again == first and other == second


def test_reassembler_places_a_stretch_into_the_callers_buffer() -> None:
    size = 2 << 20
    record = bytes(range(256)) * (size // 256)
    r = RecordReassembler(max_size=size)
    target = bytearray(1 << 20)
    seen: list[int] = []

    def place(prefix: memoryview, length: int) -> tuple[int, memoryview] | None:
        seen.append(len(prefix))
        assert length == size and prefix == record[: len(prefix)]
        return 100, memoryview(target)

    r.place_next(place)
    r.receive_data(record_mark(size) + record[:50])
    assert r.next_record_view() is NEED_DATA and not seen  # waits for 128 bytes
    r.receive_data(record[50:5000])
    assert r.next_record_view() is NEED_DATA and seen == [5000]
    sent = 5000
    while (view := r.receive_buffer()) is not None:
        step = min(len(view), 300_000)
        view[:step] = record[sent : sent + step]
        r.commit(step)
        sent += step
    got = r.next_record_view()
    assert got == record[:100] + record[100 + len(target) :]
    assert r.take_placed() == (100, len(target)) and r.take_placed() is None
    assert target == record[100 : 100 + len(target)]
    # Detached part-way: the rest of the stretch is discarded, the buffer left alone.
    target[:] = bytes(len(target))
    r.place_next(place)
    r.receive_data(record_mark(size) + record[:1000])
    assert r.next_record_view() is NEED_DATA
    r.detach()
    r.receive_data(record[1000:])
    assert r.next_record_view() == record[:100] + record[100 + len(target) :]
    assert bytes(target[900:]) == bytes(len(target) - 900)  # nothing after the detach
    # No placement wanted: an ordinary in-place record.
    r.place_next(lambda prefix, length: None)
    r.receive_data(record_mark(size) + record)
    assert r.next_record_view() == record and r.take_placed() is None
