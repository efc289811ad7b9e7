"""FifoLock: strict order, hand-over on release, never lost under cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

from aiotmc._lock import FifoLock
from aiotmc._loops import EarlyStart, running_loop


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


# -- threads waiting in their own thread (aiotmc.sync under contention) -----------------------


def _poll_until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """In a worker thread: until ``condition()`` holds (bounded; the other side is a thread)."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.0005)


def _thread_turn(lock: FifoLock, n: int, order: list[int], schedule: Any) -> None:
    lock.acquire_in_thread(schedule)
    order.append(n)
    lock.release_from_thread(schedule)


async def test_threads_wait_in_their_own_threads_in_arrival_order() -> None:
    """Threads that find the lock taken park in line; every release hands it straight to
    the next thread, without asking the loop to do anything."""
    lock = FifoLock()
    scheduled: list[object] = []
    order: list[int] = []
    await lock.acquire()  # a task holds it
    threads = []
    for n in range(4):
        thread = threading.Thread(target=_thread_turn, args=(lock, n, order, scheduled.append))
        thread.start()
        threads.append(thread)
        await anyio.to_thread.run_sync(_poll_until, lambda n=n: lock.threads_waiting == n + 1)
    lock.release()
    for thread in threads:
        await anyio.to_thread.run_sync(thread.join, 5.0)
        assert not thread.is_alive()
    assert order == [0, 1, 2, 3]
    assert scheduled == [] and not lock.locked() and lock.threads_waiting == 0


async def test_tasks_in_line_go_before_waiting_threads() -> None:
    lock = FifoLock()
    schedule = _thread_safe_scheduler()
    order: list[str] = []
    assert await anyio.to_thread.run_sync(lock.try_acquire)  # another thread holds it
    parked = threading.Thread(target=_thread_turn, args=(lock, 1, order, schedule))
    parked.start()
    await anyio.to_thread.run_sync(_poll_until, lambda: lock.threads_waiting == 1)

    async def task() -> None:
        await lock.acquire()
        order.append("task")
        lock.release()  # the line of tasks is empty: to the waiting thread

    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
        await anyio.wait_all_tasks_blocked()
        assert lock.contended
        await anyio.to_thread.run_sync(lock.release_from_thread, schedule)
    await anyio.to_thread.run_sync(parked.join, 5.0)
    assert order == ["task", 1]
    assert not lock.locked() and lock.threads_waiting == 0


class _Interrupt(BaseException):
    pass


class _InterruptedPark:
    """A parking lock whose wait is interrupted (as by Ctrl-C) after ``meanwhile()``."""

    def __init__(self, meanwhile: Callable[[], object]) -> None:
        self._lock = threading.Lock()
        self._meanwhile = meanwhile
        self._acquired = 0

    def acquire(self, *args: Any) -> bool:
        self._acquired += 1
        if self._acquired == 1:
            return self._lock.acquire()  # taken at once, before queueing
        self._meanwhile()
        raise _Interrupt

    def release(self) -> None:
        self._lock.release()


