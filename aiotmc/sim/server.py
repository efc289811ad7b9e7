"""Serve simulated instruments on real TCP sockets (raw SCPI, port 5025 style).

Each :class:`SimServer` is one listening socket and one task that accepts connections
and also runs the device's timer (pending operations complete on time, service requests
fire, even with no client connected). Each client connection is one more task: it frames
program messages with the block-aware :class:`~aiotmc.protocol.scpi.MessageDecoder`, hands
them to the device one at a time and sends each response once the device's latency has
elapsed, watching the socket meanwhile so a vanished client is noticed.

Hot path as in :mod:`aiotmc.transports.tcp`: non-blocking sockets, ``recv_into``/``sendmsg``
tried first, ``anyio.wait_readable``/``wait_writable`` only when not ready; responses go
out as ``sendmsg`` over the device's parts (a block payload is never copied here).

Exchanges on one device are serialized across connections (and servers): a program
message and its response form one unit, so clients sharing a device never see each
other's answers. The device must use a real-time clock (the default).

Fault hooks: :meth:`SimServer.disconnect_all` resets every connection now;
:attr:`SimServer.close_after_bytes` cuts the next response and closes its connection;
:attr:`SimServer.drip` sends every response a few bytes at a time (slow-drip).
"""

from __future__ import annotations

import logging
import math
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Final
from weakref import WeakKeyDictionary

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from .._exceptions import RemoteProtocolError
from ..protocol import NEED_DATA
from ..protocol.ieee4882 import DEFAULT_MAX_MESSAGE_SIZE
from ..protocol.scpi import MessageDecoder
from .commands import (
    DEVICE_ERROR,
    INVALID_BLOCK_DATA,
    TOO_MUCH_DATA,
    BytesLike,
    ScpiError,
    find_open_block,
)
from .device import SimDevice

__all__ = ["SimServer", "serve_forever", "serve_many"]

_log = logging.getLogger("aiotmc.sim.server")

_RECV_SIZE: Final = 1 << 20
_BATCH: Final = 32  # messages handled back to back before yielding to other tasks
_BIG_BLOCK: Final = 256 * 1024  # blocks this large are received straight into one buffer
_SCAN_LIMIT: Final = 4 << 20  # look for an open block only in a partial message this small
_SMALL_RESPONSE: Final = 16 * 1024  # joined and sent with one send()
_SHORT_WAIT: Final = 0.05  # longer waits for the device also watch the connection
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class _Closed(Exception):
    """The connection is finished (EOF, reset, cut by a fault hook)."""


