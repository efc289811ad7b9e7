"""AsyncTransfer: one reusable libusb transfer as an awaitable (design section 2.1).

* Submitted with no libusb timeout: deadlines are anyio cancel scopes.
* The completion callback is tiny and never raises: it snapshots status, actual length
  and (for IN) the data, then hands the snapshot to the loop via the driver's re-entry.
* Cancelled while in flight (or interrupted): ``cancel()`` then wait, shielded, for the
  completion (at most ``cancel_grace`` seconds). If it never comes the transfer is leaked
  on purpose into :data:`ZOMBIES` and the object refuses further use: freeing a buffer
  that libusb still owns is undefined behaviour.
* One transfer in flight per object; a second concurrent use raises BusyResourceError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, Protocol

import anyio
import anyio.lowlevel

from .._exceptions import SessionBrokenError
from .errors import LibusbError, TransferStatus, error_from_code, usb_error_code

__all__ = [
    "ZOMBIES",
    "AsyncTransfer",
    "Completion",
    "TransferHandle",
    "TransferNotifier",
]

logger = logging.getLogger(__name__)

CANCEL_GRACE: Final = 1.0

#: Transfers whose cancellation never completed; kept alive forever on purpose.
ZOMBIES: Final[set[AsyncTransfer]] = set()


@dataclass(frozen=True, slots=True)
class Completion:
    """What a finished transfer reported (snapshotted inside the libusb callback)."""

    status: int
    actual_length: int
    data: bytes = b""
    error: BaseException | None = None  #: exception raised while snapshotting (a bug)

    @property
    def ok(self) -> bool:
        return self.status == TransferStatus.COMPLETED and self.error is None


class TransferHandle(Protocol):
    """The typed facade over one ``usb1.USBTransfer`` (fakes implement it in tests)."""

    def set_callback(self, callback: Callable[[], None]) -> None:
        """Install the completion callback (called with no arguments, any thread)."""
        ...

    def submit(self) -> None:
        """Submit; raises USBError (mapped by value) on failure."""
        ...

    def cancel(self) -> None:
        """Request cancellation; USBError(NOT_FOUND) if not in flight / completing."""
        ...

    def snapshot(self) -> Completion:
        """Status, actual length and IN data of the finished transfer (callback thread)."""
        ...


class TransferNotifier(Protocol):
    """The part of an event driver a transfer needs."""

    def reentry(self, fn: Callable[[], object]) -> None: ...

    def poke(self) -> None: ...


class AsyncTransfer:
    """Await one libusb transfer at a time; reusable.

    Configure the underlying handle (bulk/control/interrupt buffer) before each
    :meth:`run`; the owner (``Libusb1Port``) does that through the facade.
    """

    def __init__(
        self,
        handle: TransferHandle,
        driver: TransferNotifier,
        *,
        name: str = "transfer",
        resource: str | None = None,
        endpoint: int | None = None,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self.handle = handle
        self._driver = driver
        self.name = name
        self._resource = resource
        self._endpoint = endpoint
        self._cancel_grace = cancel_grace
        self._generation = 0
        self._done: anyio.Event | None = None
        self._result: Completion | None = None
        self._in_flight = False
        self._cancel_requested = False
        self.zombie = False
        #: The completion of the last transfer cancelled by us (its actual_length tells
        #: how much was transferred before the cancel took effect).
        self.last_cancelled: Completion | None = None
        handle.set_callback(self._on_complete)

    @property
    def in_flight(self) -> bool:
        return self._in_flight

    @property
    def endpoint(self) -> int | None:
        return self._endpoint

    # -- the callback (any thread, inside libusb's handle_events) ----------------------

    def _on_complete(self) -> None:
        try:
            try:
                snapshot = self.handle.snapshot()
            except BaseException as exc:  # never let ctypes swallow it: the waiter would hang
                snapshot = Completion(TransferStatus.ERROR, 0, b"", exc)
            self._driver.reentry(partial(self._deliver, self._generation, snapshot))
        except BaseException:  # pragma: no cover - nothing sane left to do here
            logger.exception("%s: completion callback failed", self.name)

    # -- loop thread -------------------------------------------------------------------

    def _deliver(self, generation: int, snapshot: Completion) -> None:
        if generation != self._generation:
            logger.debug("%s: stale completion dropped", self.name)
            return
        self._result = snapshot
        if self.zombie:
            logger.warning("%s: cancelled transfer finally completed (zombie released)", self.name)
            ZOMBIES.discard(self)
            self.zombie = False
            self._in_flight = False
            self.last_cancelled = snapshot
        done = self._done
        if done is not None:
            done.set()

    async def run(self, on_submitted: Callable[[], None] | None = None) -> Completion:
        """Submit and wait for completion; on cancellation cancel and drain, then re-raise.

        ``on_submitted`` is called right after libusb accepted the transfer (so that a
        caller keeping several in flight can keep them in order).

        Raises ``anyio.BusyResourceError`` if already in flight, ``SessionBrokenError``
        if an earlier cancellation never completed, mapped aiotmc errors if submit fails.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.zombie:
            raise SessionBrokenError(
                f"{self.name}: an earlier transfer could not be cancelled; reopen the device",
                resource=self._resource,
            )
        if self._in_flight:
            raise anyio.BusyResourceError(f"using {self.name}")
        self._generation += 1
        done = self._done = anyio.Event()
        self._result = None
        self._cancel_requested = False
        try:
            self.handle.submit()
        except Exception as exc:
            code = usb_error_code(exc)
            if code is None:
                raise
            raise error_from_code(
                code,
                operation=f"submitting {self.name}",
                resource=self._resource,
                endpoint=self._endpoint,
            ) from exc
        self._in_flight = True
        self._driver.poke()
        if on_submitted is not None:
            on_submitted()
        try:
            await done.wait()
        finally:
            if not done.is_set():
                with anyio.CancelScope(shield=True):
                    await self._cancel_and_drain(done)
            if not self.zombie:
                self._in_flight = False
        result = self._result
        if result is None:  # leaked by abort() from another task
            raise SessionBrokenError(
                f"{self.name}: the transfer could not be cancelled; reopen the device",
                resource=self._resource,
            )
        return result

    @property
    def cancel_requested(self) -> bool:
        """True when the last run's transfer was cancelled by us (see :meth:`abort`)."""
        return self._cancel_requested

    async def abort(self) -> None:
        """Cancel the in-flight transfer (from another task) and wait until it is back."""
        done = self._done
        if not self._in_flight or done is None or done.is_set():
            return
        with anyio.CancelScope(shield=True):
            await self._cancel_and_drain(done)

    async def _cancel_and_drain(self, done: anyio.Event) -> None:
        self._cancel_requested = True
        try:
            self.handle.cancel()
        except Exception as exc:
            code = usb_error_code(exc)
            if code == LibusbError.NOT_FOUND:
                pass  # completion already under way
            elif code is None:
                logger.exception("%s: cancel failed", self.name)
            else:
                logger.debug("%s: cancel returned %s", self.name, code)
        with anyio.move_on_after(self._cancel_grace):
            await done.wait()
        if done.is_set():
            self.last_cancelled = self._result
            return
        self.zombie = True
        ZOMBIES.add(self)
        logger.error(
            "%s: libusb did not complete the cancelled transfer within %.1f s; leaking it",
            self.name,
            self._cancel_grace,
        )
        done.set()  # wake any other waiter; it sees no result
