"""FifoLock: strict order, hand-over on release, never lost under cancellation."""

from __future__ import annotations

from typing import Any

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


def _thread_safe_scheduler() -> Any:
    """The running loop's ``call_soon_threadsafe`` (asyncio) / ``run_sync_soon`` (trio)."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    return asyncio.get_running_loop().call_soon_threadsafe


async def test_a_thread_holding_the_lock_hands_it_to_waiting_tasks() -> None:
    """aiotmc.sync's fast path: a thread takes the lock with try_acquire; its release
    wakes the task that queued meanwhile (in the loop's thread), in order."""
    lock = FifoLock()
    schedule = _thread_safe_scheduler()
    assert await anyio.to_thread.run_sync(lock.try_acquire)
    queued: list[int] = []
    order: list[int] = []

    async def worker(n: int) -> None:
        queued.append(n)  # trio starts tasks in any order: the line is what counts
        await lock.acquire()
        order.append(n)
        lock.release()

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(worker, n)
        await anyio.wait_all_tasks_blocked()
        assert lock.contended and lock.waiting == 3
        assert not await anyio.to_thread.run_sync(lock.try_acquire)  # no barging
        await anyio.to_thread.run_sync(lock.release_from_thread, schedule)
    assert order == queued and sorted(order) == [0, 1, 2]
    assert not lock.locked() and not lock.contended


async def test_a_thread_releasing_without_waiters_does_not_touch_the_loop() -> None:
    lock = FifoLock()
    scheduled: list[object] = []
    assert await anyio.to_thread.run_sync(lock.try_acquire)
    await anyio.to_thread.run_sync(lock.release_from_thread, scheduled.append)
    assert scheduled == [] and not lock.locked()
    await lock.acquire()  # free again for tasks
    lock.release()
