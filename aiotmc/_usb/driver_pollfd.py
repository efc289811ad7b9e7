"""The pollfd driver: libusb's file descriptors watched on the event loop, no threads.

For each ``(fd, events)`` libusb exposes (initial list plus the *added* notifier) one
watcher per direction waits with ``anyio.wait_readable`` (POLLIN/POLLPRI) or
``anyio.wait_writable`` (POLLOUT: Linux usbfs device fds), then calls
``handleEventsTimeout(0)`` on the loop thread, so completion callbacks run inline.
The *removed* notifier calls ``anyio.notify_closing`` synchronously (libusb calls it
before closing the fd) and cancels the watcher; hence every libusb call that removes
event sources must run on the loop thread (:meth:`PollfdEventDriver.run_source_change`).
A timer follows ``getNextTimeout`` and is re-armed by :meth:`~PollfdEventDriver.poke`.

The watchers are background tasks of the driver itself (trio system tasks, asyncio
tasks), not children of a task group: a port that owns its driver can then be entered
under ``fail_after`` or an ``AsyncExitStack`` like any async context manager. They are
cancelled and awaited when the driver closes.

An fd the loop cannot watch (epoll refuses regular files, e.g. umockdev device nodes)
is polled instead: ``handleEventsTimeout(0)`` on a bounded back-off (``poll_backoff_max``),
reset by pokes and completions. A warning is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import select
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Final, TypeVar

import anyio
import anyio.lowlevel

from .driver_api import EventContext
from .errors import LibusbError, usb_error_code
from .reentry import LoopAffineReentry, capture_reentry, current_async_library

__all__ = ["PollfdEventDriver"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_POLLIN: Final = getattr(select, "POLLIN", 0x001) | getattr(select, "POLLPRI", 0x002)
_POLLOUT: Final = getattr(select, "POLLOUT", 0x004)
_CLOSE_GRACE: Final = 5.0


@dataclass(eq=False)
class _Watcher:
    fd: int
    events: int
    scopes: list[anyio.CancelScope] = field(default_factory=list)
    cancelled: bool = False
    running: int = 0
    finished: anyio.Event | None = None
    previous: _Watcher | None = None

    def cancel(self) -> None:
        self.cancelled = True
        for scope in self.scopes:
            scope.cancel()


class PollfdEventDriver:
    """libusb pollfds integrated into the running anyio loop (async context manager)."""

    name: Final = "pollfd"

    def __init__(
        self,
        context: EventContext,
        *,
        poll_backoff: float = 50e-6,
        poll_backoff_max: float = 0.004,
    ) -> None:
        self._context = context
        self._poll_backoff = poll_backoff
        self._poll_backoff_max = poll_backoff_max
        self._local: LoopAffineReentry | None = None
        self._library = ""
        self._started = False
        self._closed = False
        self._watchers: dict[int, _Watcher] = {}
        self._service_scopes: list[anyio.CancelScope] = []
        self._asyncio_tasks: set[asyncio.Task[None]] = set()
        self._running = 0
        self._all_done: anyio.Event | None = None
        self._poke_event: anyio.Event | None = None
        self._changed: anyio.Event | None = None
        self._changes: list[tuple[int, int | None]] = []
        self._completions = 0
        self._warned = False
        self.handled = 0  #: handleEventsTimeout(0) calls so far (tests/diagnostics)
        self.polled_fds: set[int] = set()  #: fds that fell back to polling

    # -- EventDriver -------------------------------------------------------------------

    def reentry(self, fn: Callable[[], object]) -> None:
        """Direct call on the loop thread (inline callbacks), thread-safe otherwise."""
        self._completions += 1
        local = self._local
        if local is not None:
            local(fn)

    def poke(self) -> None:
        """Wake the timer (and any polled fd) after a submit. Loop thread only."""
        event, self._poke_event = self._poke_event, anyio.Event()
        if event is not None:
            event.set()

    async def run_source_change(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inline on the loop thread (see module docstring)."""
        await anyio.lowlevel.checkpoint()
        return fn()

    async def aclose(self) -> None:
        """Remove the notifiers, cancel every watcher and the timer, and wait for them."""
        self._shutdown()
        if self._all_done is not None and self._running:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_GRACE):
                await self._all_done.wait()
        if self._running:
            logger.error("pollfd driver: %d background task(s) did not stop", self._running)
        await anyio.lowlevel.checkpoint()

    @property
    def watched_fds(self) -> dict[int, int]:
        """``{fd: poll events}`` currently watched."""
        return {fd: w.events for fd, w in self._watchers.items()}

    # -- context manager ---------------------------------------------------------------

    async def __aenter__(self) -> PollfdEventDriver:
        if self._started:
            raise RuntimeError("driver already started")
        self._started = True
        self._library = current_async_library()
        self._local = LoopAffineReentry(capture_reentry())
        self._poke_event = anyio.Event()
        self._changed = anyio.Event()
        self._all_done = anyio.Event()
        try:
            self._context.set_pollfd_notifiers(self._on_added, self._on_removed)
            for fd, events in self._context.get_pollfds():
                self._add(fd, events)
            self._spawn_service(self._timer)
            self._spawn_service(self._manage)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._context.set_pollfd_notifiers(None, None)
        except Exception:  # pragma: no cover - defensive
            logger.exception("clearing pollfd notifiers failed")
        for fd in list(self._watchers):
            self._remove(fd)
        for scope in self._service_scopes:
            scope.cancel()

    # -- background tasks --------------------------------------------------------------

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Start ``fn`` as a background task of the driver (not of any task group)."""
        self._running += 1

        async def runner() -> None:
            try:
                await fn()
            except Exception:
                logger.exception("pollfd driver task failed")
            finally:
                self._running -= 1
                if not self._running and self._all_done is not None:
                    self._all_done.set()

        if self._library == "trio":
            import trio

            trio.lowlevel.spawn_system_task(runner, name=f"aiotmc-libusb-{fn!r}")
        else:
            task = asyncio.get_running_loop().create_task(runner())
            self._asyncio_tasks.add(task)
            task.add_done_callback(self._asyncio_tasks.discard)

    def _spawn_service(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def service() -> None:
            with anyio.CancelScope() as scope:
                self._service_scopes.append(scope)
                if self._closed:
                    scope.cancel()
                await fn()

        self._spawn(service)

    # -- notifiers (called by libusb) --------------------------------------------------

    def _on_added(self, fd: int, events: int, *_user_data: object) -> None:
        local = self._local
        if local is None:
            return
        if local.in_loop_thread():
            self._add(fd, events)
        else:  # e.g. a device opened in a worker thread: the manager task registers it
            local(partial(self._enqueue, fd, events))

    def _on_removed(self, fd: int, *_user_data: object) -> None:
        local = self._local
        if local is None:
            return
        if local.in_loop_thread():
            self._remove(fd)
        else:
            logger.warning(
                "libusb removed fd %d outside the loop thread; with the pollfd driver, close "
                "devices on the loop thread (run_source_change)",
                fd,
            )
            local(partial(self._enqueue, fd, None))

    def _enqueue(self, fd: int, events: int | None) -> None:
        # May run as a plain loop callback (no task): only queue and wake the manager.
        self._changes.append((fd, events))
        if self._changed is not None:
            self._changed.set()

    async def _manage(self) -> None:
        while True:
            assert self._changed is not None
            await self._changed.wait()
            self._changed = anyio.Event()
            changes, self._changes = self._changes, []
            for fd, events in changes:
                if events is None:
                    self._remove(fd)
                else:
                    self._add(fd, events)

    # -- watchers ----------------------------------------------------------------------

    def _add(self, fd: int, events: int) -> None:
        if self._closed:
            return
        previous = self._watchers.pop(fd, None)
        if previous is not None:
            previous.cancel()
        watcher = _Watcher(fd, events, previous=previous)
        self._watchers[fd] = watcher
        waits: list[Callable[[int], Awaitable[None]]] = []
        if events & _POLLIN:
            waits.append(anyio.wait_readable)
        if events & _POLLOUT:
            waits.append(anyio.wait_writable)
        for wait in waits:
            watcher.running += 1
            self._spawn(partial(self._watch, watcher, wait))

    def _remove(self, fd: int) -> None:
        watcher = self._watchers.pop(fd, None)
        if watcher is None:
            return
        anyio.notify_closing(fd)
        watcher.cancel()
        self.polled_fds.discard(fd)

    async def _watch(self, watcher: _Watcher, wait: Callable[[int], Awaitable[None]]) -> None:
        if watcher.finished is None:
            watcher.finished = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                watcher.scopes.append(scope)
                if watcher.cancelled:
                    scope.cancel()
                previous = watcher.previous
                if previous is not None and previous.running:
                    assert previous.finished is not None
                    await previous.finished.wait()
                await self._watch_direction(watcher, wait)
        finally:
            watcher.running -= 1
            if not watcher.running:
                watcher.previous = None
                watcher.finished.set()

    async def _watch_direction(
        self, watcher: _Watcher, wait: Callable[[int], Awaitable[None]]
    ) -> None:
        fd = watcher.fd
        while True:
            try:
                await wait(fd)
            except anyio.ClosedResourceError:
                return
            except anyio.BusyResourceError:
                await anyio.sleep(0.001)
                continue
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("cannot wait for libusb fd %d (%s); polling it instead", fd, exc)
                self.polled_fds.add(fd)
                break
            self._handle_events()
        await self._poll()

    async def _poll(self) -> None:
        delay = 0.0
        while True:
            before = self._completions
            event = self._poke_event
            assert event is not None
            self._handle_events()
            if self._completions != before:
                delay = 0.0
                await anyio.lowlevel.checkpoint()
                continue
            delay = min(max(delay * 2, self._poll_backoff), self._poll_backoff_max)
            with anyio.move_on_after(delay):
                await event.wait()
                delay = 0.0

    async def _timer(self) -> None:
        while True:
            event = self._poke_event
            assert event is not None
            try:
                timeout = self._context.get_next_timeout()
            except Exception:  # pragma: no cover - defensive
                logger.exception("libusb get_next_timeout failed")
                timeout = 1.0
            with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await event.wait()
            if scope.cancelled_caught:
                self._handle_events()

    def _handle_events(self) -> None:
        self.handled += 1
        try:
            self._context.handle_events_timeout(0)
        except Exception as exc:
            if usb_error_code(exc) != LibusbError.INTERRUPTED:
                logger.exception("libusb event handling failed")
