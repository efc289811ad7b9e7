"""MessageDecoder: SCPI response framing of a byte stream (aiotmc.protocol.framing)."""

from __future__ import annotations

import itertools
import os
import tracemalloc
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol import (
    NEED_DATA,
    MessageDecoder,
    encode_block,
    parse_block_header,
)

from .strategies import messages

# scripts/fuzz_protocol.py raises this for a long run.
PROPERTY = settings(max_examples=int(os.environ.get("AIOTMC_FUZZ_EXAMPLES", "200")), deadline=None)

ALL_BYTES = bytes(range(256))
ERROR = "ERROR"


def drain(decoder: MessageDecoder) -> list[bytes]:
    """Every complete message the decoder holds."""
    out: list[bytes] = []
    while (message := decoder.next_message()) is not NEED_DATA:
        assert isinstance(message, bytes)
        out.append(message)
    return out


def decode(chunks: Iterable[bytes], *, terminator: bytes = b"\n", eof: bool = True) -> list[bytes]:
    decoder = MessageDecoder(terminator=terminator)
    out: list[bytes] = []
    for chunk in chunks:
        if chunk:  # b"" would mean EOF
            decoder.receive_data(chunk)
            out += drain(decoder)
    if eof:
        decoder.receive_data(b"")
        out += drain(decoder)
        assert decoder.at_message_start
        assert not decoder.buffered
    return out


def outcomes(
    chunks: Iterable[bytes],
    *,
    max_message_size: int,
    terminator: bytes = b"\n",
    fused: bool = False,
) -> list[object]:
    """Messages and errors, discarding the broken message after each error, then EOF.

    ``fused``: feed each chunk with ``receive_and_next`` (the transport's hot path)
    instead of ``receive_data`` followed by ``next_message``.
    """
    decoder = MessageDecoder(terminator=terminator, max_message_size=max_message_size)
    out: list[object] = []
    first: bytes | None = None  # the chunk the next pull feeds with receive_and_next

    def pull() -> None:
        nonlocal first
        for _ in range(10_000):  # bounded: a hang is a failure, not a timeout
            try:
                if first is not None:
                    chunk, first = first, None
                    message = decoder.receive_and_next(chunk)
                else:
                    message = decoder.next_message()
            except RemoteProtocolError:
                out.append(ERROR)
                decoder.discard_current()
                continue
            if message is NEED_DATA:
                return
            assert isinstance(message, bytes)
            assert len(message) <= max_message_size
            out.append(message)
        raise AssertionError("next_message() loops forever")

    for chunk in chunks:
        if fused and chunk:
            first = chunk
        else:
            decoder.receive_data(chunk)
        pull()
    decoder.receive_data(b"")
    pull()
    assert decoder.at_message_start
    assert not decoder.buffered
    return out


def split_at(data: bytes, points: Iterable[int]) -> list[bytes]:
    cuts = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


TRICKY = [
    b"KEYSIGHT TECHNOLOGIES,34461A,MY1234,A.02.14\n",
    b"+1.00000000E+00,-2.5E-3\n",
    b"\n",
    b'-113,"Undefined; header\nwith a newline"\n',
    b"'single ''quoted''; \n string',\"doubled \"\"\n\"\" quotes\"\n",
    b"#14\n\n\n\n\n",
    b":WAV:DATA " + encode_block(ALL_BYTES) + b"\n",
    b"1.0;" + encode_block(b"\"';#9\n") + b';"a;b"\n',
    b"#0indefinite ' \" #9 payload\n",
    b"#H1F,#B101,#Q17,No. #x\n",
    b"O'Neil Instruments,5.0\" display,it's\n",
    b"#10\n",
    b"CH#1A,#2x\n",
]


# -- framing ---------------------------------------------------------------------------------


def test_idn_response() -> None:
    decoder = MessageDecoder()
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(b"ACME,Model 1,SN1,1.0\n")
    assert decoder.next_message() == b"ACME,Model 1,SN1,1.0\n"
    assert decoder.next_message() is NEED_DATA
    assert decoder.at_message_start


def test_configuration_is_readable() -> None:
    decoder = MessageDecoder(terminator=b"\r\n", max_message_size=99)
    assert decoder.terminator == b"\r\n"
    assert decoder.max_message_size == 99
    assert not decoder.eof


def test_need_data_is_a_sentinel_class() -> None:
    assert isinstance(NEED_DATA, type)
    assert repr(NEED_DATA) == "NEED_DATA"


