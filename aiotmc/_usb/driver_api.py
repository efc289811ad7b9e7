"""The event-driver interface: what a driver needs from a libusb context, what it offers.

Shared by the factory (:mod:`.driver`), the two implementations (:mod:`.driver_thread`,
:mod:`.driver_pollfd`), :class:`~aiotmc._usb.context.UsbContext` and the test fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

__all__ = ["DriverKind", "EventContext", "EventDriver", "PollfdAdded", "PollfdRemoved"]

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
