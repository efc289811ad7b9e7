"""The USB488 interrupt-IN reader: service requests out, status-byte answers by bTag.

One :class:`InterruptReader` per opened port reads the interrupt endpoint in a background
task owned by the event loop (:mod:`aiotmc._background`), so the transport can be opened
and closed from any task and cancel scope. It publishes SRQ notifications to the
transport's :class:`~aiotmc.srq.SrqBroadcaster` and hands each READ_STATUS_BYTE answer to
the :meth:`waiter` registered for its bTag, so the two never race.

When it stops for good (the device is gone, the port closed, the endpoint keeps failing)
it remembers why in :attr:`error` and fails every waiter with it; the transport raises it
from the next ``read_stb``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import anyio

from ..._background import BackgroundTask, spawn
from ..._exceptions import (
    ConnectionLostError,
    RemoteProtocolError,
    TransportError,
    UsbStallError,
)
from ...protocol.usb488 import SrqNotification, StatusByteReply, parse_interrupt

if TYPE_CHECKING:
    from ..._usb.port import UsbPort
    from ...srq import SrqBroadcaster

__all__ = ["InterruptReader", "StbWaiter"]

logger = logging.getLogger("aiotmc.transports.usbtmc")

_READER_FAILURES: Final = 3  # consecutive failed reads before the reader gives up


class StbWaiter:
    """A READ_STATUS_BYTE request waiting for its answer on interrupt-IN."""

    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value = 0
        self.error: BaseException | None = None


class InterruptReader:
    """Reads the interrupt endpoint of ``port`` until stopped or the endpoint fails.

    ``on_lost`` is called when the device disconnects (the transport marks the link lost
    and may reconnect in the background); ``on_failure`` when the reader itself fails
    with an unexpected error (the transport marks the session broken).
    """

    def __init__(
        self,
        port: UsbPort,
        *,
        endpoint: int,
        size: int,
        srq: SrqBroadcaster,
        resource: str,
        poll_interval: float,
        on_lost: Callable[[ConnectionLostError], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        self._port = port
        self._endpoint = endpoint
        self._size = size
        self._srq = srq
        self._resource = resource
        self._poll_interval = poll_interval
        self._on_lost = on_lost
        self._on_failure = on_failure
        self._waiters: dict[int, StbWaiter] = {}
        self._task: BackgroundTask | None = None
        #: Why the reader stopped (None while it runs).
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start reading in a background task of the event loop."""
        self._task = spawn(
            self._read, name=f"aiotmc interrupt-IN {self._resource}", on_error=self._failed
        )

    async def stop(self) -> None:
        """Cancel the reader and wait (shielded, at most 1 s) until it has ended."""
        task, self._task = self._task, None
        if task is not None:
            await task.stop(timeout=1.0)

    def waiter(self, tag: int) -> StbWaiter:
        """Register a waiter for the READ_STATUS_BYTE answer with ``tag``."""
        waiter = self._waiters[tag] = StbWaiter()
        return waiter

    def forget(self, tag: int) -> None:
        """Drop the waiter for ``tag`` (answered, failed or given up)."""
        self._waiters.pop(tag, None)

    def fail_waiters(self, error: BaseException) -> None:
        """Wake every waiter with ``error``."""
        for waiter in self._waiters.values():
            if not waiter.event.is_set():
                waiter.error = error
                waiter.event.set()

    def _failed(self, exc: Exception) -> None:
        self.error = TransportError(f"interrupt-IN reader failed: {exc}", resource=self._resource)
        self.fail_waiters(self.error)
        self._on_failure(exc)

    async def _read(self) -> None:
        port = self._port
        failures = 0
        while True:
            try:
                data = await port.interrupt_in(self._size)
            except ConnectionLostError as exc:
                self.error = exc
                self.fail_waiters(exc)
                self._on_lost(exc)
                return
            except anyio.ClosedResourceError as exc:
                self.error = exc
                self.fail_waiters(exc)
                return
            except Exception as exc:
                failures += 1
                logger.warning("%s: interrupt-IN failed: %s", self._resource, exc)
                if failures > _READER_FAILURES:
                    self.error = TransportError(
                        f"interrupt-IN reader stopped: {exc}", resource=self._resource
                    )
                    self.fail_waiters(self.error)
                    return
                try:
                    if isinstance(exc, UsbStallError):
                        await port.clear_halt(self._endpoint)
                    else:
                        await anyio.sleep(self._poll_interval)
                except Exception:
                    logger.debug("clear_halt on the interrupt endpoint failed", exc_info=True)
                continue
            failures = 0
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        try:
            note = parse_interrupt(data)
        except RemoteProtocolError as exc:
            logger.warning("%s: %s", self._resource, exc)
            return
        if type(note) is SrqNotification:
            self._srq.publish(note.status)
        elif type(note) is StatusByteReply:
            waiter = self._waiters.get(note.tag)
            if waiter is not None and not waiter.event.is_set():
                waiter.value = note.status
                waiter.event.set()
            else:
                logger.debug("%s: late status byte reply, bTag %d", self._resource, note.tag)
        else:
            logger.debug("%s: vendor notification %r", self._resource, note)
