"""The HiSLIP channel's short paths: an answer taken past the reassembler, bytes that
arrive for a wait that is then cancelled, and the wake-up threshold for a long rest."""

from __future__ import annotations

import socket
import sys
from array import array
from collections.abc import Iterator

import anyio
import pytest
from anyio.lowlevel import checkpoint

from aiotmc._hislip_wire import Channel
from aiotmc.protocol import hislip as hs
from aiotmc.protocol.hislip import MessageType as T
from tests.transports.test_wake_threshold import lowat, threshold_raised

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="SO_RCVLOWAT is used on Linux")


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


# -- the wake-up threshold (SO_RCVLOWAT) for the rest of a long message --------------------

LONG = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # a 3 MiB payload: a long rest
FIRST = 64 * 1024  # what the peer sends before it holds back


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The threshold only matters on TCP (a Unix socket's poll ignores it)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


@linux_only
async def test_the_rest_of_a_long_message_is_awaited_with_a_raised_threshold(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Raised while the rest of a 3 MiB DataEnd is awaited; a short message after it
    still wakes the reader at once (back to 1 before that wait)."""
    ours, peer = tcp_pair
    channel = Channel(ours, max_payload=8 << 20)
    message = _data_end(0xFFFFFF00, LONG)
    got: list[hs.Message] = []

    async def read() -> None:
        got.append(await channel.receive())

    try:
        with anyio.fail_after(10):
            peer.sendall(message[:FIRST])
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await threshold_raised(ours)  # the reader waits for the rest
                assert not got
                await anyio.to_thread.run_sync(peer.sendall, message[FIRST:])
            assert [(m.type, m.payload == LONG) for m in got] == [(T.DataEnd, True)]
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await anyio.wait_all_tasks_blocked()  # waiting at a message boundary
                assert lowat(ours) == 1
                peer.sendall(_data_end(0xFFFFFF02, b"short\n"))
        assert got[1].payload == b"short\n"
    finally:
        channel.close()


@linux_only
async def test_a_cancelled_wait_leaves_no_threshold_for_a_readiness_check(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    """A wait for the rest cancelled with the threshold raised: the next
    :meth:`Channel.readable_now` (``select``, which honours the threshold) puts it back
    to 1 and sees the bytes that are there, then the message completes."""
    ours, peer = tcp_pair
    channel = Channel(ours, max_payload=8 << 20)
    message = _data_end(0xFFFFFF00, LONG)
    try:
        with anyio.fail_after(10):
            peer.sendall(message[:FIRST])
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(channel.receive)
                    await threshold_raised(ours)
                    scope.cancel()
            peer.sendall(message[FIRST : FIRST + 1000])
            assert channel.readable_now()
            assert lowat(ours) == 1

            async def send_rest() -> None:
                await anyio.to_thread.run_sync(peer.sendall, message[FIRST + 1000 :])

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_rest)
                received = await channel.receive()
        assert (received.type, received.payload == LONG) == (T.DataEnd, True)
        assert channel.at_rest
    finally:
        channel.close()
