"""A small ONC-RPC server over TCP for the simulators: the rules every served connection
follows, whatever the program (VXI-11 core, abort, portmapper).

Per connection: records are reassembled from received bytes only and bounded by the
handler's ``max_record`` (a header announcing more closes the connection, nothing is
allocated for it); ``idle_timeout`` and ``send_timeout`` close a silent client or one that
takes no reply; at most ``max_connections`` connections (others are closed at once, the
refusals logged rate-limited); hostile input closes that connection and is logged once.

Hot path as in :mod:`aiotmc.sim.server`: plain non-blocking sockets, ``recv_into`` and
``send`` tried first, a readiness wait (``_loops.readable_waiter``, ``anyio.wait_writable``)
only when not ready; the replies to every call received together go out in one send (a
pipelined device_write + device_read gets both answers at once); the idle timeout is kept by one
sweeping task per server instead of a timer per receive.

Subclasses bind their listeners in :meth:`RpcServer._bind` and handle calls with a
:data:`Handler`; :meth:`RpcServer._connection_closed` releases what a connection owned.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio
from anyio.abc import TaskGroup

from .._buffers import byte_views, drop_sent
from .._exceptions import RemoteProtocolError
from .._loops import ReadableWaiter, readable_waiter
from .._types import BytesLike
from ..protocol.framing import NEED_DATA
from ..protocol.oncrpc import (
    AcceptStat,
    RecordReassembler,
    RpcError,
    decode_call,
    encode_accepted_error,
    encode_denied,
    peek_xid,
    record_mark,
)
from ._server_io import close, listen, scratch
from ._serving import BackgroundServer

__all__ = ["Handler", "Hostile", "RpcConnection", "RpcServer"]


RECV_SIZE: Final = 64 * 1024
MAX_CALLS_KEPT: Final = 10_000  #: calls remembered in ``RpcServer.calls``
_ACCEPT_RETRY: Final = 0.05
_BATCH: Final = 64  # calls answered in a row before other connections get a turn


class _Closed(Exception):
    """The connection ends (EOF, or closed by the server)."""


@dataclass(eq=False)
class RpcConnection:
    sock: socket.socket
    channel: str
    #: the loop's cheapest readiness wait for ``sock`` (close it before the socket)
    wait_readable: ReadableWaiter
    links: set[int] = field(default_factory=set)  # ids of what it owns (VXI-11 links)
    warned: bool = False
    pending: bytes | None = None  # received while a device_read waited (b"": EOF)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    outbox: list[BytesLike] = field(default_factory=list)  # replies not sent yet
    outbox_size: int = 0
    last_active: float = field(default_factory=time.monotonic)
    busy: bool = False  # a call is being handled (not idle)
    closed_reason: str | None = None  # why the server closed it (logged once)

    def queue(self, reply: Reply) -> None:
        """Queue an encoded reply (sent by the next flush)."""
        if isinstance(reply, bytes):
            size = len(reply)
            self.outbox.append(record_mark(size))
            self.outbox.append(reply)
        else:
            size = sum(map(len, reply))
            self.outbox.append(record_mark(size))
            self.outbox.extend(reply)  # empty pieces: joined as nothing, dropped by flush
        self.outbox_size += 4 + size


_JOIN_LIMIT: Final = 64 * 1024  # smaller batches of replies go out as one joined send

Reply = bytes | tuple[BytesLike, ...]
"""An encoded reply: bytes, or its pieces in order (sent without joining: large reads)."""

Handler = Callable[[RpcConnection, int, int, int, int, memoryview], Awaitable[Reply]]
"""``handle(conn, xid, prog, vers, proc, args)``: the encoded reply."""

Serve = Callable[[RpcConnection], Awaitable[None]]


class Hostile(Exception):
    """A client broke the protocol so that the connection cannot continue."""


class RpcServer(BackgroundServer):
    """Listeners, connections and their limits (async context manager)."""

    log: logging.Logger = logging.getLogger("aiotmc.sim.rpc")  #: where hostile input is logged

    def __init__(
        self,
        *,
        host: str,
        max_connections: int,
        idle_timeout: float,
        send_timeout: float,
    ) -> None:
        self.host = host
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        #: (channel, procedure) of the calls served, the latest :data:`MAX_CALLS_KEPT`
        self.calls: list[tuple[str, int]] = []
        self._conns: set[RpcConnection] = set()
        self._listeners: list[socket.socket] = []
        self._bound: Sequence[tuple[socket.socket, str, Serve]] = ()
        self._task_group: TaskGroup | None = None
        self._refused = 0
        self._changed: anyio.Event | None = None

    @property
    def connections(self) -> int:
        """Connections open now (all channels)."""
        return len(self._conns)

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly ``count`` connections are open (use under a timeout)."""
        while len(self._conns) != count:
            self._changed = anyio.Event() if self._changed is None else self._changed
            await self._changed.wait()

    def _connections_changed(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    # -- lifecycle -------------------------------------------------------------------------

    async def _bind(self) -> Sequence[tuple[socket.socket, str, Serve]]:
        """Open the listeners: (listening socket, channel name, serve) for each."""
        raise NotImplementedError

    def _connection_closed(self, conn: RpcConnection) -> None:
        """Release what ``conn`` owned (called once it is gone)."""

    def _start_more(self, task_group: TaskGroup) -> None:
        """Start other serving tasks (e.g. a UDP responder) in ``task_group``."""

    async def _open(self) -> None:
        self._bound = await self._bind()

    def _start(self, task_group: TaskGroup) -> None:
        for listener, channel, serve in self._bound:
            task_group.start_soon(self._accept, listener, channel, serve)
        if math.isfinite(self.idle_timeout):
            task_group.start_soon(self._sweep_idle, self.idle_timeout)
        self._start_more(task_group)

    async def _close(self) -> None:
        self._bound = ()
        await self._close_listeners()

    async def _listen(self, port: int) -> socket.socket:
        """A listening socket on ``self.host``, ``port`` (0: any free one)."""
        sock = await listen(self.host, port)
        self._listeners.append(sock)
        return sock

    async def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            close(listener)
        for conn in list(self._conns):
            conn.scope.cancel()
            conn.wait_readable.close()  # before the socket: no watch on a closed fd
            close(conn.sock)
        await anyio.lowlevel.checkpoint()

    def disconnect_all(self) -> None:
        """Fault hook: close every client connection now (links are destroyed)."""
        for conn in list(self._conns):
            conn.scope.cancel()

    # -- connections -----------------------------------------------------------------------

    async def _accept(self, listener: socket.socket, channel: str, serve: Serve) -> None:
        assert self._task_group is not None
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await anyio.wait_readable(listener)
                continue
            except OSError as exc:  # EMFILE...: keep serving, without a log storm
                if self._refused % 100 == 0:
                    self.log.warning("rpc %s: accept failed: %s", channel, exc)
                self._refused += 1
                await anyio.sleep(_ACCEPT_RETRY)
                continue
            if len(self._conns) >= self.max_connections:
                if self._refused % 100 == 0:
                    self.log.warning(
                        "rpc %s: connection refused: %d connections open",
                        channel,
                        len(self._conns),
                    )
                self._refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = RpcConnection(sock, channel, readable_waiter(sock))
            self._conns.add(conn)
            self._connections_changed()
            self._task_group.start_soon(self._run, conn, serve)

    async def _sweep_idle(self, timeout: float) -> None:
        """Close connections silent for ``timeout`` s (checked every quarter of it: one
        task per server instead of a timer per receive keeps the call path cheap)."""
        while True:
            await anyio.sleep(timeout / 4)
            now = time.monotonic()
            for conn in list(self._conns):
                if not conn.busy and now - conn.last_active >= timeout:
                    conn.closed_reason = f"idle for {timeout} s: closed"
                    conn.scope.cancel()

    async def _run(self, conn: RpcConnection, serve: Serve) -> None:
        try:
            with conn.scope:
                await serve(conn)
        except (_Closed, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass
        except Hostile as exc:
            self._warn(conn, str(exc))
        except Exception:  # a bug: log it, keep serving the others
            self.log.exception("rpc %s connection failed", conn.channel)
        finally:
            if conn.closed_reason is not None:
                self._warn(conn, conn.closed_reason)
            self._conns.discard(conn)
            self._connections_changed()
            self._connection_closed(conn)
            conn.wait_readable.close()
            close(conn.sock)

    def record_call(self, channel: str, proc: int) -> None:
        """Note a call in :attr:`calls` (bounded: a long-running server forgets the
        oldest half when it holds :data:`MAX_CALLS_KEPT`)."""
        calls = self.calls
        calls.append((channel, proc))
        if len(calls) > MAX_CALLS_KEPT:
            del calls[: MAX_CALLS_KEPT // 2]

    def _warn(self, conn: RpcConnection, message: str) -> None:
        if not conn.warned:
            conn.warned = True
            self.log.warning("rpc %s client: %s", conn.channel, message)
        else:
            self.log.debug("rpc %s client: %s", conn.channel, message)

    async def receive(self, conn: RpcConnection) -> bytes:
        """Bytes the client sent (b"" at EOF), waiting for them (cancel-safe: a
        cancelled wait consumes nothing)."""
        sock = conn.sock
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                await conn.wait_readable(sock)
                continue
            except OSError:  # reset by the client
                data = b""
            conn.last_active = time.monotonic()
            return data

    async def _loop(self, conn: RpcConnection, max_record: int, handle: Handler) -> None:
        reassembler = RecordReassembler(max_size=max_record)
        sock = conn.sock
        buffer = scratch.buffer
        view = scratch.view
        answered = 0
        while True:
            try:
                record = reassembler.next_record() if reassembler.buffered else NEED_DATA
            except RemoteProtocolError as exc:  # a header announcing too much
                raise Hostile(str(exc)) from None
            if record is NEED_DATA:
                if conn.outbox:
                    await self.flush(conn)
                pending, conn.pending = conn.pending, None
                data: bytes | memoryview
                if pending is None:
                    try:
                        n = sock.recv_into(buffer)
                    except BlockingIOError:
                        await conn.wait_readable(sock)
                        continue
                    except OSError:
                        return  # reset by the client
                    if not n:
                        return
                    conn.last_active = time.monotonic()
                    data = view[:n]
                elif not pending:
                    return  # the client left while a device_read waited
                else:
                    data = pending
                try:
                    reassembler.receive_data(data)
                except RemoteProtocolError as exc:
                    raise Hostile(str(exc)) from None
                continue
            assert isinstance(record, bytes)
            conn.busy = True
            reply = await self._answer(conn, record, handle)
            conn.busy = False
            if reply is not None:
                conn.queue(reply)
                if conn.outbox_size > _JOIN_LIMIT:
                    await self.flush(conn)
            answered += 1
            if answered >= _BATCH:  # a client pipelining fast must not starve the others
                answered = 0
                await self.flush(conn)
                await anyio.lowlevel.checkpoint()

    async def _answer(
        self,
        conn: RpcConnection,
        record: bytes,
        handle: Handler,
    ) -> Reply | None:
        try:
            call = decode_call(record)
        except RpcError:
            xid = peek_xid(record)
            self._warn(conn, "RPC version is not 2")
            return None if xid is None else encode_denied(xid)
        except RemoteProtocolError as exc:
            raise Hostile(f"not an RPC call: {exc}") from None
        self.record_call(conn.channel, call.proc)
        try:
            result = await handle(conn, call.xid, call.prog, call.vers, call.proc, call.args)
        except RemoteProtocolError as exc:
            self._warn(conn, f"garbage arguments to procedure {call.proc}: {exc}")
            return encode_accepted_error(call.xid, AcceptStat.GARBAGE_ARGS)
        return result

    async def flush(self, conn: RpcConnection) -> None:
        """Send the queued replies (handlers call it before they wait for anything, so
        the answers to earlier calls are not held back). One send when they are small."""
        pieces, conn.outbox = conn.outbox, []
        size, conn.outbox_size = conn.outbox_size, 0
        if not pieces:
            return
        sock = conn.sock
        if size <= _JOIN_LIMIT:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == size:
                return  # the usual case: one system call
            views = [memoryview(data)[sent:]]
        else:
            views = byte_views(pieces)
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                await self._wait_writable(sock)
                continue
            drop_sent(views, sent)

    async def _wait_writable(self, sock: socket.socket) -> None:
        with anyio.move_on_after(self.send_timeout) as scope:
            await anyio.wait_writable(sock)
        if scope.cancelled_caught:
            raise Hostile(f"the client took no reply for {self.send_timeout} s: closed")
