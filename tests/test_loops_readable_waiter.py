"""``aiotmc._loops.readable_waiter``: the simulators' per-message readiness wait, on each
loop — it returns when bytes arrive, leaves them in the socket, stays cancellable, and
``close()`` ends it (before the server closes the socket)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anyio
import pytest

from aiotmc._loops import readable_waiter


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        yield a, b


async def test_returns_once_bytes_arrive_and_leaves_them_in_the_socket(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    wait = readable_waiter(reader)
    woke = anyio.Event()

    async def waiter() -> None:
        await wait(reader)
        woke.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set()  # nothing to read yet: still waiting
            writer.send(b"*IDN?\n")
        assert woke.is_set()
        assert reader.recv(64) == b"*IDN?\n"
        # a second wait works the same way (on asyncio the reader stayed registered)
        writer.send(b"x")
        await wait(reader)
        assert reader.recv(8) == b"x"


async def test_cancelled_wait_consumes_nothing_and_the_next_wait_works(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    wait = readable_waiter(reader)
    with anyio.fail_after(5):
        with anyio.move_on_after(0.01) as scope:
            await wait(reader)
        assert scope.cancelled_caught
        writer.send(b"kept")
        await wait(reader)
        assert reader.recv(8) == b"kept"


async def test_closed_socket_is_a_closed_resource_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, _ = pair
    wait = readable_waiter(reader)
    reader.close()
    with anyio.fail_after(5), pytest.raises(anyio.ClosedResourceError):
        await wait(reader)


async def test_close_ends_a_wait_in_progress_and_every_later_one(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, _ = pair
    wait = readable_waiter(reader)
    failed = anyio.Event()

    async def waiter() -> None:
        with pytest.raises(anyio.ClosedResourceError):
            await wait(reader)
        failed.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            wait.close()
            wait.close()  # idempotent
        assert failed.is_set()
        reader.close()
        with pytest.raises(anyio.ClosedResourceError):
            await wait(reader)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_asyncio_the_reader_stays_registered_until_close(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Lockstep waits cost no epoll_ctl; bytes nobody waits for unregister it (no spin);
    close() leaves nothing registered for the socket that is about to close."""
    import asyncio

    loop = asyncio.get_running_loop()
    reader, writer = pair
    wait = readable_waiter(reader)
    with anyio.fail_after(5):
        writer.send(b"a")
        await wait(reader)
        assert reader.recv(8) == b"a"
        assert loop.remove_reader(reader.fileno())  # it was still registered
        loop.add_reader(reader.fileno(), wait._on_readable)  # type: ignore[attr-defined]
        writer.send(b"b")  # readable with nobody waiting: the callback unregisters
        for _ in range(100):
            await asyncio.sleep(0)
            if not wait._registered:  # type: ignore[attr-defined]
                break
        assert not loop.remove_reader(reader.fileno())
        await wait(reader)  # registers again
        assert reader.recv(8) == b"b"
        wait.close()
        assert not loop.remove_reader(reader.fileno())
