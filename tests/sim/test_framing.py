"""ProgramFramer: program messages out of an untrusted byte stream, within limits."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiotmc.protocol import NEED_DATA
from aiotmc.protocol.framing import MessageDecoder
from aiotmc.sim.framing import FramingError, ProgramFramer

Outcome = list[bytes | str]


def frame(chunks: list[bytes], **limits: int) -> tuple[Outcome, ProgramFramer, int]:
    """Messages and violation kinds, the framer, and the most bytes it ever held."""
    options = {"max_text_size": 1 << 20, "max_message_size": 1 << 20, "max_elements": 1000}
    framer = ProgramFramer(**(options | limits))
    out: Outcome = []
    peak = 0
    for chunk in [*chunks, b""]:
        framer.feed(chunk)
        peak = max(peak, framer.pending)
        for _ in range(10_000):
            try:
                message = framer.next_message()
            except FramingError as exc:
                out.append(exc.kind)
                continue
            if message is NEED_DATA:
                break
            assert isinstance(message, bytes | bytearray)
            out.append(bytes(message))
    return out, framer, peak


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_messages_blocks_and_strings() -> None:
    data = b"*IDN?\nDATA #15a\nb;c\nX \"a\nb\";'q\nq'\nY #0raw;\nZ O'Neil\n"
    out, _, _ = frame([data])
    assert out == [
        b"*IDN?\n",
        b"DATA #15a\nb;c\n",
        b"X \"a\nb\";'q\nq'\n",
        b"Y #0raw;\n",
        b"Z O'Neil\n",
    ]


def test_large_message_is_handed_over_without_a_copy() -> None:
    framer = ProgramFramer(max_text_size=100, max_message_size=1 << 20, max_elements=10)
    framer.feed(b"DATA #510000" + bytes(10000) + b"\n")
    message = framer.next_message()
    assert isinstance(message, bytearray) and len(message) == 10013
    assert framer.pending == 0
    framer.feed(b"DATA #510000" + bytes(10000) + b"\n*IDN?\n")  # the rest moves instead
    message = framer.next_message()
    assert isinstance(message, bytearray) and len(message) == 10013
    assert framer.next_message() == b"*IDN?\n"


def test_small_messages_are_bytes() -> None:
    framer = ProgramFramer(max_text_size=100, max_message_size=1 << 20, max_elements=10)
    framer.feed(b"*IDN?\n")
    assert type(framer.next_message()) is bytes  # the device caches the parse of bytes


def test_text_limit_drops_the_line_as_it_arrives() -> None:
    chunks = [b"MEAS " + b"1" * 100] + [b"2" * 1000] * 100 + [b"\n*IDN?\n"]
    out, _, peak = frame(chunks, max_text_size=50)
    assert out == ["text too long", b"*IDN?\n"]
    assert peak <= 1000 + 50 + 10  # never more than one chunk past the limit


def test_block_payload_is_not_text() -> None:
    block = b"#41000" + b"\n" * 1000
    out, _, _ = frame([b"DATA " + block + b"\n"], max_text_size=20)
    assert out == [b"DATA " + block + b"\n"]


def test_oversized_block_is_skipped_by_count_and_never_buffered() -> None:
    chunks = [b"DATA #42000"] + [b"\n" * 100] * 20 + [b"rest\n*IDN?\n"]
    out, _, peak = frame(chunks, max_message_size=1000)
    assert out == ["block too large", b"*IDN?\n"]
    assert peak <= 100 + 12


def test_announced_length_allocates_nothing() -> None:
    out, framer, peak = frame([b"DATA #9999999999", b"abc"], max_message_size=1 << 34)
    assert out == []  # waiting for the payload; EOF then ends the connection
    assert peak < 20 and framer.eof


def test_element_limit() -> None:
    out, _, _ = frame([b'X "a","b","c","d"\n*IDN?\n'], max_elements=3)
    assert out == ["too many elements", b"*IDN?\n"]


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        ProgramFramer(max_text_size=0, max_message_size=1, max_elements=1)


alphabet = st.sampled_from([b"a", b"#", b"1", b"2", b"0", b'"', b"'", b"\n", b";", b" ", b","])
streams = st.lists(alphabet, max_size=80).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=streams, points=st.lists(st.integers(0, 100), max_size=6))
@example(data=b"aaaaaaa#0\n", points=[9])  # a violation is found where the whole finds it
def test_splitting_never_changes_the_outcome(data: bytes, points: list[int]) -> None:
    for limits in (
        {},
        {"max_text_size": 8, "max_message_size": 16, "max_elements": 3},
        {"max_text_size": 3, "max_message_size": 40, "max_elements": 20},
    ):
        whole, _, _ = frame([data], **limits)
        pieces, _, _ = frame(split_at(data, points), **limits)
        assert pieces == whole


@settings(max_examples=300, deadline=None)
@given(data=streams)
def test_same_framing_as_the_response_decoder_within_the_limits(data: bytes) -> None:
    """Where no limit is hit, messages end where MessageDecoder ends them."""
    out, _, _ = frame([data])
    decoder = MessageDecoder(max_message_size=1 << 20)
    decoder.receive_data(data)
    expected = []
    while (message := decoder.next_message()) is not NEED_DATA:
        assert isinstance(message, bytes)
        expected.append(message)
    assert out == expected
