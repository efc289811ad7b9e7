"""Raw-socket SCPI over TCP (port 5025 by convention).

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
"""

from __future__ import annotations

import errno
import ipaddress
import math
import select
import socket
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint

from .._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    UnsupportedOperation,
    WriteTimeout,
)
from .._fastpath import schedule_point_due
from .._wake_threshold import wake_threshold
from ..protocol.framing import MessageDecoder
from ..protocol.ieee4882 import BlockHeader, decode_block, parse_block_header
from ..reconnect import Reconnect, retry_connect
from ..resources import ResourceName, TcpipSocket
from ._blocking import sendall_blocking, wait_blocking
from ._probe import AnswerProbe
from ._receivers import Receiver, receiver_for
from .base import BytesLike, Capabilities, TransportInfo
from .spec import LinkSettings, TransportSpec, closing_link

if TYPE_CHECKING:
    from ..srq import SrqBroadcaster

__all__ = ["DEFAULT_PORT", "SocketTransport", "connect_socket"]

DEFAULT_PORT: Final = 5025
_RECV_CHUNK: Final = 256 * 1024
#: The first read of a block response: the header and the start of the payload, which is
#: then copied once more; the rest of the payload goes straight into the target.
_BLOCK_FIRST_READ: Final = 16 * 1024
_WHITESPACE: Final = frozenset(b" \t\r\n")
_TRAILER_LIMIT: Final = 4096  # bytes kept of what follows a block (normally the terminator)
_CAPABILITIES: Final = Capabilities()
#: aclose() while another thread is in a blocking operation: how long to wait for it to
#: end after the socket was shut down (it ends at once; the bound is a safety net).
_BLOCKING_CLOSE_WAIT: Final = 5.0


