"""USBTMC messages: DEV_DEP_MSG_OUT to send, REQUEST_DEV_DEP_MSG_IN / DEV_DEP_MSG_IN to
receive, and the USB488 TRIGGER message.

:class:`UsbtmcMessages` implements the message half of
:class:`~aiotmc.transports.base.MessageTransport` for the USBTMC transport: one bulk-OUT
transfer per ``max_transfer_size`` chunk of a message (several in flight with
``pipeline=True``), responses read transfer by transfer into a sink (the caller's list of
views, or a :class:`~._block_sink.BlockSink` that writes a block's payload into the
caller's buffer). An operation that stops part-way is resynchronised by
:meth:`~._session.UsbtmcSession._after_error` before the error propagates.

Endpoint halts (docs/reliability.md, "USB endpoint halts"): a bulk-IN halt before any
byte of a response arrived is cleared and the response requested again (a read retry,
not a replay of the command), when the device confirms it had not started sending; a
bulk-OUT halt on a one-packet transfer that starts a message (the device cannot hold any
of it) is cleared and the transfer sent again. Once per operation: any other halt raises
UsbStallError after a device clear.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import anyio
from anyio.lowlevel import checkpoint

from ..._exceptions import (
    ReadTimeout,
    RemoteProtocolError,
    UnsupportedOperation,
    UsbStallError,
    UsbTransferError,
    WriteTimeout,
)
from ..._types import BytesLike
from ..._usb.port import PIPELINE_DEPTH, PipelinedUsbPort
from ...protocol.usbtmc import (
    NEED_DATA,
    EndOfMessage,
    NeedRequest,
    ResponseData,
    UsbtmcState,
)
from ._block_sink import BlockSink
from ._link import UsbtmcLink

__all__ = ["UsbtmcMessages"]

logger = logging.getLogger("aiotmc.transports.usbtmc")


class UsbtmcMessages(UsbtmcLink):
    """Sending and receiving messages and blocks (and TRIGGER) over a USBTMC link."""

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
            starts = self._conn.state is not UsbtmcState.SENDING
            transfers = self._conn.send_message(parts, end=end)
            await self._within(deadline, WriteTimeout, self._send(transfers, end, starts))
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False

    async def _send(self, transfers: list[bytes], end: bool, starts: bool) -> None:
        """``starts``: the first transfer begins a message (the device holds none of it)."""
        self._stall_retry = starts
        if not transfers:
            await checkpoint()
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
            await self._bulk_out(transfer)
            self._stall_retry = False
            out.inflight = None
            out.partial = not (end and index == last)
        if end:
            self._last_write_end = anyio.current_time()

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
        self._stall_retry = True
        await self._bulk_out(conn.request_response(want()))
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
                    try:
                        data = await port.bulk_in(size)
                    except UsbStallError as exc:
                        await self._retry_request(exc, want)
                        continue
                conn.receive_bulk_in(data)
            elif type(event) is ResponseData:
                sink(event.data)
            elif type(event) is NeedRequest:
                await self._bulk_out(conn.request_response(want()))
            else:
                assert type(event) is EndOfMessage
                return

    async def _bulk_out(self, transfer: bytes) -> None:
        """One bulk-OUT transfer. A halt on a transfer of one packet (the device took
        none of it: a packet is accepted or refused whole) is cleared and the transfer
        sent again, once per operation and only where ``_stall_retry`` allows it."""
        port = self._port
        try:
            await port.bulk_out(transfer)
        except UsbStallError as exc:
            endpoint = port.bulk_out_endpoint
            if not self._stall_retry or exc.endpoint != endpoint:
                raise
            if len(transfer) > port.max_packet_size:
                raise
            self._stall_retry = False
            self.stall_retries += 1
            logger.info(
                "%s: bulk-OUT halted before the device took any of a transfer; "
                "clearing the halt and sending it again",
                self._resource,
            )
            try:
                await port.clear_halt(endpoint)
            except UsbTransferError as failure:
                raise exc from failure
            await port.bulk_out(transfer)

    async def _retry_request(self, exc: UsbStallError, want: Callable[[], int]) -> None:
        """A bulk-IN read halted: if no byte of the response had arrived and the device
        confirms it had not started sending, request the same response again (once per
        operation); else re-raise ``exc`` (``_after_error`` clears the device)."""
        port, conn = self._port, self._conn
        if (
            not self._stall_retry
            or exc.endpoint != port.bulk_in_endpoint
            or not conn.awaiting_first_byte
        ):
            raise exc
        self._stall_retry = False
        try:
            unsent = await self._recovery.nothing_sent_after_halt(conn.in_tag)
        except (UsbTransferError, RemoteProtocolError) as failure:
            raise exc from failure  # the halt is the error; _after_error clears the device
        if not unsent:
            raise exc
        self.stall_retries += 1
        logger.info("%s: bulk-IN halted before the response; requesting it again", self._resource)
        conn.reset()
        await port.bulk_out(conn.request_response(want()))

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

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """USB488 TRIGGER message (raises UnsupportedOperation if the device lacks it)."""
        if not (self._capabilities.usb488 and self._capabilities.trigger):
            raise UnsupportedOperation(f"{self._resource}: the device has no USB488 TRIGGER")
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            message = self._conn.trigger()
            await self._within(deadline, WriteTimeout, self._send([message], False, True))
            self._out.partial = False
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False
