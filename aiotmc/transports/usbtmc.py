"""USBTMC / USB488 transport: a MessageTransport over any UsbPort.

:class:`UsbtmcTransport` drives the sans-IO :class:`~aiotmc.protocol.usbtmc.UsbtmcConnection`
over a :class:`~aiotmc._usb.port.UsbPort` (libusb, or the in-process
:class:`~aiotmc.sim.fake_port.FakeUsbPort`). Open it with :func:`open_usbtmc_transport`
(or :meth:`UsbtmcTransport.open`): that reads GET_CAPABILITIES and starts the interrupt-IN
reader, which publishes service requests to :attr:`UsbtmcTransport.srq` and hands
READ_STATUS_BYTE answers to the waiting :meth:`~UsbtmcTransport.read_stb` by bTag, so the
two never race.

Cancellation and errors (``anyio.fail_after``/``move_on_after`` around any call): an
operation that stops part-way runs, shielded and bounded by ``recovery_timeout``, the
USBTMC recovery for the bTag in flight: bulk-IN abort (INITIATE_ABORT_BULK_IN, drain to a
short packet, CHECK_ABORT_BULK_IN_STATUS until not PENDING, retrying with the bTag the
device names), bulk-OUT abort (INITIATE/CHECK_ABORT_BULK_OUT + CLEAR_FEATURE(HALT)), and
device clear (INITIATE_CLEAR/CHECK_CLEAR_STATUS) when an abort fails or a message was
left half sent (see :mod:`~aiotmc.transports._usb_recovery`). If that fails too, the
transport is broken: every later call raises :class:`~aiotmc.SessionBrokenError` ("reopen
the instrument"). The next exchange after a successful recovery gets its own answer.

Block payloads are written into the caller's buffer by
:class:`~aiotmc.transports._usb_block_sink.BlockSink`; :func:`open_usbtmc_transport` and
:func:`open_usb_resource` live in :mod:`~aiotmc.transports._usb_open` and are re-exported
here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.lowlevel import checkpoint

from .._exceptions import (
    AiotmcTimeout,
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    TransportError,
    UnsupportedOperation,
    UsbStallError,
    UsbTransferError,
    WriteTimeout,
)
from .._usb.port import PIPELINE_DEPTH, PipelinedUsbPort, UsbPort
from ..protocol.quirks import NO_QUIRKS, Quirks, quirks_for
from ..protocol.usb488 import (
    SrqNotification,
    StatusByteReply,
    StbTag,
    go_to_local_request,
    local_lockout_request,
    parse_interrupt,
    parse_read_status_byte,
    read_status_byte_request,
    ren_control_request,
)
from ..protocol.usbtmc import (
    DEFAULT_MAX_TRANSFER_SIZE,
    NEED_DATA,
    EndOfMessage,
    NeedRequest,
    ResponseData,
    UsbtmcCapabilities,
    UsbtmcConnection,
    UsbtmcStatus,
    parse_status,
)
from ..reconnect import Reconnect, retry_connect
from ..srq import SrqBroadcaster
from ._usb_block_sink import BlockSink
from ._usb_open import open_usb_resource, open_usbtmc_transport
from ._usb_recovery import BulkOutProgress, UsbtmcRecovery
from .base import BytesLike, Capabilities, TransportInfo

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

PortOpener = Callable[[], AbstractAsyncContextManager[UsbPort]]
"""Opens the device again (by its resource name) for :meth:`UsbtmcTransport.reconnect`."""

__all__ = [
    "SupportsReset",
    "UsbtmcTransport",
    "open_usb_resource",
    "open_usbtmc_transport",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SUCCESS: Final = UsbtmcStatus.SUCCESS
_TAG_RETRIES: Final = 3  # READ_STATUS_BYTE retries while the interrupt endpoint is busy
_PIPELINE_MIN_CHUNK: Final = 64 * 1024  # bulk-IN reads of 2+ such chunks are pipelined
_READER_FAILURES: Final = 3
_ONE_TRY: Final = Reconnect(attempts=1)
_USB_IDS: Final = re.compile(r"^USB\d*::(0x[0-9a-fA-F]+|\d+)::(0x[0-9a-fA-F]+|\d+)", re.I)


@runtime_checkable
class SupportsReset(Protocol):
    """A UsbPort that can reset the device (needed for ``Quirks.reset_on_open``)."""

    async def reset(self) -> None: ...


class _StbWaiter:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value = 0
        self.error: BaseException | None = None


def _ids_from_resource(resource: str) -> tuple[int | None, int | None]:
    match = _USB_IDS.match(resource)
    if match is None:
        return None, None
    return int(match.group(1), 0), int(match.group(2), 0)


class UsbtmcTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` over a USBTMC/USB488 interface.

    Construct with :meth:`open` / :func:`open_usbtmc_transport` (the constructor does no
    I/O and starts nothing). Options: ``max_transfer_size`` (bytes per bulk transfer,
    default 1 MiB), ``recovery_timeout`` (bound on one abort/clear recovery, 5 s),
    ``poll_interval`` and ``max_polls`` (CHECK_*_STATUS loops, 50 ms x 100 as Linux),
    ``drain_timeout`` (per bulk-IN drain read, 0.3 s), ``clear_on_open`` (device clear
    after GET_CAPABILITIES, so that a new session never reads what an earlier one left
    on the device; ``aiotmc.open`` sets it), ``reopen`` (a factory that opens the device
    again, for :meth:`reconnect`), ``reconnect`` (a
    :class:`~aiotmc.reconnect.Reconnect` policy: a lost or broken link is reopened
    before the next operation, and in the background after an unplug) and ``pipeline``
    (opt-in, default False: when the port supports it, keep several bulk transfers in
    flight for the rest of a large bulk-IN transfer whose TransferSize the quirks let us
    trust, and for the DEV_DEP_MSG_OUT transfers of a large message. Off by default:
    measured slower than one 1 MiB transfer at a time under QEMU/usbredir, umockdev and
    the in-process fake, where one large URB already keeps the endpoint busy).
    """

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
        self._task_group: TaskGroup | None = None
        self._restoring: anyio.Event | None = None  # set while a background reconnect runs
        self._restore_failure: Exception | None = None  # why the last one gave up
        self._adopt_port(port)
        self._vid, self._pid = _ids_from_resource(resource)
        self._capabilities = UsbtmcCapabilities()
        self._srq = SrqBroadcaster(resource)
        self._stb_tags = StbTag()
        self._stb_waiters: dict[int, _StbWaiter] = {}
        self._reader_scope: anyio.CancelScope | None = None
        self._reader_done: anyio.Event | None = None
        self._reader_error: BaseException | None = None
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

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        port: UsbPort,
        *,
        resource: str,
        quirks: Quirks | None = None,
        **options: Any,
    ) -> AsyncIterator[UsbtmcTransport]:
        """Open a transport over an opened ``port``; closes the port on exit.

        ``quirks=None`` looks the device up in :data:`~aiotmc.protocol.quirks.KNOWN_QUIRKS`
        by the VID/PID in ``resource``. Reads GET_CAPABILITIES (a device that refuses it
        is treated as plain USBTMC) and starts the interrupt-IN reader.
        """
        if quirks is None:
            quirks = quirks_for(*_ids_from_resource(resource))
        transport = cls(port, resource=resource, quirks=quirks, **options)
        failure: BaseException | None = None
        try:
            await transport._initialize(clear=transport._clear_on_open)
            async with anyio.create_task_group() as tg:
                transport._task_group = tg
                if transport._interrupt_endpoint is not None:
                    await tg.start(transport._interrupt_reader)
                try:
                    yield transport
                except BaseException as exc:  # re-raised below, outside the task group
                    failure = exc
                finally:
                    await transport.aclose()
                    tg.cancel_scope.cancel()
        finally:
            await transport.aclose()
        if failure is not None:
            raise failure

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

    # -- MessageTransport ------------------------------------------------------------------------

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Send ``parts`` as one message: one bulk transfer per ``max_transfer_size`` chunk.

        Checkpoints. Raises WriteTimeout (deadline), UsbStallError, ConnectionLostError,
        LocalProtocolError (empty message with ``end=True``); a timeout or cancellation
        aborts the transfer in flight first.
        """
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            transfers = self._conn.send_message(parts, end=end)
            await self._within(deadline, WriteTimeout, self._send(transfers, end))
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False

    async def _send(self, transfers: list[bytes], end: bool) -> None:
        if not transfers:
            await checkpoint()
        port = self._port
        out = self._out
        last = len(transfers) - 1
        pipelined = self._pipelined
        if pipelined is not None and last > 0:
            # Several DEV_DEP_MSG_OUT transfers in flight. If interrupted, abort the bTag
            # of the first one not completed and clear: the device may hold part of the
            # message.
            completed = [False] * len(transfers)
            first = 0

            def sent(index: int) -> None:
                nonlocal first
                completed[index] = True
                while first <= last and completed[first]:
                    first += 1
                out.inflight = transfers[first][1] if first <= last else None

            out.inflight = transfers[0][1]
            out.partial = True
            await pipelined.bulk_out_many(transfers, sent)
            out.inflight = None
            out.partial = not end
            if end:
                self._last_write_end = anyio.current_time()
            return
        for index, transfer in enumerate(transfers):
            out.inflight = transfer[1]
            if index < last or not end:
                # If this is interrupted after the device took the whole transfer (the
                # abort then finds nothing in progress), the device holds part of a
                # message: the recovery must clear it, or the next message is appended.
                out.partial = True
            await port.bulk_out(transfer)
            out.inflight = None
            out.partial = not (end and index == last)
        if end:
            self._last_write_end = anyio.current_time()

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

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and receive its response (send, then receive)."""
        await self.send_message((message,), deadline=deadline)
        return await self.receive_message(max_size=max_size, deadline=deadline)

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Receive one response message (terminator included).

        Raises RemoteProtocolError if it exceeds ``max_size`` (after consuming the rest) or
        the device breaks framing (after resynchronising with an abort); ReadTimeout past
        ``deadline`` (after aborting the transfer).
        """
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            chunks: list[memoryview] = []
            total = 0

            def sink(view: memoryview) -> None:
                nonlocal total
                total += len(view)
                if total <= max_size:
                    chunks.append(view)

            def want() -> int:  # the connection caps each transfer
                return max_size + 1 - total if total <= max_size else self._max_transfer_size

            await self._within(deadline, ReadTimeout, self._receive(sink, want))
            if total > max_size:
                raise RemoteProtocolError(
                    f"response of {total} bytes exceeds max_size={max_size}; discarded"
                )
            if len(chunks) == 1:
                return chunks[0].tobytes()
            return b"".join(chunks)
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a response holding one IEEE 488.2 block; the payload goes into ``into``.

        Returns the payload (a view of ``into`` or of a new buffer). The whole message is
        consumed before RemoteProtocolError (not a block, too large, truncated) or
        LocalProtocolError (does not fit ``into``) is raised.
        """
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            sink = BlockSink(into, max_size, self.quirks.terminator)
            slack = 32  # block header and terminator

            def want() -> int:  # the connection caps each transfer
                header = sink.header
                length = None if header is None else header.payload_length
                if length is not None and sink.pos < length and sink.error is None:
                    return max(length - sink.pos + slack, 1)
                # Past the payload (normally nothing more comes), or a broken message:
                # large requests, so that whatever follows drains in few transfers.
                return max(max_size + slack - sink.pos, self._max_transfer_size)

            await self._within(deadline, ReadTimeout, self._receive(sink, want))
            return sink.result()
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False

    async def _receive(self, sink: Callable[[memoryview], None], want: Callable[[], int]) -> None:
        conn = self._conn
        port = self._port
        delay = self.quirks.write_read_delay
        if delay and self._last_write_end is not None:
            wait = self._last_write_end + delay - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait + 0.001)
        await port.bulk_out(conn.request_response(want()))
        data: BytesLike
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                # ``data`` keeps the previous read's buffer until the next one arrives:
                # freeing it first makes the allocator unmap and remap (page faults).
                size = conn.next_read_size()
                pipelined = self._pipelined
                if pipelined is not None and size >= 2 * self._min_chunk and conn.read_is_exact:
                    data = await self._read_pipelined(pipelined, size)
                else:
                    data = await port.bulk_in(size)
                conn.receive_bulk_in(data)
            elif type(event) is ResponseData:
                sink(event.data)
            elif type(event) is NeedRequest:
                await port.bulk_out(conn.request_response(want()))
            else:
                assert type(event) is EndOfMessage
                return

    async def _read_pipelined(self, port: PipelinedUsbPort, size: int) -> memoryview:
        """One bulk-IN read of ``size`` bytes as several transfers in flight at once.

        Only for the rest of a transfer of known length (``read_is_exact``): the device
        ends it with a short packet in the last chunk, so nothing arrives for the chunks
        a short transfer leaves behind (they are cancelled).
        """
        mps = port.max_packet_size
        chunk = max(self._min_chunk, -(-size // (PIPELINE_DEPTH * mps)) * mps)
        buffer = memoryview(bytearray(size))
        views = [buffer[start : start + chunk] for start in range(0, size, chunk)]
        lengths = await port.bulk_in_into(views)
        return buffer[: sum(lengths)]

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """USB488 READ_STATUS_BYTE; the answer comes on interrupt-IN when there is one.

        Raises UnsupportedOperation on a plain USBTMC interface, ReadTimeout past
        ``deadline`` (a late answer is dropped by the interrupt reader).
        """
        if not self._capabilities.usb488:
            raise UnsupportedOperation(f"{self._resource}: not a USB488 interface (no status byte)")
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            return await self._within(deadline, ReadTimeout, self._read_stb())
        finally:
            self._busy = False

    async def _read_stb(self) -> int:
        port = self._port
        interface = port.interface_number
        use_interrupt = self._interrupt_endpoint is not None and self._reader_scope is not None
        for attempt in range(_TAG_RETRIES + 1):
            tag = self._stb_tags.next()
            waiter: _StbWaiter | None = None
            if use_interrupt:
                if self._reader_error is not None:
                    raise self._reader_error
                waiter = self._stb_waiters[tag] = _StbWaiter()
            try:
                reply = parse_read_status_byte(
                    await port.control(read_status_byte_request(tag, interface))
                )
                if reply.status is UsbtmcStatus.INTERRUPT_IN_BUSY and attempt < _TAG_RETRIES:
                    await anyio.sleep(self._poll_interval)
                    continue
                if reply.status is not _SUCCESS:
                    raise RemoteProtocolError(f"READ_STATUS_BYTE returned {reply.status.name}")
                if reply.tag != tag:
                    raise RemoteProtocolError(
                        f"READ_STATUS_BYTE answered bTag {reply.tag}, asked {tag}"
                    )
                if waiter is None:
                    return reply.status_byte
                await waiter.event.wait()
                if waiter.error is not None:
                    raise waiter.error
                return waiter.value
            finally:
                self._stb_waiters.pop(tag, None)
        raise RemoteProtocolError("READ_STATUS_BYTE: the interrupt endpoint stays busy")

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """USB488 TRIGGER message (raises UnsupportedOperation if the device lacks it)."""
        if not (self._capabilities.usb488 and self._capabilities.trigger):
            raise UnsupportedOperation(f"{self._resource}: the device has no USB488 TRIGGER")
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            message = self._conn.trigger()
            await self._within(deadline, WriteTimeout, self._send([message], False))
            self._out.partial = False
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear (INITIATE_CLEAR / CHECK_CLEAR_STATUS / clear bulk-OUT halt).

        On failure the transport is broken and SessionBrokenError is raised; a clear that
        is cancelled or times out part-way (WriteTimeout) is finished (shielded, bounded)
        before the cancellation or timeout propagates.
        """
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            await self._within(deadline, WriteTimeout, self._recovery.device_clear())
            self._settled()
        except AiotmcTimeout as exc:
            await self._after_error(exc, force_clear=True)
            raise
        except Exception as exc:
            if isinstance(exc, ConnectionLostError):
                self._lost = exc
                raise
            self._broken = f"device clear failed: {exc}"
            raise SessionBrokenError(
                f"device clear failed ({exc}); reopen the instrument", resource=self._resource
            ) from exc
        except BaseException as exc:
            await self._after_error(exc, force_clear=True)
            raise
        finally:
            self._busy = False

    async def set_remote(self, remote: bool, *, lockout: bool = False) -> None:
        """REN_CONTROL (+ LOCAL_LOCKOUT), or GO_TO_LOCAL + REN off for ``remote=False``."""
        caps = self._capabilities
        if not (caps.usb488 and caps.ren_control):
            raise UnsupportedOperation(f"{self._resource}: no USB488 remote/local control")
        interface = self._port.interface_number
        if remote:
            requests = [ren_control_request(True, interface)]
            if lockout:
                requests.append(local_lockout_request(interface))
        else:
            requests = [go_to_local_request(interface), ren_control_request(False, interface)]
        self._begin()
        try:
            for request in requests:
                status = parse_status(await self._port.control(request))
                if status is not _SUCCESS:
                    raise RemoteProtocolError(f"request {request.request} returned {status.name}")
        finally:
            self._busy = False

    async def indicator_pulse(self) -> None:
        """Blink the device's activity indicator (USBTMC INDICATOR_PULSE)."""
        if not self._capabilities.indicator_pulse:
            raise UnsupportedOperation(f"{self._resource}: no INDICATOR_PULSE")
        self._begin()
        try:
            status = parse_status(await self._port.control(self._conn.indicator_pulse()))
            if status is not _SUCCESS:
                raise RemoteProtocolError(f"INDICATOR_PULSE returned {status.name}")
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """Stop the interrupt reader and close the port; idempotent, shielded."""
        if self._closed:
            await checkpoint()
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._reader_scope is not None:
                self._reader_scope.cancel()
                if self._reader_done is not None:
                    with anyio.move_on_after(1.0):
                        await self._reader_done.wait()
            self._fail_waiters(anyio.ClosedResourceError())
            self._srq.close()
            await self._close_port()

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
        if self._policy is None or self._reopen is None or self._closed or self._busy:
            return
        restoring = self._restoring
        if restoring is not None:  # the background reconnect is at it: wait for it
            with anyio.CancelScope(deadline=deadline) as scope:
                await restoring.wait()
            if scope.cancelled_caught:
                raise ConnectTimeout("the link was not restored in time", resource=self._resource)
            failure = self._restore_failure
            if failure is not None and (self._lost is not None or self._broken is not None):
                raise ConnectError(str(failure), resource=None) from failure
            return
        await self.reconnect(deadline=deadline)

    def _schedule_reconnect(self) -> None:
        """After an unplug, under a policy: reconnect without waiting for an operation,
        so that service-request subscribers hear from a replugged device."""
        if (
            self._policy is None
            or self._reopen is None
            or self._closed
            or self._task_group is None
            or self._restoring is not None
        ):
            return
        self._restoring = anyio.Event()
        self._task_group.start_soon(self._background_reconnect, self._restoring)

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
            done.set()

    async def _replace_port(self) -> None:
        """One reconnect try (``_busy`` is held by the caller)."""
        assert self._reopen is not None
        self._lost = self._lost or ConnectionLostError("reconnecting", resource=self._resource)
        await self._stop_reader()
        self._fail_waiters(ConnectionLostError("the link is being replaced"))
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
            self._reader_error = None
            self._out.inflight = None
            self._out.partial = False
            self._last_write_end = None
            await self._initialize(clear=True)
            if self._interrupt_endpoint is not None and self._task_group is not None:
                await self._task_group.start(self._interrupt_reader)
        except BaseException:
            if self._port_stack is not stack:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
            raise
        self._lost = None
        self.reconnects += 1
        logger.info("%s: link replaced (reconnect %d)", self._resource, self.reconnects)

    async def _stop_reader(self) -> None:
        scope, done = self._reader_scope, self._reader_done
        self._reader_scope = self._reader_done = None
        if scope is not None:
            scope.cancel()
            if done is not None and not done.is_set():
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    await done.wait()

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

    # -- recovery ------------------------------------------------------------------------------

    async def _after_error(self, exc: BaseException, *, force_clear: bool = False) -> None:
        """Resynchronise after ``exc`` interrupted an operation (shielded, bounded)."""
        if self._closed or isinstance(exc, (LocalProtocolError, anyio.ClosedResourceError)):
            return
        if isinstance(exc, ConnectionLostError):
            self._lost = exc
            return
        plan = self._recovery.plan(exc, force_clear)
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

    # -- the interrupt-IN reader ----------------------------------------------------------

    async def _interrupt_reader(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        done = self._reader_done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._reader_scope = scope
                task_status.started()
                await self._read_interrupts()
        finally:
            done.set()

    async def _read_interrupts(self) -> None:
        port = self._port
        endpoint = self._interrupt_endpoint
        assert endpoint is not None
        failures = 0
        while True:
            try:
                data = await port.interrupt_in(self._interrupt_size)
            except ConnectionLostError as exc:
                self._lost = exc
                self._reader_error = exc
                self._fail_waiters(exc)
                self._schedule_reconnect()
                return
            except anyio.ClosedResourceError as exc:
                self._reader_error = exc
                self._fail_waiters(exc)
                return
            except Exception as exc:
                failures += 1
                logger.warning("%s: interrupt-IN failed: %s", self._resource, exc)
                if failures > _READER_FAILURES:
                    self._reader_error = TransportError(
                        f"interrupt-IN reader stopped: {exc}", resource=self._resource
                    )
                    self._fail_waiters(self._reader_error)
                    return
                try:
                    if isinstance(exc, UsbStallError):
                        await port.clear_halt(endpoint)
                    else:
                        await anyio.sleep(self._poll_interval)
                except Exception:
                    logger.debug("clear_halt on the interrupt endpoint failed", exc_info=True)
                continue
            failures = 0
            try:
                note = parse_interrupt(data)
            except RemoteProtocolError as exc:
                logger.warning("%s: %s", self._resource, exc)
                continue
            if type(note) is SrqNotification:
                self._srq.publish(note.status)
            elif type(note) is StatusByteReply:
                waiter = self._stb_waiters.get(note.tag)
                if waiter is not None and not waiter.event.is_set():
                    waiter.value = note.status
                    waiter.event.set()
                else:
                    logger.debug("%s: late status byte reply, bTag %d", self._resource, note.tag)
            else:
                logger.debug("%s: vendor notification %r", self._resource, note)

    def _fail_waiters(self, error: BaseException) -> None:
        for waiter in self._stb_waiters.values():
            if not waiter.event.is_set():
                waiter.error = error
                waiter.event.set()
