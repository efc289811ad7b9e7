"""Event drivers: who calls libusb's event handling, and how completions reach the loop.

Two implementations of :class:`EventDriver` (design section 2):

* ``"thread"`` (:mod:`.driver_thread`): a dedicated thread loops on
  ``handleEventsTimeout``; completions re-enter the loop thread-safely. Works everywhere
  (Windows, macOS, Linux, umockdev).
* ``"pollfd"`` (:mod:`.driver_pollfd`): libusb's pollfds are watched by anyio tasks and
  events are handled on the loop thread. POSIX only, no threads.

``"auto"`` picks pollfd where libusb exposes pollfds, except on Windows and under
umockdev (its device nodes are regular files that epoll refuses); else thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol, TypeVar

__all__ = [
    "DriverKind",
    "EventContext",
    "EventDriver",
    "open_event_driver",
    "select_driver",
]

T = TypeVar("T")

DriverKind = Literal["auto", "thread", "pollfd"]

PollfdAdded = Callable[[int, int], None]
PollfdRemoved = Callable[[int], None]


class EventContext(Protocol):
    """What a driver needs from a libusb context (typed facade; fakes implement it too)."""

    def handle_events_timeout(self, seconds: float) -> None:
        """``libusb_handle_events_timeout``; raises USBError(INTERRUPTED) when woken."""
        ...

    def interrupt_event_handler(self) -> bool:
        """Wake a thread in ``handle_events``; False if libusb is too old (< 1.0.21)."""
        ...

    def get_pollfds(self) -> list[tuple[int, int]]:
        """``(fd, poll events)`` pairs; raises NotImplementedError/OSError without pollfds."""
        ...

    def set_pollfd_notifiers(
        self, added: PollfdAdded | None, removed: PollfdRemoved | None
    ) -> None:
        """Install (or with None, remove) the pollfd added/removed notifiers."""
        ...

    def get_next_timeout(self) -> float | None:
        """Seconds until libusb needs ``handle_events`` for an internal timeout, or None."""
        ...


class EventDriver(Protocol):
    """Runs libusb event handling for one context while it is open."""

    @property
    def name(self) -> str:
        """``"thread"`` or ``"pollfd"``."""
        ...

    def reentry(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop thread soon; callable from any thread, never blocks."""
        ...

    def poke(self) -> None:
        """A transfer was submitted (loop thread): handle events / recompute timeouts soon."""
        ...

    async def run_source_change(self, fn: Callable[[], T]) -> T:
        """Run a sync libusb call that removes event sources (device/handle close).

        The thread driver runs it in a worker thread (libusb waits for the event thread);
        the pollfd driver runs it inline on the loop thread so the removal notifier can
        call ``anyio.notify_closing`` before libusb closes the fd.
        """
        ...

    async def aclose(self) -> None:
        """Stop handling events; returns once no driver code is inside libusb."""
        ...


def _pollfds_available(context: EventContext) -> bool:
    try:
        context.get_pollfds()
    except (NotImplementedError, OSError):
        return False
    return True


def select_driver(kind: str, context: EventContext) -> Literal["thread", "pollfd"]:
    """Resolve ``"auto"`` (or ``AIOTMC_USB_DRIVER``) to a concrete driver name."""
    if kind == "auto":
        kind = os.environ.get("AIOTMC_USB_DRIVER", "auto").strip().lower() or "auto"
    if kind == "thread":
        return "thread"
    if kind == "pollfd":
        if not _pollfds_available(context):
            raise ValueError("driver='pollfd' needs libusb pollfds (not available on Windows)")
        return "pollfd"
    if kind != "auto":
        raise ValueError(f"driver must be 'auto', 'thread' or 'pollfd', not {kind!r}")
    # "auto" is the event thread everywhere for now: it is the portable driver, and the
    # pollfd driver has only been exercised against fakes and umockdev's degraded
    # regular-file node, not a real usbfs. Opt in with driver="pollfd".
    return "thread"


def open_event_driver(
    context: EventContext, kind: str = "auto"
) -> AbstractAsyncContextManager[EventDriver]:
    """Start the chosen driver for ``context``; it stops when the block exits."""
    resolved = select_driver(kind, context)
    if resolved == "pollfd":
        from .driver_pollfd import PollfdEventDriver

        return PollfdEventDriver(context)
    from .driver_thread import ThreadEventDriver

    return ThreadEventDriver(context)
