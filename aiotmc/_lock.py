"""A FIFO lock with a fast uncontended path, for the per-instrument exchange lock."""

from __future__ import annotations

import _thread
from collections import deque
from collections.abc import Callable

from ._loops import give_turn, wait_turn

__all__ = ["FifoLock"]


class FifoLock:
    """Strict FIFO: a release hands ownership straight to the oldest waiter (no barging).

    Uncontended ``acquire`` does not yield (callers checkpoint themselves). Waiters sleep
    on the loop's own primitive (an asyncio future, a parked trio task; see
    :func:`aiotmc._loops.wait_turn`), so a hand-over costs one task wake-up and no event
    object. A waiter cancelled while queued leaves the line; one cancelled after
    ownership was handed to it passes ownership on, so the lock is never lost.

    Another thread (``aiotmc.sync``'s blocking fast path) may hold the lock too: it takes
    it only with :meth:`try_acquire` (atomic: the owned state is a thread lock) and gives
    it back with :meth:`release_from_thread`, which wakes the line through the loop. A
    task that finds the lock taken says so in ``_contended`` before it looks again, so a
    thread releasing in between cannot miss it.
    """

    __slots__ = ("_contended", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._mutex = _thread.allocate_lock()  # held while a task or a thread owns the lock
        self._waiters: deque[object] = deque()  # non-empty only while locked
        self._contended = False  # a task found the lock taken since it was last free

    def locked(self) -> bool:
        """True while some task holds the lock."""
        return self._mutex.locked()

    @property
    def waiting(self) -> int:
        """How many tasks wait for the lock."""
        return len(self._waiters)

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

    def release(self) -> None:
        """Release the lock (to the next waiter, if any); in the event loop's thread."""
        if not give_turn(self._waiters):
            self._contended = False
            self._mutex.release()

    def release_from_thread(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Release the lock taken by another thread with :meth:`try_acquire`; waiters are
        woken in the loop's thread through ``schedule`` (``call_soon_threadsafe``)."""
        self._mutex.release()
        if self._contended:
            schedule(self._wake)

    def _wake(self) -> None:  # in the loop's thread
        if self._waiters and self._mutex.acquire(False):
            self.release()
