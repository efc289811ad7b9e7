"""Blocking linux-gpib calls in worker threads, one at a time per descriptor.

:meth:`Worker.run` runs a function in a worker thread (``anyio.to_thread.run_sync``
with ``abandon_on_cancel``: a cancelled caller returns at once). The thread takes the
descriptor's lock first, so calls never overlap; an abandoned call goes on in its thread
until its current library wait ends (each wait is at most one slice, :data:`SLICE`;
longer operations are loops of slices), and the next call waits for it: bounded by that
call's deadline (a typed timeout otherwise). The abandoned call's :class:`Call` is
flagged so that its loop of slices stops at the next slice boundary, and the worker is
marked *uncleared*: the next call starts with a device clear (``ibclr``) so that an
answer the abandoned call did not read never reaches a later exchange.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

import anyio

from ..._exceptions import ReadTimeout, WriteTimeout

__all__ = ["SLICE", "Call", "Worker"]

T = TypeVar("T")

SLICE: Final = 0.5  #: longest single library wait: an abandoned call ends within it


class _Abandoned(Exception):
    """The caller stopped waiting before the call could start."""


class Call:
    """What a function running in the worker may look at: its deadline, its abandonment."""

    __slots__ = ("abandoned", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  #: ``time.monotonic()`` clock; inf: none
        self.abandoned = threading.Event()  #: set when the caller stopped waiting

    def remaining(self) -> float:
        """Seconds for one library wait: what is left, at most :data:`SLICE`."""
        return min(SLICE, max(0.0, self.deadline - time.monotonic()))

    @property
    def go_on(self) -> bool:
        """True when a wait that ran out of its slice should be tried again."""
        return not self.abandoned.is_set() and time.monotonic() < self.deadline

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self.deadline


class Worker:
    """Serialises the calls on one descriptor (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.uncleared = False  #: the next call clears the device first
        self.abandoned_calls = 0  #: calls whose caller was cancelled

    async def run(
        self,
        function: Callable[[Call], T],
        deadline: float,
        *,
        clear: Callable[[Call], None] | None = None,
        reading: bool = True,
    ) -> T:
        """``function(call)`` in a worker thread, holding the lock; ``clear(call)`` first
        when the worker is uncleared. ``deadline`` is on anyio's clock. A cancellation
        leaves the call running, flagged, and the worker uncleared."""
        left = deadline - anyio.current_time()  # the thread uses time.monotonic()
        call = Call(time.monotonic() + left if left != math.inf else math.inf)

        def body() -> T:
            left = call.deadline - time.monotonic()
            wait = -1.0 if left == math.inf else max(0.0, left)
            if not self._lock.acquire(timeout=wait):
                error = ReadTimeout if reading else WriteTimeout
                raise error(f"{self.name}: an earlier, abandoned call still holds the bus")
            try:
                if call.abandoned.is_set():
                    raise _Abandoned  # nobody waits for it
                if self.uncleared and clear is not None:
                    clear(call)
                    self.uncleared = False
                return function(call)
            finally:
                self._lock.release()

        try:
            return await anyio.to_thread.run_sync(body, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            call.abandoned.set()
            self.abandoned_calls += 1
            self.uncleared = True
            raise
