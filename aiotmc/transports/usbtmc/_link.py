"""The lifecycle of a USBTMC link: start, background work, reconnect, close.

:class:`UsbtmcLink` reads GET_CAPABILITIES (and device-clears) when a port is taken,
starts the interrupt-IN reader (:mod:`._reader`), replaces the port on
:meth:`~UsbtmcLink.reconnect` (and in the background after an unplug, under a retry
policy) and closes everything in :meth:`~UsbtmcLink.aclose`. Background work runs in tasks
owned by the event loop (:mod:`aiotmc._background`), never in a task group held across
the caller's ``yield``: the transport may be opened and closed in different tasks and
cancel scopes, and ``aclose`` completes under cancellation.
"""

from __future__ import annotations

import logging
import math
from contextlib import AsyncExitStack
from functools import partial
from typing import Final, Protocol, runtime_checkable

import anyio
from anyio.lowlevel import checkpoint

from ..._background import spawn
from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    RemoteProtocolError,
    UnsupportedOperation,
    UsbTransferError,
)
from ...protocol.usbtmc import UsbtmcCapabilities
from ...reconnect import Reconnect, retry_connect
from ._reader import InterruptReader
from ._session import UsbtmcSession

__all__ = ["SupportsReset", "UsbtmcLink"]

logger = logging.getLogger("aiotmc.transports.usbtmc")

_ONE_TRY: Final = Reconnect(attempts=1)


@runtime_checkable
class SupportsReset(Protocol):
    """A UsbPort that can reset the device (needed for ``Quirks.reset_on_open``)."""

    async def reset(self) -> None: ...


