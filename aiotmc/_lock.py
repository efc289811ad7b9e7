"""A FIFO lock with a fast uncontended path, for the per-instrument exchange lock."""

from __future__ import annotations

from collections import deque

import anyio

__all__ = ["FifoLock"]


class FifoLock:
    """Strict FIFO: a release hands ownership straight to the oldest waiter (no barging).

    Uncontended ``acquire`` does not yield (callers checkpoint themselves); a waiter that
    is cancelled after ownership was handed to it passes ownership on, so the lock is
    never lost.
    """

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[anyio.Event] = deque()  # non-empty only while locked

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
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release()  # ownership arrived as we were cancelled: pass it on
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        """Release the lock (to the next waiter, if any)."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._locked = False
