"""The state of a raw-socket link and its socket primitives (one job).

:class:`SocketCore` holds everything a link knows (its address and options, the socket and
its receiver, the message decoder, the flags that say whether the connection is in step)
and the primitives every operation is built from: a send the socket takes at once
(:meth:`_send_now`) or in full (:meth:`_sendall`, ``sendmsg`` over the caller's buffers),
the look for an answer right after a send (:meth:`_answer_already_there`, as
:class:`~aiotmc.transports._probe.AnswerProbe` says), receiving with a deadline
(:meth:`_recv_into`, :meth:`_recv_some`, :meth:`_fill`), one message framed by the decoder
(:meth:`_receive_message`, :meth:`_skip_message`, :meth:`_discard_message`) and the typed
errors of a failed send or receive.

The transport is this class plus layers that each add one job (:mod:`._reconnect`,
:mod:`._blocks`, :mod:`._caller_thread`, then :mod:`.transport`), as subclasses rather
than separate objects: the query path (:meth:`~.transport.SocketTransport.exchange`)
reads and writes this state directly on the instance, so held elsewhere it would cost a
lookup per query, and a reconnection replaces the socket, its receiver and the decoder's
contents. Stateless helpers are plain functions (:func:`_too_long`, and
:mod:`._connect`, :mod:`._blocks`'s ``_block_target`` / ``_deliver``).
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Final

import anyio

from ..._buffers import byte_views, drop_sent
from ..._exceptions import ConnectionLostError, ReadTimeout, RemoteProtocolError, WriteTimeout
from ...protocol.framing import MessageDecoder
from ...reconnect import Reconnect
from .._probe import AnswerProbe
from .._receivers import Receiver, receiver_for
from ..base import BytesLike, Capabilities, TransportInfo

__all__ = ["SocketCore"]

_RECV_CHUNK: Final = 256 * 1024
_CAPABILITIES: Final = Capabilities()


class SocketCore:
    """A raw-socket link's state and socket primitives (see
    :class:`.transport.SocketTransport` for the arguments)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        host: str,
        port: int,
        resource: str,
        terminator: bytes = b"\n",
        connect_timeout: float | None = 10.0,
        reconnect: Reconnect | None = None,
    ) -> None:
        self._sock: socket.socket | None = sock
        self._receiver: Receiver | None = None
        self._policy = reconnect
        self._host = host
        self._port = port
        self._terminator = terminator
        self._connect_timeout = connect_timeout
        self._decoder = MessageDecoder(terminator=terminator)
        self._stale = False
        self._busy = False
        self._closed = False
        self._blocking_gate = threading.Lock()  # _closed vs a thread's blocking operation
        self._in_blocking = False  # a thread is in exchange/send/receive_blocking
        self._fresh = False
        self._lowat = 1  # the socket's SO_RCVLOWAT (see aiotmc._wake_threshold)
        self._probe = AnswerProbe()  # look for the answer right after sending?
        self._chunk = memoryview(bytearray(_RECV_CHUNK))
        self._info = TransportInfo(
            resource=resource,
            kind="tcp",
            capabilities=_CAPABILITIES,
            details={"host": host, "port": str(port)},
        )
        self.reconnects = 0  #: how many times the connection was replaced (stale or lost)
        #: SupportsBlockProgress: called with (payload bytes so far, size) during a block
        self.block_progress: Callable[[int, int], None] | None = None

    def _send_now(self, sock: socket.socket, data: BytesLike) -> int:
        """Send what the socket takes without waiting (0 when it is full)."""
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._lost("send failed", exc) from exc

    def _answer_already_there(self, sock: socket.socket, view: memoryview) -> int:
        """Right after a send: ``recv_into`` if the probe says the answer may already be
        there; -1 when it was not looked for or not there (OSError propagates)."""
        probe = self._probe
        if not probe.should_look():
            return -1
        try:
            n = sock.recv_into(view)
        except BlockingIOError:
            probe.missed()
            return -1
        probe.found()
        return n

    def _first_answer(self, n: int, max_size: int) -> bytes | None:
        """The first receive after a send put ``n`` bytes in ``_chunk``: the answer if
        they complete it (ConnectionLostError at end of stream), else None."""
        if not n:
            raise self._closed_by_peer()
        answer = self._decoder.receive_and_next(self._chunk[:n])
        if isinstance(answer, bytes):
            if len(answer) > max_size:
                raise _too_long(len(answer), max_size)
            return answer
        return None

    def _stale_unless_in_step(self, exc: BaseException) -> None:
        """After a failed receive: reconnect next time unless the failure consumed exactly
        one whole message (a protocol error at a message boundary)."""
        if not (isinstance(exc, RemoteProtocolError) and self._decoder.at_message_start):
            self._stale = True  # part of a message may still be on its way

    def _closed_by_peer(self) -> ConnectionLostError:
        pending = self._decoder.pending
        detail = f" after {pending} bytes of a response" if pending else ""
        return ConnectionLostError(
            f"connection closed by the instrument{detail}", resource=self._info.resource
        )

    def _lost(self, what: str, exc: OSError) -> ConnectionLostError:
        return ConnectionLostError(f"{what}: {exc}", resource=self._info.resource)

    async def _recv_into(
        self, sock: socket.socket, view: memoryview, deadline: float, try_first: bool = True
    ) -> int:
        """``recv_into`` that waits until ``deadline`` (see ``_receivers``); 0 is EOF."""
        receiver = self._receiver
        if receiver is None:
            receiver = self._receiver = receiver_for(sock)
        try:
            return await receiver.recv_into(view, deadline, try_first)
        except OSError as exc:  # TimeoutError included
            raise self._receive_failed(exc) from exc

    def _receive_failed(self, exc: OSError) -> ReadTimeout | ConnectionLostError:
        """The typed error for a receiver's TimeoutError (deadline) or OSError."""
        if isinstance(exc, TimeoutError):
            return ReadTimeout(f"{self._info.resource}: no complete answer before the deadline")
        return self._lost("receive failed", exc)

    async def _writable(self, sock: socket.socket, deadline: float) -> None:
        if deadline == math.inf:
            await anyio.wait_writable(sock)
            return
        with anyio.CancelScope(deadline=deadline) as scope:
            await anyio.wait_writable(sock)
        if scope.cancelled_caught:
            raise WriteTimeout(f"{self._info.resource}: could not send before the deadline")

    async def _sendall(
        self, sock: socket.socket, parts: Sequence[BytesLike], deadline: float
    ) -> None:
        views = byte_views(parts)
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                await self._writable(sock, deadline)
                continue
            except OSError as exc:
                raise self._lost("send failed", exc) from exc
            drop_sent(views, sent)

    async def _recv_some(self, sock: socket.socket, view: memoryview, deadline: float) -> int:
        """Receive at least one byte into ``view`` (or raise ConnectionLostError); right
        after a send, look for the answer only as the probe says (a wait after that look
        does not try again)."""
        just_sent, self._fresh = self._fresh, False
        n = -1
        if just_sent:
            try:
                n = self._answer_already_there(sock, view)
            except OSError as exc:
                raise self._receive_failed(exc) from exc
        if n < 0:
            n = await self._recv_into(sock, view, deadline, not just_sent)
        if n == 0:
            raise self._closed_by_peer()
        return n

    async def _fill(self, sock: socket.socket, deadline: float) -> None:
        """Receive at least one byte into the decoder (or raise ConnectionLostError)."""
        chunk = self._chunk
        n = await self._recv_some(sock, chunk, deadline)
        self._decoder.receive_data(chunk[:n])

    async def _receive_message(self, sock: socket.socket, max_size: int, deadline: float) -> bytes:
        decoder = self._decoder
        while True:
            message = decoder.next_message()
            if isinstance(message, bytes):
                if len(message) > max_size:
                    raise _too_long(len(message), max_size)
                return message
            if decoder.pending > max_size:
                await self._discard_message(sock, deadline)
                raise RemoteProtocolError(f"response exceeds max_size={max_size} bytes")
            await self._fill(sock, deadline)

    async def _skip_message(self, sock: socket.socket, limit: int, deadline: float) -> bytes:
        """Consume the current message, buffering at most ``limit`` bytes of it (more is
        discarded as it arrives); return its first 40 bytes (for error messages)."""
        head = bytes(self._decoder.buffered[:40])
        try:
            message = await self._receive_message(sock, limit, deadline)
        except RemoteProtocolError:
            if not self._decoder.at_message_start:
                raise  # the framing broke: the caller marks the connection stale
            return head or b"?"  # too long: consumed and dropped
        return message[:40]

    async def _discard_message(self, sock: socket.socket, deadline: float) -> None:
        """Drop the rest of the current message, however long it turns out to be."""
        decoder = self._decoder
        decoder.discard_current()
        while not decoder.at_message_start:
            await self._fill(sock, deadline)


def _too_long(size: int, max_size: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"response of {size} bytes exceeds max_size={max_size}")