def test_tricky_messages_back_to_back_in_one_chunk() -> None:
    assert decode([b"".join(TRICKY)]) == TRICKY


def test_tricky_messages_split_at_every_point() -> None:
    stream = b"".join(TRICKY)
    for point in range(len(stream) + 1):
        assert decode([stream[:point], stream[point:]]) == TRICKY, point


def test_tricky_messages_byte_by_byte() -> None:
    stream = b"".join(TRICKY)
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == TRICKY


def test_small_stream_split_at_every_pair_of_points() -> None:
    messages = [b'1;"a\n;""b";#12\n;\n', b"#0x'\n", b"#13a\nb'x'\n"]
    stream = b"".join(messages)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert decode([stream[:i], stream[i:j], stream[j:]]) == messages, (i, j)


def test_crlf_terminator_split_at_every_point() -> None:
    messages = [b"1.0\r\n", b'"a\r\nb"\r\n', b"#12\r\n\r\n", b"#0\r\r\r\n", b"x\ry\n\r\n"]
    stream = b"".join(messages)
    for point in range(len(stream) + 1):
        assert decode([stream[:point], stream[point:]], terminator=b"\r\n") == messages


def test_accepts_bytes_like_chunks() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(memoryview(b"xx1.5\nyy")[2:6])
    decoder.receive_data(bytearray(b"2\n"))
    assert drain(decoder) == [b"1.5\n", b"2\n"]


@PROPERTY
@given(
    batch=st.lists(messages(), min_size=1, max_size=8),
    points=st.lists(st.integers(min_value=0), max_size=12),
)
def test_well_formed_stream_split_at_random_points(batch: list[bytes], points: list[int]) -> None:
    stream = b"".join(batch)
    assert decode(split_at(stream, points)) == batch


@PROPERTY
@given(
    batch=st.lists(messages(b"\r\n"), min_size=1, max_size=5),
    points=st.lists(st.integers(min_value=0), max_size=8),
)
def test_well_formed_stream_crlf(batch: list[bytes], points: list[int]) -> None:
    stream = b"".join(batch)
    assert decode(split_at(stream, points), terminator=b"\r\n") == batch


# Garbage biased towards the characters that matter to the framing.
_garbage = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"#",
                b"#1",
                b"#2",
                b"#0",
                b"#9",
                b"9",
                b"1",
                b'"',
                b"'",
                b"\n",
                b";",
                b",",
                b" ",
                b"a",
            ]
        ),
        st.binary(max_size=30),
    ),
    max_size=60,
).map(b"".join)


# Garbage, cut anywhere, framed with limits and terminators that matter.
GARBAGE_CASES = {
    "data": _garbage,
    "points": st.lists(st.integers(min_value=0), max_size=10),
    "max_message_size": st.integers(1, 80),
    "terminator": st.sampled_from([b"\n", b"\r\n", b"\x00"]),
}


@PROPERTY
@given(**GARBAGE_CASES)
def test_garbage_never_hangs_and_splitting_does_not_change_the_outcome(
    data: bytes, points: list[int], max_message_size: int, terminator: bytes
) -> None:
    """Only RemoteProtocolError escapes, discard_current() always resynchronises, and
    the sequence of messages and errors does not depend on how the stream is cut."""
    whole = outcomes([data], max_message_size=max_message_size, terminator=terminator)
    pieces = outcomes(
        split_at(data, points), max_message_size=max_message_size, terminator=terminator
    )
    assert pieces == whole


@PROPERTY
@given(**GARBAGE_CASES)
def test_receive_and_next_is_receive_data_then_next_message(
    data: bytes, points: list[int], max_message_size: int, terminator: bytes
) -> None:
    """The fused call (and its shortcut for a lone plain message) frames exactly alike."""
    chunks = split_at(data, points)
    options = {"max_message_size": max_message_size, "terminator": terminator}
    assert outcomes(chunks, fused=True, **options) == outcomes(chunks, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chunk", "terminator", "expected"),
    [
        (b"1.5\n", b"\n", b"1.5\n"),  # the shortcut: one plain message, nothing buffered
        (b"\n", b"\n", b"\n"),
        (b"A\nB\n", b"\n", b"A\n"),  # two messages: the second stays buffered
        (b"1.5", b"\n", NEED_DATA),  # no terminator yet
        (b"\r", b"\r\n", NEED_DATA),  # shorter than the terminator
        (b'"x\n"\n', b"\n", b'"x\n"\n'),  # a quote: the full scan
        (b"#11\n\n", b"\n", b"#11\n\n"),  # a block: the full scan
        (b"#15ab\n", b"\n", NEED_DATA),  # the newline is block payload: 2 bytes to come
        (b'"ab\n', b"\n", NEED_DATA),  # the newline is inside a string
        (b"'ab\n", b"\n", NEED_DATA),
    ],
)
def test_receive_and_next_cases(chunk: bytes, terminator: bytes, expected: object) -> None:
    decoder = MessageDecoder(terminator=terminator)
    assert decoder.receive_and_next(memoryview(chunk)) == expected
    rest = chunk[len(expected) :] if isinstance(expected, bytes) else chunk
    assert bytes(decoder.buffered) == rest


