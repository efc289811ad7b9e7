"""A FIFO lock with a fast uncontended path, for the per-instrument exchange lock."""

from __future__ import annotations

import _thread
from asyncio import AbstractEventLoop
from collections import deque
from collections.abc import Awaitable, Callable

from ._loops import EarlyStart, give_turn, wait_turn, wait_turn_early

__all__ = ["FifoLock"]


class FifoLock:
    """Strict FIFO: a release hands ownership straight to the oldest waiter (no barging).

    Uncontended ``acquire`` does not yield (callers checkpoint themselves). Waiters sleep
    on the loop's own primitive (an asyncio future, a parked trio task; see
    :func:`aiotmc._loops.wait_turn`), so a hand-over costs one task wake-up and no event
    object. A waiter cancelled while queued leaves the line; one cancelled after
    ownership was handed to it passes ownership on, so the lock is never lost. A waiter
    may leave a request in line (:meth:`acquire_early`) that the releaser starts for it
    as it hands over (:meth:`release` runs ``early.start()``).

    Another thread (``aiotmc.sync``'s blocking fast path) may hold the lock too: it takes
    it with :meth:`try_acquire` (atomic: the owned state is a thread lock) or waits for it
    in its own thread with :meth:`acquire_in_thread`, and gives it back with
    :meth:`release_from_thread`, which wakes the line through the loop. A task that finds
    the lock taken says so in ``_contended`` before it looks again, so a thread releasing
    in between cannot miss it. Waiting threads form a second line, served when no task
    waits: a release hands ownership straight to the first of them (its parking lock is
    released, the lock stays held), under ``_guard``. A thread queues itself, then looks
    once more; a releaser that released looks at ``_threads`` once more: so neither can
    miss the other.
    """

    __slots__ = ("_contended", "_guard", "_mutex", "_parked", "_threads", "_waiters")

    def __init__(self) -> None:
        self._mutex = _thread.allocate_lock()  # held while a task or a thread owns the lock
        self._waiters: deque[object] = deque()  # non-empty only while locked
        self._contended = False  # a task found the lock taken since it was last free
        self._guard = _thread.allocate_lock()  # over _parked and _threads
        self._parked: deque[_thread.LockType] = deque()  # threads waiting, in order
        self._threads = False  # True while _parked may be non-empty

    def locked(self) -> bool:
        """True while some task holds the lock."""
        return self._mutex.locked()

    @property
    def waiting(self) -> int:
        """How many tasks wait for the lock."""
        return len(self._waiters)

    @property
    def threads_waiting(self) -> int:
        """How many threads wait for the lock (:meth:`acquire_in_thread`)."""
        return len(self._parked)

    @property
    def contended(self) -> bool:
        """True when tasks may be waiting (a blocking caller then queues like them)."""
        return self._contended

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting; True if taken (any thread)."""
        return self._mutex.acquire(False)

    async def acquire(self) -> None:
        """Take the lock, waiting in line if another task holds it."""
        if self._mutex.acquire(False):
            return
        self._contended = True  # before looking again: see release_from_thread
        if self._mutex.acquire(False):
            return
        await wait_turn(self._waiters, self.release)

    def acquire_early(
        self, early: EarlyStart, loop: AbstractEventLoop | None
    ) -> Awaitable[object] | None:
        """For a caller that just found the lock taken (:meth:`try_acquire`): wait in line
        leaving ``early`` for the releaser to start (hand-over by I/O, see
        :class:`aiotmc._loops.EarlyStart`). None when the lock was released meanwhile
        (it is now the caller's), else the wait to await, which answers what woke the
        caller (:func:`aiotmc._loops.wait_turn_early`: None unless ``early.started``).
        ``loop``: :func:`aiotmc._loops.running_loop`'s answer."""
        self._contended = True  # before looking again: see release_from_thread
        if self._mutex.acquire(False):
            return None
        return wait_turn_early(self._waiters, self.release, early, loop)

    def release(self) -> None:
        """Release the lock (to the next waiter, if any); in the event loop's thread."""
        if not give_turn(self._waiters):
            self._contended = False
            self._mutex.release()
            if self._threads:
                self._hand_to_thread()

    def acquire_in_thread(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Take the lock from a thread other than the loop's, waiting in that thread (in
        line with other threads) while it is taken; release with
        :meth:`release_from_thread`. An interrupt while waiting (``KeyboardInterrupt``)
        leaves the line, or passes on ownership that arrived meanwhile (``schedule``: as
        for :meth:`release_from_thread`)."""
        if self._mutex.acquire(False):
            return
        park = _thread.allocate_lock()
        park.acquire()
        with self._guard:
            self._parked.append(park)
            self._threads = True
        if self._mutex.acquire(False):  # released before a releaser could see us
            with self._guard:
                self._parked.remove(park)  # still there: nobody hands over a free lock
            return
        try:
            park.acquire()  # released by the releaser that hands the lock to us
        except BaseException:
            with self._guard:
                try:
                    self._parked.remove(park)
                    handed = False
                except ValueError:  # popped: ownership is ours, pass it on
                    handed = True
            if handed:
                self.release_from_thread(schedule)
            raise

    def release_from_thread(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Release the lock taken by another thread (:meth:`try_acquire`,
        :meth:`acquire_in_thread`): to the tasks in line, woken in the loop's thread
        through ``schedule`` (``call_soon_threadsafe``), else to the next waiting thread.
        Tasks go first: with tasks in line, waiting threads are served once the last task
        has released (:meth:`release`)."""
        self._mutex.release()
        if self._contended:
            schedule(self._wake)
        elif self._threads:
            self._hand_to_thread()

    def _hand_to_thread(self) -> None:
        """After a release: if threads wait and the lock is still free, take it and hand
        it to the first of them; repeat while a thread queued in between."""
        while self._threads and self._mutex.acquire(False):
            with self._guard:
                if self._parked:
                    self._parked.popleft().release()  # the lock stays held: it is theirs
                    return
                self._threads = False
            self._mutex.release()

    def _wake(self) -> None:  # in the loop's thread
        if self._mutex.acquire(False):
            self.release()  # to the first task in line, else to a waiting thread
