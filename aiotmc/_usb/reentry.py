"""Thread-safe, non-blocking "run this on the event loop soon", for libusb callbacks.

libusb runs completion callbacks on whichever thread handles events. They must hand
their result to the loop without blocking (``anyio.from_thread.run_sync`` waits for the
loop and can deadlock) and without raising once the loop is gone:

* asyncio: ``loop.call_soon_threadsafe``; ``RuntimeError`` (closed loop) is swallowed.
* trio: ``TrioToken.run_sync_soon``; ``trio.RunFinishedError`` is swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable

__all__ = ["LoopAffineReentry", "Reentry", "capture_reentry", "current_async_library"]

logger = logging.getLogger(__name__)

Reentry = Callable[[Callable[[], object]], None]


def current_async_library() -> str:
    """``"trio"`` or ``"asyncio"``: the library running the current thread's loop."""
    try:
        import sniffio
    except ImportError:
        pass
    else:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            pass
    if "trio" in sys.modules:
        import trio

        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    asyncio.get_running_loop()  # raises RuntimeError outside any loop
    return "asyncio"


def capture_reentry() -> Reentry:
    """Capture the running loop; the result may be called from any thread, never blocks.

    Call on the loop thread. Calls made after the loop has finished are dropped.
    """
    if current_async_library() == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()

        def trio_reentry(fn: Callable[[], object]) -> None:
            try:
                token.run_sync_soon(fn)
            except trio.RunFinishedError:
                logger.debug("trio run finished; dropped %r", fn)

        return trio_reentry

    loop = asyncio.get_running_loop()

    def asyncio_reentry(fn: Callable[[], object]) -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed
            logger.debug("event loop closed; dropped %r", fn)

    return asyncio_reentry


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