def test_receive_and_next_respects_max_message_size() -> None:
    decoder = MessageDecoder(max_message_size=3)
    with pytest.raises(RemoteProtocolError):
        decoder.receive_and_next(b"1234\n")
    decoder.discard_current()
    assert decoder.receive_and_next(b"12\n") == b"12\n"


def test_receive_and_next_after_eof_is_a_local_error() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        decoder.receive_and_next(b"1\n")


@PROPERTY
@given(data=_garbage, points=st.lists(st.integers(min_value=0), max_size=10))
def test_without_errors_messages_are_a_lossless_split(data: bytes, points: list[int]) -> None:
    decoder = MessageDecoder()
    out: list[bytes] = []
    try:
        for chunk in split_at(data, points):
            decoder.receive_data(chunk)
            out += drain(decoder)
    except RemoteProtocolError:
        return
    assert b"".join(out) + bytes(decoder.buffered) == data
    assert all(message.endswith(b"\n") for message in out)


# -- limits and errors -------------------------------------------------------------------------


def test_oversized_block_header_fails_fast_without_allocating() -> None:
    decoder = MessageDecoder()
    tracemalloc.start()
    try:
        decoder.receive_data(b"#9999999999")
        with pytest.raises(RemoteProtocolError) as info:
            decoder.next_message()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert "block header announces 999999999 bytes" in str(info.value)
    assert "more than max_message_size=268435456" in str(info.value)
    assert not decoder.at_message_start


def test_oversized_block_fails_once_the_length_digits_are_in() -> None:
    decoder = MessageDecoder(max_message_size=1000)
    decoder.receive_data(b"1,#52")
    assert decoder.next_message() is NEED_DATA  # '#52A' would be text
    decoder.receive_data(b"000")
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(b"0")
    with pytest.raises(RemoteProtocolError, match="block header announces 20000 bytes"):
        decoder.next_message()


def test_block_that_makes_the_message_too_long() -> None:
    decoder = MessageDecoder(max_message_size=10)
    decoder.receive_data(b"1234,#15")
    with pytest.raises(RemoteProtocolError, match="makes the message at least 13 bytes"):
        decoder.next_message()


def test_long_plain_message_fails_before_its_terminator_arrives() -> None:
    decoder = MessageDecoder(max_message_size=10)
    decoder.receive_data(b"0123456789")
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(b"a")
    with pytest.raises(RemoteProtocolError, match="exceeds max_message_size=10"):
        decoder.next_message()


def test_complete_message_longer_than_max_fails() -> None:
    decoder = MessageDecoder(max_message_size=4)
    decoder.receive_data(b"1234\n1\n")
    with pytest.raises(
        RemoteProtocolError, match="message of 5 bytes, more than max_message_size=4"
    ):
        decoder.next_message()


def test_message_of_exactly_max_size_passes() -> None:
    decoder = MessageDecoder(max_message_size=7)
    decoder.receive_data(b"#13abc\n" + b'"ab;"\n')
    assert drain(decoder) == [b"#13abc\n", b'"ab;"\n']


def test_errors_are_sticky_until_discarded() -> None:
    decoder = MessageDecoder(max_message_size=3)
    decoder.receive_data(b"1234")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError, match="exceeds max_message_size=3"):
            decoder.next_message()
    assert not decoder.at_message_start
    decoder.discard_current()
    decoder.receive_data(b"\n12\n")
    assert drain(decoder) == [b"12\n"]


