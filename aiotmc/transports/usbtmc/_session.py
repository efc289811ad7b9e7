"""The state of one USBTMC session, its guards and its resynchronisation after an error.

:class:`UsbtmcSession` is the base of :class:`~aiotmc.transports.usbtmc.UsbtmcTransport`:
the opened port and its protocol state, what the link reports (:attr:`info`,
:attr:`capabilities`, :attr:`srq`), the guard every operation passes (:meth:`_begin`:
closed, busy, lost, broken) and :meth:`_after_error`, which runs the recovery
(:mod:`._recovery`) after an interrupted operation, shielded and bounded. The layers above
add the link's lifecycle (:mod:`._link`), messages (:mod:`._messages`) and control
requests (:mod:`._control`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Final, TypeVar

import anyio

from ..._exceptions import (
    AiotmcTimeout,
    ConnectionLostError,
    LocalProtocolError,
    SessionBrokenError,
    WriteTimeout,
)
from ..._usb.port import PipelinedUsbPort, UsbPort
from ...protocol.quirks import NO_QUIRKS, Quirks
from ...protocol.usb488 import StbTag
from ...protocol.usbtmc import DEFAULT_MAX_TRANSFER_SIZE, UsbtmcCapabilities, UsbtmcConnection
from ...srq import SrqBroadcaster
from ..base import Capabilities, TransportInfo
from ._recovery import BulkOutProgress, UsbtmcRecovery

if TYPE_CHECKING:
    from ..._background import BackgroundTask
    from ...reconnect import Reconnect
    from ._reader import InterruptReader

__all__ = ["PortOpener", "UsbtmcSession", "ids_from_resource"]

logger = logging.getLogger("aiotmc.transports.usbtmc")

T = TypeVar("T")

PortOpener = Callable[[], AbstractAsyncContextManager[UsbPort]]
"""Opens the device again (by its resource name) for :meth:`UsbtmcTransport.reconnect`."""

_PIPELINE_MIN_CHUNK: Final = 64 * 1024  # bulk-IN reads of 2+ such chunks are pipelined
_USB_IDS: Final = re.compile(r"^USB\d*::(0x[0-9a-fA-F]+|\d+)::(0x[0-9a-fA-F]+|\d+)", re.I)


def ids_from_resource(resource: str) -> tuple[int | None, int | None]:
    """The VID and PID in a ``USB::vid::pid...`` resource name (None where absent)."""
    match = _USB_IDS.match(resource)
    if match is None:
        return None, None
    return int(match.group(1), 0), int(match.group(2), 0)


class UsbtmcSession:
    """State and guards of a USBTMC session (see :class:`UsbtmcTransport` for options)."""

    def __init__(
        self,
        port: UsbPort,
        *,
        resource: str,
        quirks: Quirks = NO_QUIRKS,
        max_transfer_size: int = DEFAULT_MAX_TRANSFER_SIZE,
        recovery_timeout: float = 5.0,
        poll_interval: float = 0.05,
        max_polls: int = 100,
        drain_timeout: float = 0.3,
        interrupt_size: int | None = None,
        clear_on_open: bool = False,
        reopen: PortOpener | None = None,
        reconnect: Reconnect | None = None,
        pipeline: bool = False,
    ) -> None:
        self._pipeline_option = pipeline
        self._port = port
        self._resource = resource
        self.quirks = quirks
        self._max_transfer_size = max_transfer_size
        self._conn = self._make_connection(port)
        self._recovery_timeout = recovery_timeout
        self._poll_interval = poll_interval
        self._max_polls = max_polls
        self._drain_timeout = drain_timeout
        self._interrupt_size_option = interrupt_size
        self._clear_on_open = clear_on_open
        self._reopen = reopen
        self._policy = reconnect
        self._port_stack: AsyncExitStack | None = None  # ports opened by reconnect()
        self._background = False  # open() ran: background work (reader, reconnect) allowed
        self._reconnector: BackgroundTask | None = None  # a background reconnect running
        self._restoring: anyio.Event | None = None  # set while a background reconnect runs
        self._restore_failure: Exception | None = None  # why the last one gave up
        self._adopt_port(port)
        self._vid, self._pid = ids_from_resource(resource)
        self._capabilities = UsbtmcCapabilities()
        self._srq = SrqBroadcaster(resource)
        self._stb_tags = StbTag()
        self._reader: InterruptReader | None = None
        self._busy = False
        self._closed = False
        self._broken: str | None = None
        self._lost: ConnectionLostError | None = None
        self._out = BulkOutProgress()
        self._recovery = self._make_recovery()
        self._last_write_end: float | None = None
        self._info = self._make_info()
        #: How many recoveries ran (aborts/clears after an interrupted operation).
        self.recoveries = 0
        #: How many times :meth:`reconnect` replaced the link.
        self.reconnects = 0
        #: How many endpoint halts were cleared and the transfer retried (no error raised).
        self.stall_retries = 0
        self._stall_retry = False  # the operation running may still retry after a halt

    def _make_connection(self, port: UsbPort) -> UsbtmcConnection:
        return UsbtmcConnection(
            interface=port.interface_number,
            bulk_out_endpoint=port.bulk_out_endpoint,
            bulk_in_endpoint=port.bulk_in_endpoint,
            max_packet_size=port.max_packet_size,
            max_transfer_size=self._max_transfer_size,
            quirks=self.quirks,
        )

    def _make_recovery(self) -> UsbtmcRecovery:
        return UsbtmcRecovery(
            port=self._port,
            conn=self._conn,
            out=self._out,
            clear_hangs=self.quirks.clear_hangs,
            poll_interval=self._poll_interval,
            max_polls=self._max_polls,
            drain_timeout=self._drain_timeout,
            resource=self._resource,
        )

    def _adopt_port(self, port: UsbPort) -> None:
        """Take the endpoint layout of ``port`` (at construction, and after a reopen)."""
        mps = port.max_packet_size
        packet = (
            self._interrupt_size_option or getattr(port, "interrupt_max_packet_size", None) or 64
        )
        self._interrupt_size = max(int(packet), 2)
        self._interrupt_endpoint = port.interrupt_in_endpoint
        self._pipelined: PipelinedUsbPort | None = (
            port if self._pipeline_option and isinstance(port, PipelinedUsbPort) else None
        )
        self._min_chunk = -(-_PIPELINE_MIN_CHUNK // mps) * mps

    def _make_info(self) -> TransportInfo:
        caps = self._capabilities
        usb488 = caps.usb488
        details = {
            "interface": str(self._port.interface_number),
            "max_packet_size": str(self._port.max_packet_size),
            "bcd_usbtmc": f"{caps.bcd_usbtmc:#06x}",
            "quirks": ",".join(self.quirks.active) or "none",
        }
        if self._vid is not None:
            details["vid"] = f"{self._vid:#06x}"
        if self._pid is not None:
            details["pid"] = f"{self._pid:#06x}"
        return TransportInfo(
            resource=self._resource,
            kind="usbtmc",
            capabilities=Capabilities(
                srq=usb488 and self._interrupt_endpoint is not None,
                read_stb=usb488,
                device_clear=True,
                trigger=usb488 and caps.trigger,
                remote_local=usb488 and caps.ren_control,
                indicator_pulse=caps.indicator_pulse,
                eom=not self.quirks.eom_unreliable,
            ),
            details=details,
        )

    # -- properties ------------------------------------------------------------------------------

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def capabilities(self) -> UsbtmcCapabilities:
        """What GET_CAPABILITIES reported (after quirks)."""
        return self._capabilities

    @property
    def srq(self) -> SrqBroadcaster | None:
        """Service requests from the interrupt endpoint (None without USB488 interrupt-IN)."""
        return self._srq if self._info.capabilities.srq else None

    @property
    def connection(self) -> UsbtmcConnection:
        """The sans-IO protocol state (bTags, state), for diagnostics and tests."""
        return self._conn

    @property
    def broken(self) -> bool:
        """True when recovery failed: every call raises SessionBrokenError."""
        return self._broken is not None

    # -- guarding ----------------------------------------------------------------------------------

    def _begin(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this USBTMC transport")
        if self._lost is not None:
            raise ConnectionLostError(str(self._lost), resource=None)
        if self._broken is not None:
            raise SessionBrokenError(
                f"the USBTMC session is out of step ({self._broken}); reopen the instrument",
                resource=self._resource,
            )
        self._busy = True

    async def _within(
        self, deadline: float, timeout: type[AiotmcTimeout], operation: Awaitable[T]
    ) -> T:
        """Await ``operation``; past ``deadline`` cancel it and raise ``timeout``."""
        if deadline == math.inf:
            return await operation
        with anyio.CancelScope(deadline=deadline):
            return await operation
        what = "send" if timeout is WriteTimeout else "get an answer"
        raise timeout(f"{self._resource}: could not {what} before the deadline")

    # -- recovery ------------------------------------------------------------------------------

    async def _after_error(
        self, exc: BaseException, *, force_clear: bool = False, in_tag: int | None = None
    ) -> None:
        """Resynchronise after ``exc`` interrupted an operation (shielded, bounded);
        ``in_tag``: a bulk-IN transfer in flight that the connection does not track."""
        if self._closed or isinstance(exc, (LocalProtocolError, anyio.ClosedResourceError)):
            return
        if isinstance(exc, ConnectionLostError):
            self._lost = exc
            return
        plan = self._recovery.plan(exc, force_clear, in_tag)
        if plan is None:
            return
        self.recoveries += 1
        failure: BaseException | None = None
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._recovery_timeout) as scope:
                try:
                    await self._recovery.run(plan)
                except ConnectionLostError as lost:
                    self._lost = lost
                    return
                except Exception as error:
                    failure = error
        if scope.cancelled_caught:
            failure = TimeoutError(f"recovery took longer than {self._recovery_timeout} s")
        if failure is not None:
            logger.warning("%s: recovery failed: %s", self._resource, failure)
            self._broken = f"recovery after {type(exc).__name__} failed: {failure}"
        else:
            self._settled()

    def _settled(self) -> None:
        self._conn.reset()
        self._out.partial = False
        self._out.inflight = None
