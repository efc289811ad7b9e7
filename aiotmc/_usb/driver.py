"""Event drivers: who calls libusb's event handling, and how completions reach the loop.

The interface (:class:`EventContext`, :class:`EventDriver`) lives in :mod:`.driver_api`;
this module picks and starts one of its two implementations (design section 2):

* ``"thread"`` (:mod:`.driver_thread`): a dedicated thread loops on
  ``handleEventsTimeout``; completions re-enter the loop thread-safely. Works everywhere
  (Windows, macOS, Linux, umockdev).
* ``"pollfd"`` (:mod:`.driver_pollfd`): libusb's pollfds are watched by anyio tasks and
  events are handled on the loop thread. POSIX only, no threads.

``"auto"`` follows the ``AIOTMC_USB_DRIVER`` environment variable when it is set, else it
is the thread driver for now; ``"pollfd"`` is opt-in and needs libusb pollfds (not on
Windows).
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from typing import Literal

from .driver_api import DriverKind, EventContext, EventDriver, PollfdAdded, PollfdRemoved
from .driver_pollfd import PollfdEventDriver
from .driver_thread import ThreadEventDriver

__all__ = [
    "DriverKind",
    "EventContext",
    "EventDriver",
    "PollfdAdded",
    "PollfdRemoved",
    "open_event_driver",
    "select_driver",
]


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
        return PollfdEventDriver(context)
    return ThreadEventDriver(context)
