"""BlockSink: a block written into the caller's buffer piece by piece, and the client's
receive_block(into=...) over the simulator, routed and not."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device
from aiotmc.transports.hislip._blocksink import BlockSink


def _feed(sink: BlockSink, data: bytes, step: int, *, direct: bool) -> None:
    view = memoryview(data)
    while view:
        if direct:
            target = sink.target(min(step, len(view)))
            n = min(len(target), len(view))
            target[:n] = view[:n]
            sink.advance(n)
        else:
            n = min(step, len(view))
            sink.write(view[:n])
        view = view[n:]


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
@pytest.mark.parametrize("direct", [False, True])
def test_definite_block_in_pieces(step: int, direct: bool) -> None:
    payload = bytes(range(256)) * 40
    message = b"  #" + b"5" + b"%05d" % len(payload) + payload + b"\r\n"
    into = memoryview(bytearray(len(payload) + 10))
    sink = BlockSink(into, max_size=1 << 20)
    _feed(sink, message, step, direct=direct)
    assert sink.finish().tobytes() == payload


def test_indefinite_block_drops_the_terminator() -> None:
    into = memoryview(bytearray(100))
    sink = BlockSink(into, max_size=100)
    _feed(sink, b"#0abcdef\n", 2, direct=True)
    assert sink.finish().tobytes() == b"abcdef"


@pytest.mark.parametrize(
    ("message", "size", "max_size", "error", "match"),
    [
        (b"hello\n", 10, 10, aiotmc.RemoteProtocolError, "expected an IEEE 488.2 block"),
        (b"#3100" + b"x" * 100, 50, 1000, aiotmc.LocalProtocolError, "does not fit"),
        (b"#3100" + b"x" * 100, 200, 50, aiotmc.RemoteProtocolError, "max_size"),
        (b"#210abc", 20, 20, aiotmc.RemoteProtocolError, "truncated block"),
        (b"#15abcdeXYZ", 20, 20, aiotmc.RemoteProtocolError, "after the block"),
        (b"", 20, 20, aiotmc.RemoteProtocolError, "empty"),
    ],
)
def test_bad_blocks_are_typed_errors_at_the_end(
    message: bytes, size: int, max_size: int, error: type[Exception], match: str
) -> None:
    sink = BlockSink(memoryview(bytearray(size)), max_size=max_size)
    _feed(sink, message, 3, direct=True)  # never raises while receiving
    with pytest.raises(error, match=match):
        sink.finish()


def test_abandoned_sink_leaves_the_buffer_alone() -> None:
    into = bytearray(20)
    sink = BlockSink(memoryview(into), max_size=20)
    _feed(sink, b"#210abcde", 2, direct=True)
    sink.abandon()
    _feed(sink, b"fghij\n", 2, direct=True)
    assert bytes(into[:5]) == b"abcde" and bytes(into[5:10]) == b"\0" * 5


@pytest.mark.parametrize("hislip_max", [1 << 20, 100_000, 4096])
async def test_receive_block_into_over_hislip(hislip_max: int) -> None:
    """Answers of one message (routed), of several (routed and small), and of small
    messages only (written by the transport)."""
    async with (
        HislipServer(conformance_device()) as server,
        aiotmc.open(server.resource, max_hislip_message_size=hislip_max, timeout=20) as inst,
    ):
        with anyio.fail_after(30):
            for size in (10, 70_000, 2_500_000):
                buffer = bytearray(size + 5)
                view = await inst.query_block(f"BLK? {size},7", into=buffer)
                assert len(view) == size
                expected = await inst.query_block(f"BLK? {size},7")
                assert view.tobytes() == bytes(expected)
            with pytest.raises(aiotmc.LocalProtocolError, match="does not fit"):
                await inst.query_block("BLK? 200000,1", into=bytearray(1000))
            assert await inst.query("ECHO? after") == "after"  # in step after the error
