"""The sans-IO HiSLIP codec: headers, reassembly, MessageIDs, Initialize, data splitting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T


def test_header_layout_is_network_order() -> None:
    raw = hs.encode_header(T.DataEnd, 1, 0xFFFFFF00, 5)
    assert raw == b"HS\x07\x01\xff\xff\xff\x00" + (5).to_bytes(8, "big")
    assert hs.decode_header(raw) == hs.Header(7, 1, 0xFFFFFF00, 5)


def test_bad_prologue_and_short_header_are_typed_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="not a HiSLIP header"):
        hs.decode_header(b"XX" + bytes(14))
    with pytest.raises(RemoteProtocolError, match="16 bytes"):
        hs.decode_header(b"HS")


def test_out_of_range_fields_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        hs.encode_header(256)
    with pytest.raises(LocalProtocolError):
        hs.encode_header(0, 0, 1 << 32)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=300),
)
def test_message_round_trip(type_: int, control: int, param: int, payload: bytes) -> None:
    reader = hs.Reassembler(max_payload=300)
    reader.feed(hs.encode(type_, control, param, payload))
    assert reader.next_message() == hs.Message(type_, control, param, payload)
    assert reader.next_message() is None
    assert reader.buffered == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 38), st.binary(max_size=64)), max_size=6),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_reassembly_is_independent_of_chunking(
    messages: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(hs.encode(t, 0, i, p) for i, (t, p) in enumerate(messages))
    reader = hs.Reassembler(max_payload=64)
    out: list[hs.Message] = []
    pos = 0
    index = 0
    while pos < len(stream):
        step = cuts[index % len(cuts)]
        index += 1
        reader.feed(stream[pos : pos + step])
        pos += step
        while (message := reader.next_message()) is not None:
            out.append(message)
    assert out == [hs.Message(t, 0, i, p) for i, (t, p) in enumerate(messages)]


def test_absurd_length_is_refused_before_any_allocation() -> None:
    reader = hs.Reassembler(max_payload=1 << 20)
    reader.feed(hs.encode_header(T.DataEnd, 0, 0, 1 << 63))
    with pytest.raises(hs.MessageTooLarge, match="9223372036854775808"):
        reader.next_message()
    assert reader.buffered == hs.HEADER_SIZE  # nothing sized from the length field


def test_wants_counts_down_to_a_whole_message() -> None:
    reader = hs.Reassembler()
    assert reader.wants() == 16
    reader.feed(hs.encode_header(T.Data, 0, 0, 10)[:6])
    assert reader.wants() == 10
    reader.feed(hs.encode_header(T.Data, 0, 0, 10)[6:] + b"abc")
    assert reader.next_message() is None
    assert reader.wants() == 7


def test_message_ids_start_step_wrap_and_reset() -> None:
    ids = hs.MessageIdCounter()
    assert ids.last == hs.NO_MESSAGE_ID == 0xFFFFFEFE
    assert [ids.take() for _ in range(130)][:3] == [0xFFFFFF00, 0xFFFFFF02, 0xFFFFFF04]
    assert ids.last == (0xFFFFFF00 + 2 * 129) & 0xFFFFFFFF  # wrapped past 2**32
    assert ids.last == 2
    ids.reset()
    assert ids.take() == hs.FIRST_MESSAGE_ID


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=50), max_size=5),
    st.integers(1, 40),
    st.booleans(),
    st.booleans(),
)
def test_data_messages_split_and_mark(
    parts: list[bytes], max_payload: int, end: bool, rmt: bool
) -> None:
    ids = hs.MessageIdCounter()
    messages = hs.data_messages(
        [bytearray(p) for p in parts], max_payload=max_payload, end=end, ids=ids, rmt=rmt
    )
    joined = b"".join(b"".join(bytes(x) for x in pieces) for _, pieces in messages)
    assert joined == b"".join(parts)
    headers = [hs.decode_header(h) for h, _ in messages]
    for i, header in enumerate(headers):
        assert header.length <= max_payload
        last = i == len(headers) - 1
        assert header.type == (T.DataEnd if last and end else T.Data)
        assert header.control == (1 if rmt and i == 0 else 0)
        assert header.param == (0xFFFFFF00 + 2 * i) & 0xFFFFFFFF
    assert ids.last == headers[-1].param


def test_initialize_round_trip_and_negotiation() -> None:
    reader = hs.Reassembler()
    reader.feed(hs.encode_initialize((1, 1), b"AT", "hislip3"))
    message = reader.next_message()
    assert message is not None
    assert hs.decode_initialize(message) == hs.InitializeRequest((1, 1), b"AT", "hislip3")
    assert hs.negotiate_version((2, 0), (1, 1)) == (1, 1)
    reader.feed(hs.encode_initialize_response((1, 1), 0x1234, hs.Feature.OVERLAPPED))
    message = reader.next_message()
    assert message is not None
    assert hs.decode_initialize_response(message) == hs.InitializeResponse(
        (1, 1), 0x1234, hs.Feature.OVERLAPPED
    )


def test_initialize_refuses_bad_fields() -> None:
    with pytest.raises(LocalProtocolError):
        hs.encode_initialize((1, 0), b"A", "hislip0")
    with pytest.raises(LocalProtocolError):
        hs.encode_initialize((1, 0), b"AT", "x" * 257)
    with pytest.raises(LocalProtocolError):
        hs.encode_initialize_response((1, 0), 1 << 16)
    with pytest.raises(RemoteProtocolError, match="expected Initialize"):
        hs.decode_initialize(hs.Message(T.DataEnd, 0, 0))
    with pytest.raises(RemoteProtocolError, match="ASCII"):
        hs.decode_initialize(hs.Message(T.Initialize, 0, 0, b"\xff"))


def test_error_messages_become_typed_errors() -> None:
    fatal = hs.Message(T.FatalError, hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE, 0, b"no")
    with pytest.raises(hs.HislipError, match="INVALID_INITIALIZATION_SEQUENCE: no") as info:
        hs.decode_initialize_response(fatal)
    assert info.value.fatal and info.value.code == 3
    with pytest.raises(hs.HislipError, match="code 99") as info:
        hs.raise_if_error(hs.Message(T.Error, 99, 0))
    assert not info.value.fatal
    hs.raise_if_error(hs.Message(T.DataEnd, 0, 0))


def test_max_message_size_payload() -> None:
    reader = hs.Reassembler()
    reader.feed(hs.encode_max_message_size(T.AsyncMaximumMessageSize, 1 << 40))
    message = reader.next_message()
    assert message is not None
    assert hs.decode_max_message_size(message) == 1 << 40
    with pytest.raises(RemoteProtocolError, match="8 bytes"):
        hs.decode_max_message_size(hs.Message(T.AsyncMaximumMessageSize, 0, 0, b"\0"))