def test_truncated_block_then_eof() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"#15ab")
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(b"")
    assert decoder.eof
    with pytest.raises(
        RemoteProtocolError, match=r"connection closed mid-message \(5 bytes pending\)"
    ):
        decoder.next_message()
    decoder.discard_current()
    assert decoder.at_message_start
    assert not decoder.buffered
    assert decoder.next_message() is NEED_DATA


@pytest.mark.parametrize("partial", [b"abc", b'"abc\n', b"#", b"#3", b"'x'", b"#0abc"])
def test_eof_mid_message_is_an_error(partial: bytes) -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"1\n" + partial)
    assert decoder.next_message() == b"1\n"
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="connection closed mid-message"):
        decoder.next_message()


def test_eof_at_a_message_boundary_is_clean() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"1\n2\n")
    decoder.receive_data(b"")
    assert drain(decoder) == [b"1\n", b"2\n"]
    assert decoder.next_message() is NEED_DATA
    with pytest.raises(LocalProtocolError, match="after EOF"):
        decoder.receive_data(b"3\n")
    decoder.reset()
    assert not decoder.eof
    decoder.receive_data(b"3\n")
    assert drain(decoder) == [b"3\n"]


def test_closing_quote_at_eof_ends_the_string() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b'"a""b"')
    assert decoder.next_message() is NEED_DATA  # could still be a doubled quote
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed mid-message"):
        decoder.next_message()  # string closed, but no terminator


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"terminator": b""}, "must not be empty"),
        ({"terminator": b"#"}, "must not contain"),
        ({"terminator": b"'\n"}, "must not contain"),
        ({"max_message_size": 0}, "must be positive"),
    ],
)
def test_invalid_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        MessageDecoder(**kwargs)  # type: ignore[arg-type]


# -- discard_current -------------------------------------------------------------------------


def test_discard_long_plain_message_resyncs_after_its_terminator() -> None:
    decoder = MessageDecoder(max_message_size=8)
    decoder.receive_data(b'0123456789,"a')
    with pytest.raises(RemoteProtocolError, match="exceeds max_message_size=8"):
        decoder.next_message()
    decoder.discard_current()
    assert not decoder.at_message_start
    assert len(decoder.buffered) <= 2
    decoder.receive_data(b'\nb""c')  # the string of the broken message goes on...
    assert not decoder.at_message_start
    decoder.receive_data(b'\n",tail\n')  # ...and ends, then the message ends
    assert decoder.at_message_start
    decoder.receive_data(b"next\n")
    assert decoder.next_message() == b"next\n"
    assert decoder.at_message_start


def test_discard_oversized_block_skips_it_by_count() -> None:
    payload = b"\n" * 50
    decoder = MessageDecoder(max_message_size=20)
    decoder.receive_data(encode_block(payload)[:10])
    with pytest.raises(RemoteProtocolError, match="block header announces 50 bytes"):
        decoder.next_message()
    decoder.discard_current()
    assert len(decoder.buffered) <= 1  # payload bytes are dropped as they come
    decoder.receive_data(encode_block(payload)[10:] + b"\n1.5\n")
    assert drain(decoder) == [b"1.5\n"]


def test_discard_oversized_block_split_everywhere() -> None:
    stream = b'x,#3100"' + b"\n" * 99 + b'\n"ok"\n'
    for point in range(len(stream) + 1):
        decoder = MessageDecoder(max_message_size=50)
        out: list[object] = []
        for chunk in (stream[:point], stream[point:]):
            if chunk:
                decoder.receive_data(chunk)
            try:
                out += drain(decoder)
            except RemoteProtocolError as exc:
                assert "block header announces 100 bytes" in str(exc)
                out.append(ERROR)
                decoder.discard_current()
                out += drain(decoder)
        assert out == [ERROR, b'"ok"\n'], point


def test_malformed_block_headers_are_text() -> None:
    messages = [b'#2x"abc\n', b"CH#1A,Item #1 of 3\n", b"#9 12345678\n", b"#\n"]
    assert decode([b"".join(messages)]) == messages


def test_discard_at_message_start_keeps_the_next_message() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b'"a\nb"\n2\n')
    decoder.discard_current()
    assert drain(decoder) == [b'"a\nb"\n', b"2\n"]


