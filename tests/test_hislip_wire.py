"""The HiSLIP channel's short paths: an answer taken past the reassembler, and bytes that
arrive for a wait that is then cancelled."""

from __future__ import annotations

import socket
from array import array
from collections.abc import Iterator

import anyio
import pytest
from anyio.lowlevel import checkpoint

from aiotmc._hislip_wire import Channel
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


def _data_end(message_id: int, payload: bytes) -> bytes:
    return hs.encode(T.DataEnd, 0, message_id, payload)


async def _readable(channel: Channel) -> None:
    with anyio.fail_after(5):
        assert await channel.wait_readable(anyio.current_time() + 5)


async def test_one_whole_answer_is_taken_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = Channel(pair[0], max_payload=1 << 20)
    try:
        pair[1].sendall(_data_end(0xFFFFFF00, b"ACME,1\n"))
        await _readable(channel)
        assert channel.data_end_now(0xFFFFFF00) == b"ACME,1\n"
        assert channel.at_rest
    finally:
        channel.close()


async def test_a_stale_answer_goes_to_the_reassembler(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A DataEnd of another MessageID (a query that timed out) and the awaited one in the
    same read: nothing is taken past the reassembler, which yields both in order."""
    channel = Channel(pair[0], max_payload=1 << 20)
    try:
        pair[1].sendall(_data_end(0xFFFFFF00, b"late\n") + _data_end(0xFFFFFF02, b"now\n"))
        await _readable(channel)
        assert channel.data_end_now(0xFFFFFF02) is None
        assert not channel.at_rest
        first, second = channel.receive_nowait(), channel.receive_nowait()
        assert first is not None and (first.param, first.payload) == (0xFFFFFF00, b"late\n")
        assert second is not None and (second.param, second.payload) == (0xFFFFFF02, b"now\n")
    finally:
        channel.close()


async def test_a_header_announcing_too_much_is_not_taken(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    channel = Channel(pair[0], max_payload=4)
    try:
        pair[1].sendall(_data_end(0xFFFFFF00, b"too long\n"))
        await _readable(channel)
        assert channel.data_end_now(0xFFFFFF00) is None
        with pytest.raises(hs.MessageTooLarge):
            channel.receive_nowait()
    finally:
        channel.close()


@pytest.mark.parametrize("steps", [*range(6), -1])
async def test_bytes_of_a_cancelled_wait_are_kept(
    pair: tuple[socket.socket, socket.socket], steps: int
) -> None:
    """The answer arrives, and the wait for it is cancelled ``steps`` scheduler steps
    later (before or after the loop saw it; -1: once the channel holds the bytes its
    reader received): the next receive still gets it whole, and nothing more."""
    channel = Channel(pair[0], max_payload=1 << 20)
    message = _data_end(0xFFFFFF00, b"kept %d\n" % steps)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()

                async def wait() -> None:
                    with scope:
                        await channel.wait_readable(anyio.current_time() + 5)

                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                pair[1].sendall(message)
                for _ in range(steps if steps >= 0 else 1000):
                    if steps < 0 and channel._held:  # white box: the callback took them
                        break
                    await checkpoint()
                scope.cancel()
            received = await channel.receive_until(anyio.current_time() + 5)
        assert received is not None
        assert (received.type, received.param) == (T.DataEnd, 0xFFFFFF00)
        assert received.payload == b"kept %d\n" % steps
        assert channel.at_rest
    finally:
        channel.close()


async def test_send_now_counts_bytes_not_items(pair: tuple[socket.socket, socket.socket]) -> None:
    """A memoryview of 2-byte items goes out once, whole (``len`` counts its items)."""
    channel = Channel(pair[0], max_payload=1 << 20)
    try:
        wide = memoryview(array("h", [1, 2, 3]))
        assert channel.send_now([b"HS", wide])
        assert not channel.unsent
        assert channel.sent == 8
        pair[1].setblocking(False)
        assert pair[1].recv(64) == b"HS" + wide.tobytes()
    finally:
        channel.close()
