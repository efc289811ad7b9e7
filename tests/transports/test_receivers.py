"""The socket receivers behind the TCP transport (``aiotmc.transports._receivers``, the
loop-specific ones in ``aiotmc._loops.asyncio_`` and ``aiotmc._loops.trio_``).

Each runs on asyncio, uvloop and trio: the receiver picked for the loop, on a real
socketpair. What matters: data already there or arriving later is delivered, a deadline
raises TimeoutError promptly and consumes nothing, a later deadline never fires early
(lazily re-armed timers), cancellation and close() wake the waiter without losing bytes.
"""

from __future__ import annotations

import importlib.util
import math
import socket
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from anyio import current_time

from aiotmc._loops.asyncio_ import AsyncioReceiver
from aiotmc._loops.trio_ import TrioReceiver
from aiotmc.transports._receivers import AnyioReceiver, Receiver, receiver_for

_BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="uvloop",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvloop") is None, reason="uvloop not installed"
        ),
    ),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    backend: tuple[str, dict[str, object]] = request.param
    return backend


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    with a, b:
        yield a, b


@pytest.fixture
async def receiver(pair: tuple[socket.socket, socket.socket]) -> AsyncIterator[Receiver]:
    """The receiver picked for the running loop, on the client end of ``pair``."""
    picked = receiver_for(pair[0])
    try:
        yield picked
    finally:
        picked.close()


def _expected_type(backend: tuple[str, dict[str, object]]) -> type:
    return TrioReceiver if backend[0] == "trio" else AsyncioReceiver


async def test_picks_the_receiver_for_the_running_loop(
    receiver: Receiver, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    assert type(receiver) is _expected_type(anyio_backend)


async def test_data_already_there_and_data_arriving_later(
    pair: tuple[socket.socket, socket.socket], receiver: Receiver
) -> None:
    b = pair[1]
    buffer = memoryview(bytearray(64))
    b.send(b"first\n")
    n = await receiver.recv_into(buffer, math.inf)
    assert bytes(buffer[:n]) == b"first\n"

    got: list[bytes] = []

    async def reader(try_first: bool) -> None:
        n = await receiver.recv_into(buffer, current_time() + 10, try_first)
        got.append(bytes(buffer[:n]))

    for try_first in (True, False):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, try_first)
            await anyio.wait_all_tasks_blocked()
            b.send(b"later\n")
    assert got == [b"later\n", b"later\n"]


async def test_deadline_raises_promptly_and_consumes_nothing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    receiver = receiver_for(a)
    try:
        start = current_time()
        with pytest.raises(TimeoutError):
            await receiver.recv_into(memoryview(bytearray(16)), start + 0.05)
        assert 0.04 <= current_time() - start < 5
    finally:
        receiver.close()
    b.send(b"late\n")
    a.setblocking(True)
    assert a.recv(16) == b"late\n"  # the timed-out wait took nothing


async def test_an_earlier_deadline_moves_the_alarm_and_a_later_one_outlasts_it(
    pair: tuple[socket.socket, socket.socket], receiver: Receiver
) -> None:
    b = pair[1]
    buffer = memoryview(bytearray(16))
    # A wait with a long deadline arms the alarm late; a short one must still fire.
    b.send(b"x")
    assert await receiver.recv_into(buffer, current_time() + 60, False) == 1
    start = current_time()
    with pytest.raises(TimeoutError):
        await receiver.recv_into(buffer, start + 0.05)
    assert current_time() - start < 5
    # The alarm is now armed early (or spent); a wait with a later deadline that is
    # still waiting when that earlier time passes must not time out.
    b.send(b"y")
    assert await receiver.recv_into(buffer, current_time() + 0.05, False) == 1
    got: list[int] = []

    async def reader() -> None:
        got.append(await receiver.recv_into(buffer, current_time() + 60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.2)  # past the earlier alarm: the reader must still wait
        assert got == []
        b.send(b"z")
    assert got == [1] and bytes(buffer[:1]) == b"z"


async def test_cancelled_wait_loses_nothing_and_the_receiver_stays_usable(
    pair: tuple[socket.socket, socket.socket], receiver: Receiver
) -> None:
    b = pair[1]
    buffer = memoryview(bytearray(16))
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.recv_into, buffer, math.inf)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    b.send(b"kept\n")
    n = await receiver.recv_into(buffer, current_time() + 10)
    assert bytes(buffer[:n]) == b"kept\n"


async def test_close_wakes_a_waiter_with_closed_resource_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair
    receiver = receiver_for(a)
    errors: list[BaseException] = []

    async def reader() -> None:
        try:
            await receiver.recv_into(memoryview(bytearray(8)), current_time() + 60)
        except anyio.ClosedResourceError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        receiver.close()
    assert len(errors) == 1
    receiver.close()  # idempotent


async def test_asyncio_stale_readiness_does_not_wake_the_waiter(
    pair: tuple[socket.socket, socket.socket],
    receiver: Receiver,
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    if anyio_backend[0] != "asyncio":
        pytest.skip("asyncio's reader callback only")
    b = pair[1]
    assert isinstance(receiver, AsyncioReceiver)
    buffer = memoryview(bytearray(16))
    got: list[int] = []

    async def reader() -> None:
        got.append(await receiver.recv_into(buffer, current_time() + 60, False))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        receiver._on_readable()  # a level-triggered event whose bytes are gone
        await anyio.wait_all_tasks_blocked()
        assert got == []
        b.send(b"ok")
    assert got == [2]


async def test_portable_receiver_behaves_the_same(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    receiver: Receiver = AnyioReceiver(a)
    buffer = memoryview(bytearray(16))
    b.send(b"abc")
    assert await receiver.recv_into(buffer, math.inf) == 3
    with pytest.raises(TimeoutError):
        await receiver.recv_into(buffer, current_time() + 0.05)
    receiver.close()