class _Gate:
    """A FIFO lock handed from holder to next waiter; no checkpoint when uncontended."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        if not self.held:
            self.held = True
            return
        event = anyio.Event()
        self.waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release()  # it was handed to us as we were cancelled: pass it on
            else:
                self.waiters.remove(event)
            raise

    def release(self) -> None:
        if self.waiters:
            self.waiters.popleft().set()  # stays held: ownership moves to that waiter
        else:
            self.held = False


class _DeviceLocks:
    """One gate per device, shared by every live server serving it (refcounted)."""

    def __init__(self) -> None:
        self._gates: WeakKeyDictionary[SimDevice, tuple[_Gate, int]] = WeakKeyDictionary()

    def acquire(self, device: SimDevice) -> _Gate:
        gate, users = self._gates.get(device) or (_Gate(), 0)
        self._gates[device] = (gate, users + 1)
        return gate

    def release(self, device: SimDevice) -> None:
        entry = self._gates.get(device)
        if entry is None:
            return
        gate, users = entry
        if users <= 1:
            del self._gates[device]
        else:
            self._gates[device] = (gate, users - 1)


_device_locks = _DeviceLocks()


class _Connection:
    __slots__ = ("scope", "sock")

    def __init__(self, sock: socket.socket, scope: anyio.CancelScope) -> None:
        self.sock = sock
        self.scope = scope


class SimServer:
    """Serve one :class:`~aiotmc.sim.SimDevice` on a TCP listener (async context manager).

    ``port=0`` picks a free port; :attr:`port` holds the bound one after ``__aenter__``.
    Several servers may share a device.
    """

    def __init__(
        self,
        device: SimDevice,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        #: Fault hook: send only this many bytes of the next response, then close that
        #: connection (the hook disarms itself).
        self.close_after_bytes: int | None = None
        #: Fault hook: ``(size, interval)`` sends every response ``size`` bytes at a time
        #: with ``interval`` seconds between the pieces; ``None`` (default) does not.
        self.drip: tuple[int, float] | None = None
        self._listener: socket.socket | None = None
        self._task_group: TaskGroup | None = None
        self._own_task_group: TaskGroup | None = None
        self._connections: set[_Connection] = set()
        self._timer: anyio.CancelScope | None = None
        self._lock: _Gate | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._changed: anyio.Event | None = None
        self._exchanges = 0  # connections inside _exchange (they poll the device)

    @property
    def resource(self) -> str:
        """The VISA resource name clients open, e.g. ``TCPIP0::127.0.0.1::5025::SOCKET``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"TCPIP0::{host}::{self.port}::SOCKET"

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._connections)

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly ``count`` clients are connected (use under a timeout)."""
        while len(self._connections) != count:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _connections_changed(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def __repr__(self) -> str:
        return f"<SimServer {self.resource} {self.device.identity!r}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> SimServer:
        await self._bind()
        task_group = anyio.create_task_group()
        try:
            await task_group.__aenter__()
        except BaseException:
            self._cleanup()
            raise
        self._own_task_group = task_group
        self._run_in(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._own_task_group = self._own_task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                return await task_group.__aexit__(exc_type, exc, tb)
            return None
        finally:
            self._cleanup()

    async def _bind(self) -> None:
        """Open the listening socket (raises ``OSError`` naming the address)."""
        if self._listener is not None:
            raise RuntimeError("this SimServer is already running")
        self._listener = await _listen(self.host, self.port)
        self.port = self._listener.getsockname()[1]
        self._lock = _device_locks.acquire(self.device)
        self._unsubscribe = self.device.add_deadline_listener(self._wake_timer)

    def _run_in(self, task_group: TaskGroup) -> None:
        """Run the accept task, and later the connections, in ``task_group``."""
        assert self._listener is not None
        self._task_group = task_group
        task_group.start_soon(self._accept_loop, self._listener)

    def _cleanup(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._lock is not None:
            _device_locks.release(self.device)
            self._lock = None
        for conn in list(self._connections):
            self._drop(conn, reset=False)
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        self._task_group = None

    # -- fault hooks ------------------------------------------------------------------------

    def disconnect_all(self) -> None:
        """Reset every client connection now (TCP RST); the listener keeps accepting."""
        for conn in list(self._connections):
            self._drop(conn, reset=True)

    # -- internals --------------------------------------------------------------------------

    def _drop(self, conn: _Connection, *, reset: bool) -> None:
        self._connections.discard(conn)
        self._connections_changed()
        conn.scope.cancel()
        if reset:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        _close(conn.sock)

    def _wake_timer(self) -> None:
        """The device has an earlier deadline: pull the accept task's wake-up forward.

        Not while an exchange waits on the device: that connection polls at the deadline
        itself and calls this again when it is done.
        """
        timer = self._timer
        if timer is None or self._exchanges:
            return
        deadline = self.device.next_deadline()
        if deadline is None:
            return
        try:
            now = anyio.current_time()
        except Exception:  # called outside the event loop (another thread): next wake-up
            return
        timer.deadline = min(timer.deadline, now + max(0.0, deadline - self.device.clock()))

    async def _accept_loop(self, listener: socket.socket) -> None:
        device = self.device
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                deadline = device.next_deadline()
                timeout = math.inf if deadline is None else deadline - device.clock()
                with anyio.move_on_after(max(0.0, timeout)) as timer:
                    self._timer = timer
                    try:
                        await anyio.wait_readable(listener)
                    finally:
                        self._timer = None
                if timer.cancelled_caught:
                    try:
                        device.poll()
                    except Exception:  # a bug in a device model: log it, keep serving
                        _log.exception("%s: device failed in poll()", self.resource)
                continue
            except OSError as exc:  # EMFILE, ECONNABORTED...: keep serving
                _log.warning("%s: accept failed: %s", self.resource, exc)
                await anyio.sleep(0.05)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self._task_group is not None
            self._task_group.start_soon(self._serve_connection, sock)

    async def _serve_connection(self, sock: socket.socket) -> None:
        with anyio.CancelScope() as scope:
            conn = _Connection(sock, scope)
            self._connections.add(conn)
            self._connections_changed()
            try:
                await self._converse(conn)
            except (_Closed, OSError, anyio.ClosedResourceError):
                pass
            except Exception:
                _log.exception("%s: connection failed", self.resource)
            finally:
                if conn in self._connections:
                    self._drop(conn, reset=False)

    async def _converse(self, conn: _Connection) -> None:
        decoder = MessageDecoder(terminator=b"\n", max_message_size=self.max_message_size)
        chunk = bytearray(_RECV_SIZE)
        assert self._lock is not None
        lock = self._lock
        handled = 0
        while True:
            message = await self._next_message(conn.sock, decoder, chunk)
            if message is None:
                return
            await lock.acquire()
            self._exchanges += 1
            try:
                await self._exchange(conn, decoder, chunk, message)
            finally:
                self._exchanges -= 1
                lock.release()
                self._wake_timer()
            handled += 1
            if handled >= _BATCH:  # a client pipelining fast must not starve the others
                handled = 0
                await checkpoint()

    async def _next_message(
        self, sock: socket.socket, decoder: MessageDecoder, chunk: bytearray
    ) -> bytes | bytearray | None:
        """The next program message, or None at EOF.

        A message that ends inside a large definite block is taken over from the decoder
        (``consume``) and its payload received straight into the message buffer.
        """
        head: bytearray | None = None
        while True:
            try:
                message = decoder.next_message()
            except RemoteProtocolError as exc:
                if decoder.eof:
                    return None  # the client left mid-message: nothing to report to
                # Framing broke (malformed block header, message too long): report it the
                # way an instrument would and skip to the end of that message.
                code = TOO_MUCH_DATA if "max_message_size" in str(exc) else INVALID_BLOCK_DATA
                self.device.push_error(code, ScpiError(code, str(exc)[:200]).message)
                decoder.discard_current()
                head = None
                continue
            if message is not NEED_DATA:
                assert isinstance(message, bytes)
                if head is None:
                    return message
                head += message  # the rest after the block, usually just b"\n"
                return head
            if decoder.eof:
                return None
            with decoder.buffered as buffered:
                size = len(buffered)
                end = find_open_block(buffered.tobytes()) if 0 < size <= _SCAN_LIMIT else None
            if end is not None and _BIG_BLOCK <= end <= self.max_message_size:
                part = await self._receive_block(sock, decoder, end)
                head = part if head is None else head + part
                continue
            await self._receive(sock, decoder, chunk)

    @staticmethod
    async def _receive_block(sock: socket.socket, decoder: MessageDecoder, end: int) -> bytearray:
        """Take the buffered start of a message and receive the rest up to ``end``."""
        target = bytearray(end)
        with decoder.buffered as buffered:
            have = len(buffered)
            target[:have] = buffered
        decoder.consume(have)
        with memoryview(target) as view:
            while have < end:
                try:
                    n = sock.recv_into(view[have:])
                except BlockingIOError:
                    await anyio.wait_readable(sock)
                    continue
                if n == 0:
                    raise _Closed
                have += n
        return target

    async def _exchange(
        self,
        conn: _Connection,
        decoder: MessageDecoder,
        chunk: bytearray,
        message: bytes | bytearray,
    ) -> None:
        """Write one program message; send its responses as they become readable."""
        device = self.device
        try:
            device.write(message)
        except Exception as exc:  # a bug in a command handler: report, keep serving
            _log.exception("%s: device failed on %r", self.resource, message[:60])
            detail = f"{type(exc).__name__}: {exc}"[:200]
            device.push_error(DEVICE_ERROR, ScpiError(DEVICE_ERROR, detail).message)
        while device.busy:
            parts = device.read_parts()
            if parts is not None:
                await self._send(conn, parts)
                continue
            deadline = device.next_deadline()
            delay = math.inf if deadline is None else max(0.0, deadline - device.clock())
            if delay <= _SHORT_WAIT:
                # A plain sleep: far cheaper than a timed-out wait on the socket.
                await anyio.sleep(delay)
                continue
            # A long wait, or nothing due at a known time (a response delayed forever, an
            # operation waiting for a trigger): keep reading meanwhile, so that a client
            # that gives up and closes the connection frees the device for the next one
            # (later messages just stay buffered in the decoder).
            with anyio.move_on_after(delay):
                await self._receive(conn.sock, decoder, chunk)
                if decoder.eof:
                    raise _Closed

    @staticmethod
    async def _receive(sock: socket.socket, decoder: MessageDecoder, chunk: bytearray) -> None:
        while True:
            try:
                n = sock.recv_into(chunk)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            decoder.receive_data(memoryview(chunk)[:n] if n else b"")
            return

    async def _send(self, conn: _Connection, parts: list[BytesLike]) -> None:
        cut = self.close_after_bytes
        if self.drip is not None and cut is None:
            await self._send_drip(conn, parts, *self.drip)
            return
        if cut is None and sum(map(len, parts)) <= _SMALL_RESPONSE:
            data = b"".join(parts)
            sent = 0
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                pass
            if sent == len(data):
                return  # the usual case: one syscall, no views
            parts = [memoryview(data)[sent:]]
        views = [memoryview(part).cast("B") for part in parts if len(part)]
        if cut is not None:
            self.close_after_bytes = None
            views = _truncate(views, cut)
        sock = conn.sock
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                continue
            while sent:
                head = views[0]
                if sent >= len(head):
                    sent -= len(head)
                    views.pop(0)
                else:
                    views[0] = head[sent:]
                    sent = 0
        if cut is not None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            raise _Closed

    @staticmethod
    async def _send_drip(
        conn: _Connection, parts: list[BytesLike], size: int, interval: float
    ) -> None:
        data = memoryview(b"".join(parts))
        for start in range(0, len(data), max(1, size)):
            if start:
                await anyio.sleep(interval)
            piece = data[start : start + max(1, size)]
            while piece:
                try:
                    sent = conn.sock.send(piece)
                except BlockingIOError:
                    await anyio.wait_writable(conn.sock)
                    continue
                piece = piece[sent:]


def _truncate(views: list[memoryview], limit: int) -> list[memoryview]:
    out: list[memoryview] = []
    for view in views:
        if limit <= 0:
            break
        out.append(view[:limit])
        limit -= len(out[-1])
    return out


def _close(sock: socket.socket) -> None:
    try:
        anyio.notify_closing(sock)
    except Exception:  # no event loop, or nobody waiting
        pass
    sock.close()


async def _listen(host: str, port: int) -> socket.socket:
    infos = await anyio.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def serve_many(
    devices: Sequence[SimDevice],
    *,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
) -> AsyncIterator[list[SimServer]]:
    """Serve each device on its own port (``ports`` or free ones); yield the servers.

    All servers share one task group, so a thousand of them cost a thousand small tasks
    (plus one per connection) and no nesting.
    """
    if ports is not None and len(ports) != len(devices):
        raise ValueError(f"{len(devices)} devices but {len(ports)} ports")
    servers = [
        SimServer(device, host=host, port=0 if ports is None else ports[index])
        for index, device in enumerate(devices)
    ]
    try:
        for server in servers:
            await server._bind()
        async with anyio.create_task_group() as task_group:
            for server in servers:
                server._run_in(task_group)
            yield servers
            task_group.cancel_scope.cancel()
    finally:
        for server in servers:
            server._cleanup()


async def serve_forever(
    devices: Mapping[int, SimDevice],
    *,
    host: str = "127.0.0.1",
    ready: Callable[[list[SimServer]], None] | None = None,
) -> None:
    """Serve ``{port: device}`` until cancelled; ``ready(servers)`` runs once listening."""
    async with serve_many(list(devices.values()), host=host, ports=list(devices)) as servers:
        if ready is not None:
            ready(servers)
        await anyio.sleep_forever()
