"""Thread-safe, non-blocking "run this on the event loop soon", for libusb callbacks.

libusb runs completion callbacks on whichever thread handles events. They must hand
their result to the loop without blocking (``anyio.from_thread.run_sync`` waits for the
loop and can deadlock) and without raising once the loop is gone:

* asyncio: ``loop.call_soon_threadsafe``; ``RuntimeError`` (closed loop) is swallowed.
* trio: ``TrioToken.run_sync_soon``; ``trio.RunFinishedError`` is swallowed.

Both live with the rest of the loop-specific code in :mod:`aiotmc._loops`
(:func:`capture_reentry`); this module adds the loop-thread shortcut.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._loops import Reentry, capture_reentry, current_async_library

__all__ = ["LoopAffineReentry", "Reentry", "capture_reentry", "current_async_library"]


class LoopAffineReentry:
    """Calls ``fn`` at once on the loop thread, else hands it over via ``threadsafe``.

    Create on the loop thread. Used by the pollfd driver, whose callbacks normally fire
    on the loop thread inside ``handleEventsTimeout(0)``.
    """

    def __init__(self, threadsafe: Reentry) -> None:
        self._threadsafe = threadsafe
        self._loop_thread = threading.get_ident()

    def in_loop_thread(self) -> bool:
        """True when called on the thread that created this object."""
        return threading.get_ident() == self._loop_thread

    def __call__(self, fn: Callable[[], object]) -> None:
        if self.in_loop_thread():
            fn()
        else:
            self._threadsafe(fn)
