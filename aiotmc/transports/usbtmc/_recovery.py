"""USBTMC resynchronisation after an interrupted operation: what to undo, and undoing it.

:meth:`UsbtmcRecovery.plan` reads what an operation that stopped part-way left on the bus
(the connection's state, the bulk-OUT progress, a stalled endpoint);
:meth:`UsbtmcRecovery.run` undoes it: clear the endpoint halt, abort bulk-OUT and bulk-IN
(retrying with the bTag the device names, draining bulk-IN to a short packet), and
escalate to a device clear when an abort fails, a message was left half sent or a bulk
endpoint halted. :meth:`UsbtmcRecovery.nothing_sent_after_halt` tells the transport
whether a bulk-IN halt may be answered with a new request. Time bounds, shielding and
what a failure means for the session are the transport's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import anyio

from ..._exceptions import RemoteProtocolError, UsbStallError, UsbTransferError
from ...protocol.usbtmc import (
    UsbtmcConnection,
    UsbtmcState,
    UsbtmcStatus,
    parse_check_abort_bulk_in,
    parse_check_abort_bulk_out,
    parse_check_clear_status,
    parse_initiate_abort,
    parse_status,
)

if TYPE_CHECKING:
    from ..._usb.port import UsbPort

__all__ = ["BulkOutProgress", "RecoveryPlan", "UsbtmcRecovery"]

# The transport's logger: recovery records keep the name they had inside the transport.
logger = logging.getLogger("aiotmc.transports.usbtmc")

_SUCCESS: Final = UsbtmcStatus.SUCCESS
_PENDING: Final = UsbtmcStatus.PENDING
_TAG_RETRIES: Final = 3
_DRAIN_SIZE: Final = 64 * 1024


@dataclass(slots=True)
class BulkOutProgress:
    """How far the message being sent got: the transport's send path writes it, the
    recovery reads it (and ends a half-sent message under ``Quirks.clear_hangs``)."""

    inflight: int | None = None  # bTag of the DEV_DEP_MSG_OUT transfer in flight
    partial: bool = False  # the device may hold part of a message: a clear must drop it


@dataclass(slots=True)
class RecoveryPlan:
    """What an interrupted operation left behind on the bus."""

    in_tag: int | None = None  # abort bulk-IN for this request
    out_tag: int | None = None  # abort bulk-OUT for this transfer
    stalled: int | None = None  # clear this endpoint's halt first
    clear: bool = False  # a message is half sent, or a clear was interrupted


@dataclass(slots=True, kw_only=True)
class UsbtmcRecovery:
    """Aborts and device clear over one opened link (a reconnect makes a new one)."""

    port: UsbPort
    conn: UsbtmcConnection
    out: BulkOutProgress  # shared with the transport's send path
    clear_hangs: bool  # Quirks.clear_hangs: aborts and endpoint halts, no INITIATE_CLEAR
    poll_interval: float  # between CHECK_*_STATUS polls
    max_polls: int  # CHECK_*_STATUS polls (and drain reads) before giving up
    drain_timeout: float  # per bulk-IN drain read
    resource: str  # names the device in logs
    _drain_size: int = field(init=False)

    def __post_init__(self) -> None:
        mps = self.port.max_packet_size
        self._drain_size = -(-_DRAIN_SIZE // mps) * mps

    def plan(
        self, exc: BaseException, force_clear: bool, in_tag: int | None = None
    ) -> RecoveryPlan | None:
        """What to undo after ``exc``; None if nothing is in flight (a response left
        between two transfers is forgotten: the device drops its rest at the next message).
        ``in_tag``: a bulk-IN transfer the connection does not track (vendor-specific IN)."""
        conn = self.conn
        plan = RecoveryPlan(clear=force_clear, in_tag=in_tag)
        state = conn.state
        if state in (UsbtmcState.REQUESTED, UsbtmcState.RECEIVING, UsbtmcState.ERROR):
            plan.in_tag = conn.in_tag
        if state in (UsbtmcState.SENDING, UsbtmcState.ABORTING) or self.out.partial:
            plan.clear = True
        plan.out_tag = self.out.inflight
        if isinstance(exc, UsbStallError) and exc.endpoint in (
            self.port.bulk_in_endpoint,
            self.port.bulk_out_endpoint,
        ):
            # A halt the transport could not retry: the device may hold part of a
            # message or a response. INITIATE_CLEAR drops both (aborts would leave an
            # unread response queued, and the next message would interrupt it: -410).
            plan.stalled = exc.endpoint
            plan.clear = True
            plan.in_tag = plan.out_tag = None
        if plan == RecoveryPlan():
            if state is UsbtmcState.PARTIAL:
                conn.reset()  # the device drops the rest when the next message comes
            return None
        return plan

    async def run(self, plan: RecoveryPlan) -> None:
        """Carry out ``plan``; an abort that fails escalates to a device clear."""
        port = self.port
        logger.debug("%s: recovering %s", self.resource, plan)
        try:
            if plan.stalled is not None:
                await port.clear_halt(plan.stalled)
            if plan.out_tag is not None:
                await self._abort_bulk_out(plan.out_tag)
            if plan.in_tag is not None:
                await self._abort_bulk_in(plan.in_tag)
        except (UsbTransferError, RemoteProtocolError) as exc:
            logger.info("%s: abort failed (%s); escalating to device clear", self.resource, exc)
            plan.clear = True
        if plan.clear:
            await self.device_clear()

    async def nothing_sent_after_halt(self, tag: int) -> bool:
        """After a bulk-IN halt hit request ``tag`` before any byte of its response
        arrived: clear the halt and ask the device (INITIATE_ABORT_BULK_IN) whether it
        had started that transfer. True (FAILED: nothing in progress): the response is
        still queued whole and a new request gets it. False: it had started (lost
        packets; the abort is completed here) or answered otherwise: clear the device."""
        port, conn = self.port, self.conn
        await port.clear_halt(port.bulk_in_endpoint)
        reply = parse_initiate_abort(await port.control(conn.initiate_abort_bulk_in(tag)))
        if reply.status is UsbtmcStatus.FAILED:
            return True
        if reply.status is _SUCCESS:
            await self._finish_abort_bulk_in()
        return False

    async def _abort_bulk_in(self, tag: int) -> None:
        """INITIATE_ABORT_BULK_IN (retrying with the device's bTag), drain, CHECK."""
        port, conn = self.port, self.conn
        for _ in range(_TAG_RETRIES):
            reply = parse_initiate_abort(await port.control(conn.initiate_abort_bulk_in(tag)))
            if reply.status is _SUCCESS:
                break
            if reply.status is UsbtmcStatus.FAILED:
                return  # no transfer in progress and nothing queued
            if reply.status is UsbtmcStatus.TRANSFER_NOT_IN_PROGRESS:
                if reply.tag not in (0, tag):
                    tag = reply.tag  # the device has another bTag in progress: abort that
                    continue
                await self._drain_bulk_in()  # nothing in progress but data queued
                return
            raise RemoteProtocolError(f"INITIATE_ABORT_BULK_IN returned {reply.status.name}")
        else:
            raise RemoteProtocolError("INITIATE_ABORT_BULK_IN: the device keeps naming other bTags")
        await self._finish_abort_bulk_in()

    async def _finish_abort_bulk_in(self) -> None:
        """After INITIATE_ABORT_BULK_IN succeeded: drain, CHECK_ABORT_BULK_IN_STATUS."""
        port, conn = self.port, self.conn
        await self._drain_bulk_in()
        for _ in range(self.max_polls):
            check = parse_check_abort_bulk_in(await port.control(conn.check_abort_bulk_in_status()))
            if check.status is _SUCCESS:
                return
            if check.status is not _PENDING:
                raise RemoteProtocolError(
                    f"CHECK_ABORT_BULK_IN_STATUS returned {check.status.name}"
                )
            if check.more_data:
                await self._drain_bulk_in()
            else:
                await anyio.sleep(self.poll_interval)
        raise RemoteProtocolError(
            f"CHECK_ABORT_BULK_IN_STATUS still PENDING after {self.max_polls} polls"
        )

    async def _abort_bulk_out(self, tag: int) -> None:
        """INITIATE_ABORT_BULK_OUT (retrying with the device's bTag), CHECK, clear halt."""
        port, conn = self.port, self.conn
        try:
            for _ in range(_TAG_RETRIES):
                reply = parse_initiate_abort(await port.control(conn.initiate_abort_bulk_out(tag)))
                if reply.status is _SUCCESS:
                    break
                if reply.status is UsbtmcStatus.FAILED:
                    return  # the transfer had completed or never started
                if reply.status is UsbtmcStatus.TRANSFER_NOT_IN_PROGRESS and reply.tag not in (
                    0,
                    tag,
                ):
                    tag = reply.tag
                    continue
                raise RemoteProtocolError(f"INITIATE_ABORT_BULK_OUT returned {reply.status.name}")
            else:
                raise RemoteProtocolError(
                    "INITIATE_ABORT_BULK_OUT: the device keeps naming other bTags"
                )
            for _ in range(self.max_polls):
                check = parse_check_abort_bulk_out(
                    await port.control(conn.check_abort_bulk_out_status())
                )
                if check.status is _SUCCESS:
                    return
                if check.status is not _PENDING:
                    raise RemoteProtocolError(
                        f"CHECK_ABORT_BULK_OUT_STATUS returned {check.status.name}"
                    )
                await anyio.sleep(self.poll_interval)
            raise RemoteProtocolError(
                f"CHECK_ABORT_BULK_OUT_STATUS still PENDING after {self.max_polls} polls"
            )
        finally:
            await port.clear_halt(port.bulk_out_endpoint)

    async def _drain_bulk_in(self) -> None:
        """Read bulk-IN until a short packet (each read bounded by ``drain_timeout``)."""
        port = self.port
        size = self._drain_size
        mps = port.max_packet_size
        for _ in range(self.max_polls):
            with anyio.move_on_after(self.drain_timeout):
                data = await port.bulk_in(size)
                if len(data) < size or len(data) % mps:
                    return
                continue
            return  # nothing more came

    async def device_clear(self) -> None:
        """INITIATE_CLEAR, CHECK_CLEAR_STATUS until not PENDING, clear the bulk-OUT halt
        (under ``clear_hangs``: aborts and endpoint halts instead)."""
        port, conn = self.port, self.conn
        if self.clear_hangs:
            await self._clear_without_initiate_clear()
            return
        status = parse_status(await port.control(conn.initiate_clear()))
        if status is not _SUCCESS:
            raise RemoteProtocolError(f"INITIATE_CLEAR returned {status.name}")
        for _ in range(self.max_polls):
            check = parse_check_clear_status(await port.control(conn.check_clear_status()))
            if check.status is _SUCCESS:
                break
            if check.status is not _PENDING:
                raise RemoteProtocolError(f"CHECK_CLEAR_STATUS returned {check.status.name}")
            if check.more_data:
                await self._drain_bulk_in()
            else:
                await anyio.sleep(self.poll_interval)
        else:
            raise RemoteProtocolError(
                f"CHECK_CLEAR_STATUS still PENDING after {self.max_polls} polls"
            )
        await port.clear_halt(port.bulk_out_endpoint)

    async def _clear_without_initiate_clear(self) -> None:
        """``Quirks.clear_hangs``: resynchronise with aborts and endpoint halts only."""
        port, conn = self.port, self.conn
        if conn.in_tag:
            await self._abort_bulk_in(conn.in_tag)
        if conn.out_tag:
            await self._abort_bulk_out(conn.out_tag)
        if self.out.partial:
            # No INITIATE_CLEAR to drop a half-sent message: end it so framing resumes.
            conn.reset()
            for transfer in conn.send_message(b"\n"):
                await port.bulk_out(transfer)
            self.out.partial = False
        await port.clear_halt(port.bulk_in_endpoint)
