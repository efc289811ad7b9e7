"""The raw-socket SCPI transport: opening, its message path, closing (this module).

Hot path (see docs/performance.md): a non-blocking socket, ``send``/``recv_into`` tried
first, and a wait only when the socket is not ready, done by the cheapest receiver for the
running loop (``_receivers``). anyio's high-level streams cost several times a raw round
trip, so they are not used here.

Block payloads are read with exact-size ``recv_into`` calls straight into the destination
buffer; uploads go out with ``sendmsg`` over the caller's buffers, never concatenated.

Fairness: an operation that finds its data already there (or a send the socket takes at
once) completes without waiting, so every 16th operation ends with a schedule point
(``_fastpath.schedule_point_due``), shielded from cancellation since the operation is
complete; the cancellation check before an operation is the Instrument's.

Desynchronisation: an operation cancelled (or timed out) part-way may leave a late or
partial answer on the connection. The transport then marks itself *stale*; its next
operation closes the socket and connects again, so a stale answer can never reach a later
exchange. (Raw sockets have no device clear; :meth:`clear` does the same reconnect.)

:class:`SocketTransport` is built in layers (subclasses, for the reason given in
:mod:`._core`), each in its module with one job: :mod:`._core` (the link's state and
socket primitives, one message through the decoder), :mod:`._reconnect` (taking the link,
replacing a stale connection), :mod:`._blocks` (block responses straight into a buffer),
:mod:`._caller_thread` (``aiotmc.sync``'s calling-thread fast path), and this module
(opening; messages and exchange; the control operations a raw socket lacks; closing).
:mod:`._connect` (``connect_socket``) holds plain functions.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint

from ..._exceptions import UnsupportedOperation
from ..._fastpath import schedule_point_due
from ...protocol.framing import MessageDecoder
from ...reconnect import Reconnect
from .._receivers import receiver_for
from ..base import BytesLike, TransportInfo
from ._caller_thread import CallerThreadIO
from ._connect import DEFAULT_PORT, connect_socket
from ._early import SocketEarlyExchange

if TYPE_CHECKING:
    from ...srq import SrqBroadcaster

__all__ = ["SocketTransport"]

#: aclose() while another thread is in a blocking operation: how long to wait for it to
#: end after the socket was shut down (it ends at once; the bound is a safety net).
_BLOCKING_CLOSE_WAIT: Final = 5.0


class SocketTransport(CallerThreadIO):
    """A :class:`~aiotmc.transports.base.MessageTransport` over a raw TCP socket."""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        resource: str | None = None,
        terminator: bytes = b"\n",
        connect_timeout: float | None = 10.0,
        reconnect: Reconnect | None = None,
    ) -> SocketTransport:
        """Connect and return a transport (the caller must ``aclose`` it).

        ``reconnect``: retry policy for replacing the connection when it must be
        replaced (stale after a cancellation, lost); without one a single try is made.
        """
        sock = await connect_socket(host, port, timeout=connect_timeout)
        name = resource or f"TCPIP0::{host}::{port}::SOCKET"
        return cls(
            sock,
            host=host,
            port=port,
            resource=name,
            terminator=terminator,
            connect_timeout=connect_timeout,
            reconnect=reconnect,
        )

    # -- MessageTransport ------------------------------------------------------------------

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster | None:
        """Raw sockets have no service-request channel."""
        return None

    def set_read_termination(self, terminator: bytes) -> None:
        """Frame later responses on ``terminator`` (bytes already buffered are kept)."""
        if not terminator:
            raise ValueError("a raw socket needs a read termination to frame messages")
        if terminator == self._terminator:
            return
        if self._busy or not self._decoder.at_message_start:
            raise anyio.BusyResourceError("cannot change the terminator in mid-message")
        pending = bytes(self._decoder.buffered)
        self._terminator = terminator
        self._decoder = MessageDecoder(terminator=terminator)
        if pending:
            self._decoder.receive_data(pending)

    @property
    def stale(self) -> bool:
        """True when the next operation will reconnect first."""
        return self._stale

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Send ``parts`` back to back with ``sendmsg`` (no concatenation)."""
        sock = self._claim() or await self._begin(deadline)
        try:
            if len(parts) == 1:
                part = parts[0]
                sent = self._send_now(sock, part)  # the common case: one short command
                if sent < len(part):
                    await self._sendall(sock, [memoryview(part)[sent:]], deadline)
            else:
                await self._sendall(sock, parts, deadline)
            # The first receive looks for the answer only as the probe says (_probe.py).
            self._fresh = not self._decoder.pending
        except BaseException:
            self._stale = True
            raise
        finally:
            self._busy = False
        if schedule_point_due():  # a send the socket took at once never waited
            await cancel_shielded_checkpoint()

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Receive one message, terminator included."""
        sock = self._claim() or await self._begin(deadline)
        try:
            message = await self._receive_message(sock, max_size, deadline)
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._busy = False
        if schedule_point_due():  # a message already buffered never waited
            await cancel_shielded_checkpoint()
        return message

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and receive its response, in one coroutine on the hot path.

        Behaves exactly as :meth:`send_message` then :meth:`receive_message`; the common
        case (connection in step, nothing buffered, the command sent whole, the answer in
        one ``recv``) just skips their layers of calls.
        """
        sock = self._sock
        receiver = self._receiver
        decoder = self._decoder
        if self._busy or self._stale or sock is None or self._closed or decoder.pending:
            await self.send_message((message,), deadline=deadline)
            return await self.receive_message(max_size=max_size, deadline=deadline)
        self._busy = True
        try:
            sent = self._send_now(sock, message)
            if sent < len(message):
                await self._sendall(sock, [memoryview(message)[sent:]], deadline)
            chunk = self._chunk
            try:
                n = self._answer_already_there(sock, chunk)
                if n < 0:  # not there, or the probe skipped the look: wait, no extra try
                    if receiver is None:
                        receiver = self._receiver = receiver_for(sock)
                    n = await receiver.recv_into(chunk, deadline, False)
            except OSError as exc:  # TimeoutError included
                raise self._receive_failed(exc) from exc
            answer = self._first_answer(n, max_size)
            if answer is None:  # more to come
                return await self._receive_message(sock, max_size, deadline)
            if schedule_point_due():  # the look may have found it: no wait so far
                await cancel_shielded_checkpoint()
            return answer
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._busy = False

    def early_exchange(
        self, message: bytes, *, max_size: int, deadline: float = math.inf
    ) -> SocketEarlyExchange:
        """The request a caller about to wait for the instrument's lock leaves in line:
        the releaser may start this exchange for it (hand-over by I/O, :mod:`._early`)."""
        return SocketEarlyExchange(self, self.exchange, message, max_size, deadline)

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Raw sockets have no serial poll; the Instrument falls back to ``*STB?``."""
        raise UnsupportedOperation("a raw socket has no bus-level status byte read")

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Raw sockets have no bus trigger; the Instrument falls back to ``*TRG``."""
        raise UnsupportedOperation("a raw socket has no bus-level trigger")

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Resynchronise by reconnecting: drops any answer still on its way."""
        await self.reconnect(deadline=deadline)

    async def aclose(self) -> None:
        """Close the socket; idempotent, never blocks.

        A thread in a blocking operation (``aiotmc.sync``'s fast path) is woken by a
        shutdown of the socket and ends with :class:`~aiotmc.ConnectionLostError`; the
        socket is closed once it has let go of it.
        """
        with self._blocking_gate:
            self._closed = True
            in_blocking = self._in_blocking
        sock = self._sock
        if in_blocking and sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            # The other thread cannot set an anyio.Event (not thread-safe): poll, bounded.
            with anyio.move_on_after(_BLOCKING_CLOSE_WAIT):
                while self._in_blocking:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
        self._drop_socket()
        await checkpoint()