@pytest.mark.parametrize("handed", [False, True], ids=["still-queued", "just-handed"])
async def test_a_thread_interrupted_while_waiting_loses_no_lock(
    handed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted in line: it leaves the line; interrupted as ownership reached it: it
    passes ownership on. Either way the lock ends up exactly as if it never came."""
    import aiotmc._lock as module

    lock = FifoLock()
    await lock.acquire()  # a task holds it
    park = _InterruptedPark(lock.release if handed else lambda: None)
    monkeypatch.setattr(module, "_thread", type("T", (), {"allocate_lock": lambda: park}))
    with pytest.raises(_Interrupt):
        lock.acquire_in_thread(_thread_safe_scheduler())  # (the park never blocks)
    assert lock.threads_waiting == 0
    if not handed:
        assert lock.locked()
        lock.release()
    assert not lock.locked()
    await lock.acquire()  # usable by tasks
    lock.release()


@pytest.mark.parametrize("seed", range(3))
async def test_threads_and_tasks_exclude_each_other_without_lost_wakeups(seed: int) -> None:
    """Many threads and tasks take turns, each briefly, some barging with try_acquire:
    never two inside, and everyone finishes (a lost wake-up would hang)."""
    import random

    lock = FifoLock()
    schedule = _thread_safe_scheduler()
    inside = peak = done = most_parked = 0
    guard = threading.Lock()

    def enter() -> None:
        nonlocal inside, peak, most_parked
        with guard:
            inside += 1
            peak = max(peak, inside)
            most_parked = max(most_parked, lock.threads_waiting)

    def leave() -> None:
        nonlocal inside, done
        with guard:
            inside -= 1
            done += 1

    def thread_worker(rng: random.Random) -> None:
        for _ in range(40):
            if rng.random() < 0.2 and lock.try_acquire():
                pass
            else:
                lock.acquire_in_thread(schedule)
            enter()
            leave()
            lock.release_from_thread(schedule)

    async def task_worker() -> None:
        for _ in range(40):
            await lock.acquire()
            enter()
            await anyio.lowlevel.checkpoint()
            leave()
            lock.release()

    rng = random.Random(seed)
    limiter = anyio.CapacityLimiter(6)

    async def in_a_thread(worker_rng: random.Random) -> None:
        await anyio.to_thread.run_sync(thread_worker, worker_rng, limiter=limiter)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(in_a_thread, random.Random(rng.random()))
            for _ in range(3):
                tg.start_soon(task_worker)
    assert peak == 1 and done == 9 * 40
    assert most_parked > 0  # threads did wait in line
    assert not lock.locked() and lock.threads_waiting == 0 and lock.waiting == 0


class _Gate:
    """Stands in for ``FifoLock._guard``: a real lock, with one-shot hooks run just before
    it is taken and just after it is released (to hold a thread inside a race window)."""

    def __init__(self) -> None:
        self._real = threading.Lock()
        self.on_enter: Callable[[], object] | None = None
        self.on_exit: Callable[[], object] | None = None

    def __enter__(self) -> None:
        hook, self.on_enter = self.on_enter, None
        if hook is not None:
            hook()
        self._real.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._real.release()
        hook, self.on_exit = self.on_exit, None
        if hook is not None:
            hook()


async def test_a_release_just_before_a_thread_queues_is_not_missed() -> None:
    """The thread found the lock taken; it is released before the thread is in line: the
    thread's second look takes it (else it would wait for a release that never comes)."""
    lock, gate = FifoLock(), _Gate()
    lock._guard = gate  # type: ignore[assignment]
    schedule = _thread_safe_scheduler()
    await lock.acquire()  # a task holds it
    arrived, proceed, got = threading.Event(), threading.Event(), threading.Event()
    gate.on_enter = lambda: (arrived.set(), proceed.wait(5.0))

    def thread() -> None:
        lock.acquire_in_thread(schedule)
        got.set()
        lock.release_from_thread(schedule)

    worker = threading.Thread(target=thread, daemon=True)
    worker.start()
    assert await anyio.to_thread.run_sync(arrived.wait, 5.0)  # about to queue
    lock.release()  # nobody in line yet
    proceed.set()
    assert await anyio.to_thread.run_sync(got.wait, 5.0)
    await anyio.to_thread.run_sync(worker.join, 5.0)
    assert not lock.locked() and lock.threads_waiting == 0


async def test_a_thread_queueing_while_the_last_one_leaves_is_not_missed() -> None:
    """A releaser found nobody in line and is about to free the lock; a thread queues in
    that instant and finds it still held: the releaser's second look hands it over."""
    lock, gate = FifoLock(), _Gate()
    lock._guard = gate  # type: ignore[assignment]
    schedule = _thread_safe_scheduler()
    second_done = threading.Event()

    def second() -> None:
        lock.acquire_in_thread(schedule)
        second_done.set()
        lock.release_from_thread(schedule)

    def start_second_and_wait_until_it_waits() -> None:
        threading.Thread(target=second, daemon=True).start()
        _poll_until(lambda: lock.threads_waiting == 1)

    def first() -> None:
        lock.acquire_in_thread(schedule)
        gate.on_exit = start_second_and_wait_until_it_waits  # inside its release
        lock.release_from_thread(schedule)

    await lock.acquire()  # a task holds it
    worker = threading.Thread(target=first, daemon=True)
    worker.start()
    await anyio.to_thread.run_sync(_poll_until, lambda: lock.threads_waiting == 1)
    lock.release()  # to the first thread
    assert await anyio.to_thread.run_sync(second_done.wait, 5.0)
    await anyio.to_thread.run_sync(worker.join, 5.0)
    assert not lock.locked() and lock.threads_waiting == 0


# -- hand-over by I/O: a request the releaser starts for the waiter ----------------------


class _Early(EarlyStart):
    """A fake request: ``arms`` says whether start() takes over waking the waiter."""

    __slots__ = ("abandoned", "arms", "starts")

    def __init__(self, arms: bool) -> None:
        super().__init__()
        self.arms = arms
        self.starts = 0
        self.abandoned = 0

    def start(self) -> bool:
        self.starts += 1
        self.started = self.arms
        return self.arms

    def abandon(self) -> None:
        self.abandoned += 1


def _wake(early: EarlyStart, value: int | None = None, error: bool = False) -> None:
    """What an armed receiver does: wake the waiter with a count, or fail its wait."""
    waiter = early.waiter
    if sniffio.current_async_library() == "trio":
        import outcome
        import trio

        assert isinstance(waiter, trio.lowlevel.Task)
        result = outcome.Error(trio.ClosedResourceError()) if error else outcome.Value(None)
        trio.lowlevel.reschedule(waiter, result)
        return
    import asyncio

    assert isinstance(waiter, asyncio.Future)
    if error:
        waiter.set_exception(TimeoutError())
    else:
        waiter.set_result(value)


async def _acquire_early(lock: FifoLock, early: EarlyStart) -> object:
    waiting = lock.acquire_early(early, running_loop())
    return None if waiting is None else await waiting


async def _hold_then_queue(lock: FifoLock, tg: Any, early: _Early, got: list[object]) -> None:
    async def waiter() -> None:
        got.append(await _acquire_early(lock, early))
        got.append("owned" if lock.locked() else "not owned")
        lock.release()

    await lock.acquire()
    tg.start_soon(waiter)
    await anyio.wait_all_tasks_blocked()
    assert lock.waiting == 1


async def test_a_request_the_releaser_cannot_start_gets_a_plain_turn() -> None:
    lock = FifoLock()
    early = _Early(arms=False)
    got: list[object] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await _hold_then_queue(lock, tg, early, got)
            lock.release()
    assert got == [None, "owned"]
    assert (early.starts, early.started, early.abandoned) == (1, False, 0)
    assert not lock.locked()


async def test_a_started_request_wakes_its_waiter_only_with_the_answer() -> None:
    lock = FifoLock()
    early = _Early(arms=True)
    got: list[object] = []
    trio = sniffio.current_async_library() == "trio"
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await _hold_then_queue(lock, tg, early, got)
            lock.release()  # starts the request: the lock is the waiter's, still asleep
            await anyio.wait_all_tasks_blocked()
            assert got == [] and lock.locked() and lock.waiting == 0
            _wake(early, 7)
    assert got == [None if trio else 7, "owned"]
    assert (early.starts, early.abandoned) == (1, 0)
    assert not lock.locked()


async def test_a_started_request_whose_wait_fails_still_owns_the_turn() -> None:
    lock = FifoLock()
    early = _Early(arms=True)
    got: list[object] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await _hold_then_queue(lock, tg, early, got)
            lock.release()
            await anyio.wait_all_tasks_blocked()
            _wake(early, error=True)
    failure, owned = got
    assert isinstance(failure, TimeoutError | trio_closed_error())
    assert owned == "owned"
    assert not lock.locked()


def trio_closed_error() -> type[BaseException]:
    try:
        import trio
    except ImportError:  # pragma: no cover - trio is a test dependency
        return TimeoutError
    return trio.ClosedResourceError


async def test_a_started_waiter_cancelled_abandons_and_passes_the_turn_on() -> None:
    lock = FifoLock()
    early = _Early(arms=True)
    second = _Early(arms=False)
    got: list[object] = []

    async def waiter(name: str, request: _Early, scope: anyio.CancelScope) -> None:
        with scope:
            got.append((name, await _acquire_early(lock, request)))
            lock.release()

    await lock.acquire()
    doomed = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "first", early, doomed)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "second", second, anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()
            lock.release()  # starts "first"'s request
            await anyio.wait_all_tasks_blocked()
            assert second.starts == 0
            doomed.cancel()  # before its answer: abandon, then the turn goes on
    assert got == [("second", None)]
    assert (early.abandoned, second.starts) == (1, 1)
    assert not lock.locked() and lock.waiting == 0


