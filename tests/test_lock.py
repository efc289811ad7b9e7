"""FifoLock: strict order, hand-over on release, never lost under cancellation."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from aiotmc._lock import FifoLock


async def test_uncontended_acquire_and_release() -> None:
    lock = FifoLock()
    await lock.acquire()
    assert lock.locked()
    lock.release()
    assert not lock.locked()


async def test_waiters_are_served_in_arrival_order() -> None:
    lock = FifoLock()
    order: list[int] = []

    async def worker(n: int) -> None:
        await lock.acquire()
        try:
            order.append(n)
            await anyio.lowlevel.checkpoint()
        finally:
            lock.release()

    await lock.acquire()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(worker, n)
                await anyio.wait_all_tasks_blocked()
            assert lock.waiting == 10
            lock.release()
    assert order == list(range(10))
    assert not lock.locked()


async def test_cancelled_waiter_leaves_the_line() -> None:
    lock = FifoLock()
    got: list[str] = []

    async def waiter(name: str) -> None:
        await lock.acquire()
        got.append(name)
        lock.release()

    await lock.acquire()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            doomed = anyio.CancelScope()

            async def doomed_waiter() -> None:
                with doomed:
                    await waiter("first")

            tg.start_soon(doomed_waiter)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "second")
            await anyio.wait_all_tasks_blocked()
            assert lock.waiting == 2
            doomed.cancel()
            await anyio.wait_all_tasks_blocked()
            assert lock.waiting == 1
            lock.release()
    assert got == ["second"]
    assert not lock.locked()


async def test_ownership_handed_to_a_cancelled_task_is_passed_on() -> None:
    lock = FifoLock()
    got: list[str] = []

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await lock.acquire()
            got.append(name)
            lock.release()

    await lock.acquire()
    first = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "first", first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "second", anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()
            lock.release()  # hands ownership to "first"...
            first.cancel()  # ...which is cancelled before it runs
    assert "second" in got
    assert not lock.locked()
    assert lock.waiting == 0


async def test_waiter_cancelled_just_before_a_release_is_skipped() -> None:
    lock = FifoLock()
    got: list[str] = []

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await lock.acquire()
            got.append(name)
            lock.release()

    await lock.acquire()
    doomed = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "first", doomed)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "second", anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()
            doomed.cancel()  # "first" has not run since: still in line, or just out of it
            lock.release()  # must go to "second"
    assert got == ["second"]
    assert not lock.locked()
    assert lock.waiting == 0


@pytest.mark.parametrize("holders", [1, 5])
async def test_lock_is_exclusive(holders: int) -> None:
    lock = FifoLock()
    inside = 0
    peak = 0

    async def worker() -> None:
        nonlocal inside, peak
        for _ in range(20):
            await lock.acquire()
            inside += 1
            peak = max(peak, inside)
            await anyio.lowlevel.checkpoint()
            inside -= 1
            lock.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(holders):
                tg.start_soon(worker)
    assert peak == 1