class UsbtmcLink(UsbtmcSession):
    """Starting, reconnecting and closing the link of a USBTMC session."""

    # -- starting ------------------------------------------------------------------------------

    async def _start(self) -> None:
        """Initialise the opened port and start the background work (``open`` calls it)."""
        await self._initialize(clear=self._clear_on_open)
        self._background = True
        if not self._closed:
            self._start_reader()

    async def _initialize(self, *, clear: bool = False) -> None:
        port = self._port
        if self.quirks.reset_on_open:
            if isinstance(port, SupportsReset):
                await port.reset()
            else:
                logger.warning("%s: needs a USB reset at open; the port cannot", self._resource)
        try:
            data = await port.control(self._conn.get_capabilities())
            self._capabilities = self._conn.receive_capabilities(data)
        except (UsbTransferError, RemoteProtocolError) as exc:
            logger.info(
                "%s: GET_CAPABILITIES failed (%s); assuming plain USBTMC", self._resource, exc
            )
            if getattr(port, "usb488", False):
                self._capabilities = UsbtmcCapabilities(bcd_usbtmc=0x0100, bcd_usb488=0x0100)
        self._info = self._make_info()
        if clear:
            await self._clear_at_open()

    async def _clear_at_open(self) -> None:
        """Device clear, so a new session never reads what an earlier one left behind
        (a half-read response, a stalled endpoint). Best effort, bounded by
        ``recovery_timeout``; ConnectionLostError propagates."""
        with anyio.move_on_after(self._recovery_timeout) as scope:
            try:
                await self._recovery.device_clear()
            except (UsbTransferError, RemoteProtocolError) as exc:
                logger.warning("%s: device clear at open failed: %s", self._resource, exc)
        if scope.cancelled_caught:
            logger.warning(
                "%s: device clear at open took longer than %s s",
                self._resource,
                self._recovery_timeout,
            )
        self._settled()

    def _start_reader(self) -> None:
        endpoint = self._interrupt_endpoint
        if endpoint is None:
            return
        reader = self._reader = InterruptReader(
            self._port,
            endpoint=endpoint,
            size=self._interrupt_size,
            srq=self._srq,
            resource=self._resource,
            poll_interval=self._poll_interval,
            on_lost=self._reader_lost,
            on_failure=self._reader_failed,
        )
        reader.start()

    def _reader_lost(self, exc: ConnectionLostError) -> None:
        self._lost = exc
        self._schedule_reconnect()

    def _reader_failed(self, exc: Exception) -> None:
        self._broken = f"the interrupt-IN reader failed: {exc!r}"

    async def _stop_reader(self, error: BaseException) -> None:
        """Stop the reader (shielded, bounded) and fail its waiters with ``error``."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
            reader.fail_waiters(error)

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the background work and close the port; idempotent, shielded: it completes
        from any task and under cancellation."""
        if self._closed:
            await checkpoint()
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            reconnector, self._reconnector = self._reconnector, None
            if reconnector is not None:
                await reconnector.stop(timeout=self._recovery_timeout)
            await self._stop_reader(anyio.ClosedResourceError())
            self._srq.close()
            await self._close_port()

    async def _close_port(self) -> None:
        """Close the current port (and the context it was opened in); never raises."""
        with anyio.CancelScope(shield=True):
            try:
                await self._port.aclose()
            except Exception:
                logger.debug("%s: closing the port failed", self._resource, exc_info=True)
            stack, self._port_stack = self._port_stack, None
            if stack is not None:
                try:
                    await stack.aclose()
                except Exception:
                    logger.debug("%s: closing the port failed", self._resource, exc_info=True)

    # -- reconnecting --------------------------------------------------------------------------

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Replace the link: close the port, open the device again by its resource name
        (after a replug it has a new bus address), read GET_CAPABILITIES, device-clear
        it and restart the interrupt reader.

        :attr:`srq` stays the same broadcaster, so ``service_requests()`` subscribers keep
        receiving. With a ``reconnect=`` policy it makes up to that many tries. Raises
        UnsupportedOperation when the transport has no ``reopen`` factory (a port the
        caller opened), ConnectError / ConnectTimeout when the device does not come back
        (the link then stays down: every operation raises ConnectionLostError, or tries
        again under a policy).
        """
        if self._reopen is None:
            raise UnsupportedOperation(f"{self._resource}: this USB port cannot be reopened")
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this USBTMC transport")
        self._busy = True
        try:
            await retry_connect(
                self._policy or _ONE_TRY,
                self._replace_port,
                resource=self._resource,
                deadline=deadline,
            )
        finally:
            self._busy = False

    async def _restore(self, deadline: float) -> None:
        """Under a retry policy: bring a lost or broken link back before an operation
        (``_begin`` raises the typed error when there is no policy or it failed)."""
        if self._policy is None or self._reopen is None or self._closed:
            return
        restoring = self._restoring
        # The background reconnect holds the busy flag while it works: wait for it before
        # looking at that flag, or the operation would fail with BusyResourceError.
        if restoring is not None:  # the background reconnect is at it: wait for it
            with anyio.CancelScope(deadline=deadline) as scope:
                await restoring.wait()
            if scope.cancelled_caught:
                raise ConnectTimeout("the link was not restored in time", resource=self._resource)
            failure = self._restore_failure
            if failure is not None and (self._lost is not None or self._broken is not None):
                raise ConnectError(str(failure), resource=None) from failure
            return
        if self._busy:  # another task's operation: _begin() reports it
            return
        await self.reconnect(deadline=deadline)

    def _schedule_reconnect(self) -> None:
        """After an unplug, under a policy: reconnect without waiting for an operation,
        so that service-request subscribers hear from a replugged device."""
        if (
            self._policy is None
            or self._reopen is None
            or self._closed
            or not self._background
            or self._restoring is not None
        ):
            return
        self._restoring = anyio.Event()
        self._reconnector = spawn(
            partial(self._background_reconnect, self._restoring),
            name=f"aiotmc reconnect {self._resource}",
        )

    async def _background_reconnect(self, done: anyio.Event) -> None:
        policy = self._policy
        assert policy is not None

        async def attempt() -> None:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._busy:  # an operation is failing on the old link: try again later
                raise ConnectionLostError("busy", resource=self._resource)
            self._busy = True
            try:
                await self._replace_port()
            finally:
                self._busy = False

        self._restore_failure = None
        try:
            await anyio.sleep(policy.backoff)  # a replugged device needs time to enumerate
            await retry_connect(policy, attempt, resource=self._resource)
        except anyio.ClosedResourceError:
            pass
        except Exception as exc:
            self._restore_failure = exc
            logger.warning("%s: background reconnect gave up: %s", self._resource, exc)
        finally:
            self._restoring = None
            self._reconnector = None
            done.set()

    async def _replace_port(self) -> None:
        """One reconnect try (``_busy`` is held by the caller)."""
        assert self._reopen is not None
        self._lost = self._lost or ConnectionLostError("reconnecting", resource=self._resource)
        await self._stop_reader(ConnectionLostError("the link is being replaced"))
        await self._close_port()
        stack = AsyncExitStack()
        try:
            port = await stack.enter_async_context(self._reopen())
            if self._closed:
                raise anyio.ClosedResourceError
            self._port = port
            self._port_stack = stack
            self._adopt_port(port)
            self._conn = self._make_connection(port)
            self._recovery = self._make_recovery()
            self._broken = None
            self._out.inflight = None
            self._out.partial = False
            self._last_write_end = None
            await self._initialize(clear=True)
            if self._background:
                self._start_reader()
        except BaseException:
            if self._port_stack is not stack:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
            raise
        self._lost = None
        self.reconnects += 1
        logger.info("%s: link replaced (reconnect %d)", self._resource, self.reconnects)
