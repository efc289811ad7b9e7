"""A FIFO lock with a fast uncontended path, for the per-instrument exchange lock."""

from __future__ import annotations

from collections import deque

from ._loops import give_turn, wait_turn

__all__ = ["FifoLock"]


class FifoLock:
    """Strict FIFO: a release hands ownership straight to the oldest waiter (no barging).

    Uncontended ``acquire`` does not yield (callers checkpoint themselves). Waiters sleep
    on the loop's own primitive (an asyncio future, a parked trio task; see
    :func:`aiotmc._loops.wait_turn`), so a hand-over costs one task wake-up and no event
    object. A waiter cancelled while queued leaves the line; one cancelled after
    ownership was handed to it passes ownership on, so the lock is never lost.
    """

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[object] = deque()  # non-empty only while locked

    def locked(self) -> bool:
        """True while some task holds the lock."""
        return self._locked

    @property
    def waiting(self) -> int:
        """How many tasks wait for the lock."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting; True if taken."""
        if self._locked:
            return False
        self._locked = True
        return True

    async def acquire(self) -> None:
        """Take the lock, waiting in line if another task holds it."""
        if not self._locked:
            self._locked = True
            return
        await wait_turn(self._waiters, self.release)

    def release(self) -> None:
        """Release the lock (to the next waiter, if any)."""
        if not give_turn(self._waiters):
            self._locked = False
