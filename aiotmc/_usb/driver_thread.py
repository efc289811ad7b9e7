"""The thread driver: one daemon thread looping on ``handleEventsTimeout``.

libusb documents a dedicated event thread as the portable way to use async transfers.
Completion callbacks run on that thread; :meth:`ThreadEventDriver.reentry` hands their
result to the loop with ``call_soon_threadsafe`` / ``TrioToken.run_sync_soon``.

Idle spin: where the device fd is always "ready" (umockdev's regular-file device nodes)
``handleEventsTimeout`` returns at once with nothing done. After two such early returns
in a row the thread waits with an exponential back-off (``spin_backoff`` up to
``spin_backoff_max``); a :meth:`~ThreadEventDriver.poke` (transfer submitted) or a
completion resets it. With a real usbfs fd, libusb's poll blocks and this never triggers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, TypeVar

import anyio

from .driver_api import EventContext
from .errors import LibusbError, usb_error_code
from .reentry import Reentry, capture_reentry

__all__ = ["ThreadEventDriver"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PERIOD: Final = 0.5
FALLBACK_PERIOD: Final = 0.05  # libusb without libusb_interrupt_event_handler


class ThreadEventDriver:
    """Dedicated event-handling thread (async context manager)."""

    name: Final = "thread"

    def __init__(
        self,
        context: EventContext,
        *,
        period: float = DEFAULT_PERIOD,
        spin_backoff: float = 50e-6,
        spin_backoff_max: float = 0.004,
    ) -> None:
        self._context = context
        self._period = period
        self._spin_backoff = spin_backoff
        self._spin_backoff_max = spin_backoff_max
        self._threadsafe: Reentry | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._completions = 0
        self._limiter = anyio.CapacityLimiter(1)
        self.iterations = 0  #: handleEventsTimeout calls so far (for tests/diagnostics)
        self.backoffs = 0  #: waits taken because of early empty returns

    # -- EventDriver -------------------------------------------------------------------

    def reentry(self, fn: Callable[[], object]) -> None:
        """Hand ``fn`` to the loop (called on the event thread by completion callbacks)."""
        self._completions += 1
        threadsafe = self._threadsafe
        if threadsafe is not None:
            threadsafe(fn)

    def poke(self) -> None:
        """Cut a back-off wait short: a transfer was just submitted."""
        self._wake.set()

    async def run_source_change(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (e.g. a handle close) in a worker thread; libusb syncs with us."""
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=False)

    async def aclose(self) -> None:
        """Stop and join the thread (joined in a worker thread, never on the loop)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            self._context.interrupt_event_handler()
        except Exception:  # pragma: no cover - defensive: context already gone
            logger.exception("interrupt_event_handler failed")
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join)
        self._thread = None

    # -- context manager ---------------------------------------------------------------

    async def __aenter__(self) -> ThreadEventDriver:
        if self._thread is not None:
            raise RuntimeError("driver already started")
        self._threadsafe = capture_reentry()
        if not self._supports_interrupt():
            self._period = min(self._period, FALLBACK_PERIOD)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="aiotmc-libusb-events", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the thread --------------------------------------------------------------------

    def _supports_interrupt(self) -> bool:
        probe = getattr(self._context, "supports_interrupt", None)
        return bool(probe()) if callable(probe) else True

    def _run(self) -> None:
        context = self._context
        period = self._period
        early = period / 2
        empty_returns = 0
        while not self._stopping:
            before = self._completions
            started = time.monotonic()
            self.iterations += 1
            try:
                context.handle_events_timeout(period)
            except Exception as exc:
                if usb_error_code(exc) != LibusbError.INTERRUPTED:
                    logger.exception("libusb event handling failed")
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
            if self._stopping:
                break
            if self._completions != before or time.monotonic() - started >= early:
                empty_returns = 0
                continue
            empty_returns += 1
            if empty_returns < 2:
                continue
            delay = min(
                self._spin_backoff * (1 << min(empty_returns - 2, 20)), self._spin_backoff_max
            )
            self.backoffs += 1
            if self._wake.wait(delay):
                self._wake.clear()
                empty_returns = 0