async def test_a_request_cancelled_in_line_is_never_started() -> None:
    lock = FifoLock()
    doomed_request = _Early(arms=True)
    got: list[object] = []

    async def waiter(request: _Early, scope: anyio.CancelScope) -> None:
        with scope:
            got.append(await _acquire_early(lock, request))
            lock.release()

    await lock.acquire()
    doomed = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, doomed_request, doomed)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, _Early(arms=False), anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()
            doomed.cancel()  # asyncio: still in line until it runs; skipped either way
            lock.release()
    assert got == [None]
    assert (doomed_request.starts, doomed_request.abandoned) == (0, 0)
    assert not lock.locked() and lock.waiting == 0


async def test_a_started_waiter_woken_and_cancelled_before_it_runs_passes_on() -> None:
    """The answer arrives, then the task is cancelled before it resumes. asyncio (a native
    ``Task.cancel``, which anyio never sends to a task whose wait is done): the answer is
    dropped, the request abandoned, the turn passed on. trio: a woken task is past its
    cancellation point: it takes the answer."""
    lock = FifoLock()
    early = _Early(arms=True)
    got: list[object] = []
    tasks: list[Any] = []

    async def waiter(scope: anyio.CancelScope) -> None:
        if sniffio.current_async_library() == "asyncio":
            import asyncio

            tasks.append(asyncio.current_task())
        with scope:
            got.append(await _acquire_early(lock, early))
            lock.release()

    await lock.acquire()
    scope = anyio.CancelScope()
    trio = sniffio.current_async_library() == "trio"
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, scope)
            await anyio.wait_all_tasks_blocked()
            lock.release()
            await anyio.wait_all_tasks_blocked()
            _wake(early, 3)
            scope.cancel()
            for task in tasks:
                task.cancel()
    assert got == ([None] if trio else [])
    assert early.abandoned == (0 if trio else 1)
    assert not lock.locked() and lock.waiting == 0