def test_partial_message_is_pending_even_before_its_scan_advances() -> None:
    cases = [(b"#", b"5\n", b"\n"), (b"\r", b"5\r\n", b"\r\n"), (b"#1", b"1\n\n", b"\n")]
    for partial, rest, terminator in cases:
        decoder = MessageDecoder(terminator=terminator)
        decoder.receive_data(partial)
        assert decoder.at_message_start  # not looked at yet
        assert decoder.next_message() is NEED_DATA
        assert not decoder.at_message_start
        decoder.discard_current()
        decoder.receive_data(rest + b"ok" + terminator)
        assert decoder.at_message_start
        assert drain(decoder) == [b"ok" + terminator]


def test_discard_with_nothing_pending_does_nothing() -> None:
    decoder = MessageDecoder()
    decoder.discard_current()
    assert decoder.at_message_start
    decoder.receive_data(b"1\n")
    assert drain(decoder) == [b"1\n"]


def test_discard_loop_as_a_transport_runs_it() -> None:
    """The TCP transport drops an over-long reply with this loop."""
    decoder = MessageDecoder()
    stream = [b"#0ab\nX", b"1,2,3,4,", b'5,"x\n', b'y"\n7\n']
    decoder.receive_data(stream[0])
    assert decoder.next_message() == b"#0ab\n"
    assert decoder.next_message() is NEED_DATA
    decoder.discard_current()  # abandons "X1,2,3,4,5,..."
    for chunk in stream[1:]:
        if decoder.at_message_start:
            break
        decoder.receive_data(chunk)
        decoder.discard_current()
    assert decoder.at_message_start
    assert drain(decoder) == [b"7\n"]


# -- direct block reads (TCP transport) -------------------------------------------------------


def test_direct_block_read_with_buffered_and_consume() -> None:
    payload = ALL_BYTES * 3
    decoder = MessageDecoder()
    decoder.receive_data(b"1\n  " + encode_block(payload)[:40])
    assert decoder.next_message() == b"1\n"
    assert decoder.at_message_start
    buffered = decoder.buffered
    start = len(buffered) - len(bytes(buffered).lstrip())
    header = parse_block_header(buffered[start:])
    assert header is not None
    assert header.payload_length == len(payload)
    decoder.consume(start + header.header_length)
    target = bytearray(len(payload))
    have = len(decoder.buffered)
    target[:have] = decoder.buffered
    decoder.consume(have)
    rest = encode_block(payload)[40:]
    target[have:] = rest  # what recv_into would have read
    decoder.receive_data(b"\n2\n")
    assert bytes(target) == payload
    assert drain(decoder) == [b"\n", b"2\n"]


def test_buffered_view_is_read_only_and_survives_mutation() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"abc")
    view = decoder.buffered
    assert view.readonly
    decoder.receive_data(b"\nxyz\n")  # must not raise BufferError while the view lives
    assert decoder.next_message() == b"abc\n"
    decoder.consume(1)
    assert bytes(decoder.buffered) == b"yz\n"
    decoder.reset()
    assert bytes(view) == b"abc"  # the old view still points at valid memory
    assert not decoder.buffered


def test_consume_bounds() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"ab")
    with pytest.raises(LocalProtocolError, match="cannot consume 3 bytes, 2 buffered"):
        decoder.consume(3)
    with pytest.raises(LocalProtocolError):
        decoder.consume(-1)
    decoder.consume(2)
    assert not decoder.buffered


def test_consume_resets_the_scan_state() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b'"abc\n')
    assert decoder.next_message() is NEED_DATA
    assert not decoder.at_message_start  # inside a string
    decoder.consume(1)
    assert decoder.at_message_start
    assert decoder.next_message() == b"abc\n"


def test_scan_offset_is_remembered_between_calls() -> None:
    """Chunks of a long ASCII reply are each searched once (O(n) overall)."""
    decoder = MessageDecoder()
    chunk = b"1.25," * 200
    for i in range(1, 50):
        decoder.receive_data(chunk)
        assert decoder.next_message() is NEED_DATA
        assert decoder._pos == i * len(chunk)
    decoder.receive_data(b'"s",#13a\nb\n')
    assert decoder.next_message() == chunk * 49 + b'"s",#13a\nb\n'


def test_block_payload_is_skipped_by_count() -> None:
    """A block payload made of quotes and '#' is never parsed."""
    payload = b"\"'#9" * 1000 + b"\n"
    decoder = MessageDecoder()
    message = encode_block(payload) + b"\n"
    decoder.receive_data(message[:100])
    assert decoder.next_message() is NEED_DATA
    assert decoder._block_end == len(message) - 1
    decoder.receive_data(message[100:])
    assert decoder.next_message() == message