async def connect_socket(host: str, port: int, *, timeout: float | None) -> socket.socket:
    """Open a non-blocking TCP connection with TCP_NODELAY, trying each address in turn."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
    try:
        with anyio.fail_after(timeout):
            infos = _literal_address(host, port) or await anyio.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            last: OSError | None = None
            for family, type_, proto, _, addr in infos:
                sock = socket.socket(family, type_, proto)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    code = sock.connect_ex(addr)
                    if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                        await anyio.wait_writable(sock)
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise OSError(code, f"{errno.errorcode.get(code, code)}: {addr}")
                    return sock
                except BaseException as exc:
                    sock.close()
                    if not isinstance(exc, OSError):
                        raise
                    last = exc
            raise ConnectError(f"cannot connect to {where}: {last}")
    except TimeoutError:
        raise ConnectTimeout(f"no connection to {where} within {timeout} s") from None
    except OSError as exc:  # getaddrinfo failures
        raise ConnectError(f"cannot connect to {where}: {exc}") from exc


def _literal_address(host: str, port: int) -> list[tuple[Any, ...]] | None:
    """What ``getaddrinfo`` answers for an IP address written out (no name to resolve),
    without its worker-thread hop; None for a name (or a scoped IPv6 address)."""
    if "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


class SocketTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` over a raw TCP socket."""

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
        sock = self._sock
        if self._busy or self._stale or sock is None or self._closed:
            sock = await self._begin(deadline)
        else:
            self._busy = True
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
        sock = self._sock
        if self._busy or self._stale or sock is None or self._closed:
            sock = await self._begin(deadline)
        else:
            self._busy = True
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
            if not n:
                raise self._closed_by_peer()
            answer = decoder.receive_and_next(chunk[:n])
            if isinstance(answer, bytes):
                if len(answer) > max_size:
                    raise _too_long(len(answer), max_size)
                if schedule_point_due():  # the look may have found it: no wait so far
                    await cancel_shielded_checkpoint()
                return answer
            return await self._receive_message(sock, max_size, deadline)  # more to come
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._busy = False

    # -- SupportsBlockingIO: the caller-thread fast path of aiotmc.sync ---------------------

    def _blocking_ready(self) -> socket.socket | None:
        """The socket, claimed for a blocking operation; None when the link is not in a
        state for one (busy, stale, closed): the caller then takes the event-loop path."""
        with self._blocking_gate:
            sock = self._sock
            if self._busy or self._stale or sock is None or self._closed:
                return None
            self._busy = self._in_blocking = True
        return sock

    def _blocking_done(self) -> None:
        with self._blocking_gate:
            self._busy = self._in_blocking = False

    def _send_blocking(
        self, sock: socket.socket, parts: Sequence[BytesLike], deadline: float
    ) -> None:
        try:
            done = sendall_blocking(sock, parts, deadline)
        except OSError as exc:
            raise self._lost("send failed", exc) from exc
        if not done:
            raise WriteTimeout(f"{self._info.resource}: could not send before the deadline")

    def _receive_blocking(self, sock: socket.socket, max_size: int, deadline: float) -> bytes:
        """One message (terminator included), waiting in this thread."""
        decoder = self._decoder
        chunk = self._chunk
        flowing = False  # once data flows, try recv before waiting (a long message)
        while True:
            message = decoder.next_message()
            if isinstance(message, bytes):
                if len(message) > max_size:
                    raise _too_long(len(message), max_size)
                return message
            if decoder.pending > max_size:  # the connection is replaced (stale) after this
                raise RemoteProtocolError(f"response exceeds max_size={max_size} bytes")
            if not flowing and not wait_blocking(sock, select.POLLIN, deadline):
                raise ReadTimeout(f"{self._info.resource}: no complete answer before the deadline")
            try:
                n = sock.recv_into(chunk)
            except BlockingIOError:
                flowing = False
                continue
            except OSError as exc:
                raise self._receive_failed(exc) from exc
            if not n:
                raise self._closed_by_peer()
            flowing = True
            decoder.receive_data(chunk[:n])

    def exchange_blocking(self, message: bytes, *, max_size: int, deadline: float) -> bytes | None:
        """:meth:`exchange` in the calling thread (``deadline``: ``time.monotonic()``);
        None when the link is not in a state for it. The caller holds the instrument's lock.
        A failure or interruption (Ctrl-C) part-way marks the link stale, as a cancellation."""
        sock = self._blocking_ready()
        if sock is None:
            return None
        try:
            self._send_blocking(sock, (message,), deadline)
            self._fresh = False
            return self._receive_blocking(sock, max_size, deadline)
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._blocking_done()

    def send_blocking(self, data: BytesLike, *, end: bool = True, deadline: float) -> bool:
        """:meth:`send_message` of one buffer in the calling thread; False when the link is
        not in a state for it."""
        sock = self._blocking_ready()
        if sock is None:
            return False
        try:
            self._send_blocking(sock, (data,), deadline)
            self._fresh = not self._decoder.pending
        except BaseException:
            self._stale = True
            raise
        finally:
            self._blocking_done()
        return True

    def receive_blocking(self, *, max_size: int, deadline: float) -> bytes | None:
        """:meth:`receive_message` in the calling thread; None when the link is not in a
        state for it."""
        sock = self._blocking_ready()
        if sock is None:
            return None
        try:
            self._fresh = False
            return self._receive_blocking(sock, max_size, deadline)
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._blocking_done()

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a block response; the payload is read straight into ``into``."""
        sock = self._sock
        if self._busy or self._stale or sock is None or self._closed:
            sock = await self._begin(deadline)
        else:
            self._busy = True
        try:
            payload = await self._receive_block(sock, into, max_size, deadline)
        except (RemoteProtocolError, LocalProtocolError):
            # Normally raised once the whole message was consumed: in step. If the framing
            # itself broke (the decoder is in an error state, or mid-message), the end of
            # the message cannot be found: replace the connection before the next exchange.
            if not self._decoder.at_message_start:
                self._stale = True
            raise
        except BaseException:
            self._stale = True
            raise
        finally:
            self._busy = False
        if schedule_point_due():  # a small block already buffered never waited
            await cancel_shielded_checkpoint()
        return payload

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Raw sockets have no serial poll; the Instrument falls back to ``*STB?``."""
        raise UnsupportedOperation("a raw socket has no bus-level status byte read")

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Raw sockets have no bus trigger; the Instrument falls back to ``*TRG``."""
        raise UnsupportedOperation("a raw socket has no bus-level trigger")

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Resynchronise by reconnecting: drops any answer still on its way."""
        await self.reconnect(deadline=deadline)

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Close the connection and connect again now (with the retry policy, if any).

        Raises ConnectError / ConnectTimeout when the instrument cannot be reached; the
        transport then stays stale and the next operation tries again.
        """
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._stale = True
        await self._begin(deadline)
        self._busy = False

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

    # -- internals ---------------------------------------------------------------------------

    async def _begin(self, deadline: float = math.inf) -> socket.socket:
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        if self._stale or self._sock is None:
            try:
                if self._policy is None:
                    await self._reconnect()
                else:
                    await retry_connect(
                        self._policy,
                        self._reconnect,
                        resource=self._info.resource,
                        deadline=deadline,
                    )
            except BaseException:
                self._busy = False
                raise
        assert self._sock is not None
        return self._sock

    async def _reconnect(self) -> None:
        self._drop_socket()
        sock = await connect_socket(self._host, self._port, timeout=self._connect_timeout)
        if self._closed:  # closed by another task while this one connected
            sock.close()
            raise anyio.ClosedResourceError
        self._sock = sock
        self._lowat = 1
        self._stale = False
        self.reconnects += 1

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        receiver, self._receiver = self._receiver, None
        self._fresh = False
        self._decoder.reset()
        if receiver is not None:
            receiver.close()
        if sock is not None:
            try:
                anyio.notify_closing(sock)
            except Exception:
                pass
            sock.close()

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
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                await self._writable(sock, deadline)
                continue
            except OSError as exc:
                raise self._lost("send failed", exc) from exc
            while sent:
                head = views[0]
                if sent >= len(head):
                    sent -= len(head)
                    views.pop(0)
                else:
                    views[0] = head[sent:]
                    sent = 0

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

    async def _receive_block(
        self, sock: socket.socket, into: memoryview | None, max_size: int, deadline: float
    ) -> memoryview:
        decoder = self._decoder
        if not decoder.pending and decoder.at_message_start:
            started = await self._receive_block_start(sock, into, max_size, deadline)
            if started is not None:
                return started
        # 1. Skip leading whitespace and parse "#<n><len>" from what is buffered. The view
        # of the decoder's buffer is released before the decoder changes: a live view would
        # make it copy the whole buffer instead of growing or trimming it in place.
        header: BlockHeader | None = None
        while header is None:
            with decoder.buffered as buffered:
                start = 0
                while start < len(buffered) and buffered[start] in _WHITESPACE:
                    start += 1
                first = buffered[start] if start < len(buffered) else None
                if first == 0x23:  # '#'
                    try:
                        header = parse_block_header(buffered[start:], max_size=max_size)
                    except RemoteProtocolError:
                        self._stale = True  # unknown length: cannot find the message's end
                        raise
            if first is not None and first != 0x23:  # not a block: consume it and complain
                head = await self._skip_message(sock, max_size, deadline)
                raise RemoteProtocolError(f"expected an IEEE 488.2 block, got {head!r}")
            if header is None:
                await self._fill(sock, deadline)
        if header.payload_length is None:  # indefinite "#0...<NL>": framed by the terminator
            # max_size bounds the payload; the message also holds "#0" and the terminator
            message = await self._receive_message(sock, max_size + _TRAILER_LIMIT, deadline)
            payload = decode_block(message, terminator=self._terminator, max_size=max_size)
            return _deliver(payload, into)
        size = header.payload_length
        decoder.consume(start + header.header_length)
        target, too_small = _block_target(into, size)
        # 2. The part already buffered, then exact-size reads straight into the target.
        have = min(decoder.pending, size)
        target[:have] = decoder.buffered[:have]
        decoder.consume(have)
        return await self._receive_block_rest(sock, target, have, too_small, deadline)

    async def _receive_block_start(
        self, sock: socket.socket, into: memoryview | None, max_size: int, deadline: float
    ) -> memoryview | None:
        """The common start of a block response, with nothing buffered: one read of at
        most :data:`_BLOCK_FIRST_READ` bytes, the header parsed where it landed, and the
        payload bytes that came with it copied once into the target (the rest of the
        payload then goes straight from the socket to the target).

        ``None``: what arrived is not a whole definite-length header; it is then in the
        decoder and the general path takes over.
        """
        first = self._chunk[:_BLOCK_FIRST_READ]
        n = await self._recv_some(sock, first, deadline)
        got = first[:n]
        start = 0
        while start < n and got[start] in _WHITESPACE:
            start += 1
        header = None
        if start < n and got[start] == 0x23:  # '#'
            try:
                header = parse_block_header(got[start:], max_size=max_size)
            except RemoteProtocolError:
                self._stale = True  # unknown length: cannot find the message's end
                raise
        if header is None or header.payload_length is None:
            self._decoder.receive_data(got)
            return None
        size = header.payload_length
        begin = start + header.header_length
        target, too_small = _block_target(into, size)
        have = min(n - begin, size)
        target[:have] = got[begin : begin + have]
        if begin + have < n:  # the terminator (or more) came along
            self._decoder.receive_data(got[begin + have :])
        return await self._receive_block_rest(sock, target, have, too_small, deadline)

    async def _receive_block_rest(
        self,
        sock: socket.socket,
        target: memoryview,
        have: int,
        too_small: int | None,
        deadline: float,
    ) -> memoryview:
        """Exact-size reads straight into ``target`` from ``have`` on, then the rest of the
        message (normally just the terminator). ``too_small``: the length of the caller's
        buffer that could not hold the block (``target`` is then a scratch buffer): raise
        once the message is consumed."""
        size = len(target)
        pos = have
        progress = self.block_progress
        if progress is not None:
            progress(pos, size)
        try:
            while pos < size:
                try:  # what is there already, without the receiver's layers
                    n = sock.recv_into(target[pos:])
                except BlockingIOError:
                    # a long rest: wake once per megabyte, not per segment batch
                    self._lowat = wake_threshold(sock, size - pos, self._lowat)
                    n = await self._recv_into(sock, target[pos:], deadline, False)
                except OSError as exc:
                    raise self._receive_failed(exc) from exc
                if n == 0:
                    raise ConnectionLostError(
                        f"connection closed after {pos} of {size} block bytes",
                        resource=self._info.resource,
                    )
                pos += n
                if progress is not None:
                    progress(pos, size)
        finally:
            if self._lowat != 1:
                self._lowat = wake_threshold(sock, 0, self._lowat)
        if not await self._terminator_alone(sock, deadline):
            rest = await self._skip_message(sock, _TRAILER_LIMIT, deadline)
            if rest.strip():
                raise RemoteProtocolError(f"unexpected bytes after the block: {rest!r}")
        if too_small is not None:
            raise LocalProtocolError(
                f"block of {size} bytes does not fit the {too_small}-byte buffer"
            )
        return target

    async def _terminator_alone(self, sock: socket.socket, deadline: float) -> bool:
        """After a block's payload, with nothing buffered: read what follows; True when it
        is exactly the terminator (the common end), else it goes to the decoder."""
        if self._decoder.pending:
            return False
        chunk = self._chunk
        try:
            n = sock.recv_into(chunk)
        except BlockingIOError:
            n = await self._recv_into(sock, chunk, deadline, False)
        except OSError as exc:
            raise self._receive_failed(exc) from exc
        if n == 0:
            raise self._closed_by_peer()
        if chunk[:n] == self._terminator:
            return True
        self._decoder.receive_data(chunk[:n])
        return False


def _block_target(into: memoryview | None, size: int) -> tuple[memoryview, int | None]:
    """Where a payload of ``size`` bytes (already checked against max_size) goes: ``into``
    or a new buffer; and the length of ``into`` when it is too small (else None)."""
    if into is None:
        return memoryview(bytearray(size)), None
    if len(into) < size:
        return memoryview(bytearray(size)), len(into)
    return into[:size], None


def _too_long(size: int, max_size: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"response of {size} bytes exceeds max_size={max_size}")


def _deliver(payload: bytes, into: memoryview | None) -> memoryview:
    if into is None:
        return memoryview(bytearray(payload))
    if len(into) < len(payload):
        raise LocalProtocolError(
            f"block of {len(payload)} bytes does not fit the {len(into)}-byte buffer"
        )
    into[: len(payload)] = payload
    return into[: len(payload)]


# -- registration ---------------------------------------------------------------------------


@asynccontextmanager
async def _open_tcp(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[SocketTransport]:
    assert isinstance(resource, TcpipSocket)
    tcp = await SocketTransport.connect(
        resource.host,
        resource.port,
        resource=str(resource),
        terminator=settings.read_termination.encode(settings.encoding),
        connect_timeout=settings.connect_timeout,
        reconnect=settings.reconnect,
    )
    async with closing_link(tcp) as opened:
        yield opened


TRANSPORT: Final = TransportSpec(
    kind="tcpip-socket",
    summary="SCPI over a raw TCP socket",
    example="TCPIP0::192.0.2.7::5025::SOCKET",
    open=_open_tcp,
)
"""The raw-socket transport's registration (see :mod:`aiotmc.registry`)."""
