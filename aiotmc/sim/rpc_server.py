"""A small ONC-RPC server over TCP for the simulators: the rules every served connection
follows, whatever the program (VXI-11 core, abort, portmapper).

Per connection: records are reassembled from received bytes only and bounded by the
handler's ``max_record`` (a header announcing more closes the connection, nothing is
allocated for it); ``idle_timeout`` and ``send_timeout`` close a silent client or one that
takes no reply; at most ``max_connections`` connections (others are closed at once, the
refusals logged rate-limited); hostile input closes that connection and is logged once.

Subclasses bind their listeners in :meth:`RpcServer._bind` and handle calls with a
:data:`Handler`; :meth:`RpcServer._connection_closed` releases what a connection owned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup

from .._exceptions import RemoteProtocolError
from .._types import BytesLike
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
from ..protocol.scpi import NEED_DATA

__all__ = ["Handler", "Hostile", "RpcConnection", "RpcServer"]


RECV_SIZE: Final = 64 * 1024
_ACCEPT_RETRY: Final = 0.05


@dataclass(eq=False)
class RpcConnection:
    stream: SocketStream
    channel: str
    links: set[int] = field(default_factory=set)  # ids of what it owns (VXI-11 links)
    warned: bool = False
    pending: bytes | None = None  # received while a device_read waited (b"": EOF)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


_JOIN_LIMIT: Final = 64 * 1024  # smaller replies in pieces go out as one send

Reply = bytes | tuple[BytesLike, ...]
"""An encoded reply: bytes, or its pieces in order (sent without joining: large reads)."""

Handler = Callable[[RpcConnection, int, int, int, int, memoryview], Awaitable[Reply]]
"""``handle(conn, xid, prog, vers, proc, args)``: the encoded reply."""

Serve = Callable[[RpcConnection], Awaitable[None]]


class Hostile(Exception):
    """A client broke the protocol so that the connection cannot continue."""


class RpcServer:
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
        self.calls: list[tuple[str, int]] = []  #: (channel, procedure) of each call served
        self._conns: set[RpcConnection] = set()
        self._listeners: list[SocketListener] = []
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

    async def _bind(self) -> Sequence[tuple[SocketListener, str, Serve]]:
        """Open the listeners: (listener, channel name, serve) for each."""
        raise NotImplementedError

    def _connection_closed(self, conn: RpcConnection) -> None:
        """Release what ``conn`` owned (called once it is gone)."""

    def _start_more(self, task_group: TaskGroup) -> None:
        """Start other serving tasks (e.g. a UDP responder) in ``task_group``."""

    async def __aenter__(self) -> Self:
        try:
            listeners = await self._bind()
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            await self._close_listeners()
            raise
        self._task_group = task_group
        for listener, channel, serve in listeners:
            task_group.start_soon(self._accept, listener, channel, serve)
        self._start_more(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                return await task_group.__aexit__(exc_type, exc, tb)
            return None
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_listeners()

    async def _listen(self, port: int) -> SocketListener:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=port)
        first = listener.listeners[0]
        for extra in listener.listeners[1:]:
            await extra.aclose()
        assert isinstance(first, SocketListener)
        self._listeners.append(first)
        return first

    async def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.aclose()
        for conn in list(self._conns):
            await conn.stream.aclose()

    def disconnect_all(self) -> None:
        """Fault hook: close every client connection now (links are destroyed)."""
        for conn in list(self._conns):
            conn.scope.cancel()

    # -- connections -----------------------------------------------------------------------

    async def _accept(
        self,
        listener: SocketListener,
        channel: str,
        serve: Serve,
    ) -> None:
        assert self._task_group is not None
        while True:
            try:
                stream = await listener.accept()
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
                await stream.aclose()
                continue
            conn = RpcConnection(stream, channel)
            self._conns.add(conn)
            self._connections_changed()
            self._task_group.start_soon(self._run, conn, serve)

    async def _run(self, conn: RpcConnection, serve: Serve) -> None:
        try:
            with conn.scope:
                await serve(conn)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        except OSError:
            pass
        except Hostile as exc:
            self._warn(conn, str(exc))
        except Exception:  # a bug: log it, keep serving the others
            self.log.exception("rpc %s connection failed", conn.channel)
        finally:
            self._conns.discard(conn)
            self._connections_changed()
            self._connection_closed(conn)
            with anyio.CancelScope(shield=True):
                await conn.stream.aclose()

    def _warn(self, conn: RpcConnection, message: str) -> None:
        if not conn.warned:
            conn.warned = True
            self.log.warning("rpc %s client: %s", conn.channel, message)
        else:
            self.log.debug("rpc %s client: %s", conn.channel, message)

    async def _loop(
        self,
        conn: RpcConnection,
        max_record: int,
        handle: Handler,
    ) -> None:
        reassembler = RecordReassembler(max_size=max_record)
        while True:
            try:
                record = reassembler.next_record() if reassembler.buffered else NEED_DATA
            except RemoteProtocolError as exc:  # a header announcing too much
                raise Hostile(str(exc)) from None
            if record is NEED_DATA:
                data, conn.pending = conn.pending, None
                if data == b"":
                    return  # the client left while a device_read waited
                if data is None:
                    data = b""
                    with anyio.move_on_after(self.idle_timeout):
                        data = await conn.stream.receive(RECV_SIZE)
                    if not data:
                        self._warn(conn, f"idle for {self.idle_timeout} s: closed")
                        return
                try:
                    reassembler.receive_data(data)
                except RemoteProtocolError as exc:
                    raise Hostile(str(exc)) from None
                continue
            assert isinstance(record, bytes)
            reply = await self._answer(conn, record, handle)
            if reply is not None:
                await self._send(conn, reply)

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
        self.calls.append((conn.channel, call.proc))
        try:
            result = await handle(conn, call.xid, call.prog, call.vers, call.proc, call.args)
        except RemoteProtocolError as exc:
            self._warn(conn, f"garbage arguments to procedure {call.proc}: {exc}")
            return encode_accepted_error(call.xid, AcceptStat.GARBAGE_ARGS)
        return result

    async def _send(self, conn: RpcConnection, reply: Reply) -> None:
        with anyio.move_on_after(self.send_timeout) as scope:
            if isinstance(reply, bytes):
                await conn.stream.send(record_mark(len(reply)) + reply)
            elif (size := sum(len(piece) for piece in reply)) <= _JOIN_LIMIT:
                await conn.stream.send(record_mark(size) + b"".join(reply))
            else:  # large: the record mark goes with the first piece, the rest as they are
                first, *rest = reply
                await conn.stream.send(record_mark(size) + bytes(first))
                for piece in rest:
                    if piece:  # a memoryview goes out as it is (the socket takes it)
                        await conn.stream.send(piece)  # type: ignore[arg-type]
        if scope.cancelled_caught:
            raise Hostile(f"the client took no reply for {self.send_timeout} s: closed")
