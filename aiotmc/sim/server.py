"""Serve simulated instruments on real TCP sockets (raw SCPI, port 5025 style).

Each :class:`SimServer` is one listening socket and one task that accepts connections
and also runs the device's timer (pending operations complete on time, service requests
fire, even with no client connected). Each client connection is one more task: it frames
program messages with :class:`~aiotmc.sim.framing.ProgramFramer`, hands them to the
device one at a time and sends each response once the device's latency has elapsed,
watching the socket meanwhile so a vanished client is noticed.

Hot path as in :mod:`aiotmc.transports.tcp`: non-blocking sockets, ``recv_into``/``sendmsg``
tried first, a wait (the loop's own readiness wait for reads, ``anyio.wait_writable``) only
when not ready; responses go out as ``sendmsg`` over the device's parts (a block payload is
never copied here).

Exchanges on one device are serialized across connections (and servers): a program
message and its response form one unit, so clients sharing a device never see each
other's answers. The device must use a real-time clock (the default). The device lock
covers the device's work only: responses are sent after it is released, so a client
that does not read holds up nobody but itself.

Every client is untrusted (see docs/reliability.md, "Simulator servers"): per-connection
memory grows only with bytes received, program message text is limited apart from
block payloads, connections are capped, idle ones and ones that stop reading are
dropped, and each violation is logged once per connection (rate-limited overall),
never written into the error queue that every client of the device reads.

Fault hooks: :meth:`SimServer.disconnect_all` resets every connection now;
:attr:`SimServer.close_after_bytes` cuts the next response and closes its connection;
:attr:`SimServer.drip` sends every response a few bytes at a time (slow-drip).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final, TypedDict, Unpack

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from .._buffers import byte_views, drop_sent
from .._loops import readable_waiter
from .._types import BytesLike
from ..protocol import NEED_DATA
from ..protocol.ieee4882 import DEFAULT_MAX_MESSAGE_SIZE
from ._gate import Gate, device_locks
from ._server_io import (
    RECV_SIZE,
    RateLimitedLog,
    close,
    listen,
    raise_fd_limit,
    scratch,
    set_reset,
    truncate,
)
from ._serving import BackgroundServer
from .device import SimDevice
from .errors import DEVICE_ERROR, ScpiError
from .framing import FramingError, ProgramFramer
from .program import MAX_DATA_ELEMENTS

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_TEXT_SIZE",
    "DEFAULT_SEND_TIMEOUT",
    "ServerOptions",
    "SimServer",
    "raise_fd_limit",
    "serve_forever",
    "serve_many",
]

_log = logging.getLogger("aiotmc.sim.server")

DEFAULT_MAX_TEXT_SIZE: Final = 4 << 20
"""Program message text (all but definite-block payloads) accepted per message: 4 MiB."""
DEFAULT_MAX_CONNECTIONS: Final = 4096
"""Clients served at once per server; later ones are accepted and closed at once."""
DEFAULT_IDLE_TIMEOUT: Final = 3600.0
"""Seconds a client may send nothing (outside an exchange) before it is dropped."""
DEFAULT_SEND_TIMEOUT: Final = 10.0
"""Seconds a response may wait for a client that does not read before it is dropped."""

_RECV_STREAK: Final = 4  # full receive buffers in a row before yielding to other tasks
_WATCH_LIMIT: Final = 1 << 20  # while the device works, read ahead only this much
_WATCH_POLL: Final = 0.1  # ...then look again this often
_BATCH: Final = 32  # messages handled back to back before yielding to other tasks
_SMALL_RESPONSE: Final = 16 * 1024  # joined and sent with one send()
_SHORT_WAIT: Final = 0.05  # longer waits for the device also watch the connection
_ACCEPT_BACKOFF: Final = 0.1  # pause after accept() failed (EMFILE...)


class ServerOptions(TypedDict, total=False):
    """Per-connection limits of a :class:`SimServer` (keyword arguments)."""

    max_message_size: int
    max_text_size: int
    max_elements: int
    max_connections: int
    idle_timeout: float | None
    send_timeout: float | None


class _Closed(Exception):
    """The connection is finished (EOF, reset, cut by a fault hook, dropped)."""

    def __init__(self, reset: bool = False) -> None:
        super().__init__()
        self.reset = reset


class _Connection:
    __slots__ = (
        "busy",
        "framer",
        "last_active",
        "peer",
        "reported",
        "scope",
        "sock",
        "streak",
        "wait_readable",
    )

    def __init__(
        self, sock: socket.socket, scope: anyio.CancelScope, framer: ProgramFramer
    ) -> None:
        self.sock = sock
        self.scope = scope
        self.framer = framer
        self.reported: set[str] = set()
        self.streak = 0  # full receive buffers in a row
        self.busy = False  # inside an exchange or sending its answer: never idle
        self.last_active = time.monotonic()
        self.wait_readable = readable_waiter(sock)  # close it before the socket
        try:
            host, port = sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"


class SimServer(BackgroundServer):
    """Serve one :class:`~aiotmc.sim.SimDevice` on a TCP listener (async context manager).

    ``port=0`` picks a free port; :attr:`port` holds the bound one after ``__aenter__``.
    Several servers may share a device.

    Limits per connection (``None`` disables a timeout):

    * ``max_message_size``: a whole program message, definite-block payloads included
      (256 MiB); buffered only as its bytes arrive;
    * ``max_text_size``: the rest of a program message (4 MiB): a longer line is
      dropped as it arrives;
    * ``max_elements``: blocks and strings in one program message (16,384);
    * ``max_connections``: clients at once (4096); more are closed at once;
    * ``idle_timeout``: seconds with nothing received outside an exchange (3600;
      checked every quarter of it);
    * ``send_timeout``: seconds a response may wait for the client to read (10).

    A broken limit is logged (once per connection, rate-limited) and counted in
    :attr:`violations`; it never reaches the device's error queue.
    """

    def __init__(
        self,
        device: SimDevice,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_text_size: int = DEFAULT_MAX_TEXT_SIZE,
        max_elements: int = 2 * MAX_DATA_ELEMENTS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        for name, value in (
            ("max_message_size", max_message_size),
            ("max_text_size", max_text_size),
            ("max_elements", max_elements),
            ("max_connections", max_connections),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, timeout in (("idle_timeout", idle_timeout), ("send_timeout", send_timeout)):
            if timeout is not None and not timeout > 0:
                raise ValueError(f"{name} must be positive or None, got {timeout}")
        self.device = device
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        self.max_text_size = max_text_size
        self.max_elements = max_elements
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        #: Limits broken by clients so far, by kind ("text too long", "block too large",
        #: "too many elements", "idle timeout", "send timeout", "connection limit",
        #: "accept failed").
        self.violations: Counter[str] = Counter()
        #: Fault hook: send only this many bytes of the next response, then close that
        #: connection (the hook disarms itself).
        self.close_after_bytes: int | None = None
        #: Fault hook: ``(size, interval)`` sends every response ``size`` bytes at a time
        #: with ``interval`` seconds between the pieces; ``None`` (default) does not.
        self.drip: tuple[int, float] | None = None
        self._listener: socket.socket | None = None
        self._task_group: TaskGroup | None = None
        self._connections: set[_Connection] = set()
        self._timer: anyio.CancelScope | None = None
        self._lock: Gate | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._changed: anyio.Event | None = None
        self._exchanges = 0  # connections inside _exchange (they poll the device)
        self._starting = 0  # accepted connections whose task has not started yet
        self._log = RateLimitedLog(_log)

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

    async def _open(self) -> None:
        await self._bind()

    def _start(self, task_group: TaskGroup) -> None:
        self._run_in(task_group)

    async def _close(self) -> None:
        self._cleanup()

    async def _bind(self) -> None:
        """Open the listening socket (raises ``OSError`` naming the address)."""
        if self._listener is not None:
            raise RuntimeError("this SimServer is already running")
        self._listener = await listen(self.host, self.port)
        self.port = self._listener.getsockname()[1]
        self._lock = device_locks.acquire(self.device)
        self._unsubscribe = self.device.add_deadline_listener(self._wake_timer)

    def _run_in(self, task_group: TaskGroup) -> None:
        """Run the accept task, and later the connections, in ``task_group``."""
        assert self._listener is not None
        self._task_group = task_group
        task_group.start_soon(self._accept_loop, self._listener)
        if self.idle_timeout is not None:
            task_group.start_soon(self._sweep_idle, self.idle_timeout)

    def _cleanup(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._lock is not None:
            device_locks.release(self.device)
            self._lock = None
        for conn in list(self._connections):
            self._drop(conn, reset=False)
        listener, self._listener = self._listener, None
        if listener is not None:
            close(listener)
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
        conn.wait_readable.close()  # before the socket: the loop must not watch a closed fd
        if reset:
            set_reset(conn.sock)
        close(conn.sock)

    def _violation(self, conn: _Connection | None, kind: str, detail: str) -> None:
        """Count a broken limit; log it once per connection, rate-limited."""
        self.violations[kind] += 1
        if conn is None:
            self._log.warning("%s: %s: %s", self.resource, kind, detail)
        elif kind not in conn.reported:
            conn.reported.add(kind)
            self._log.warning(
                "%s: client %s: %s: %s (not logged again for this connection)",
                self.resource,
                conn.peer,
                kind,
                detail,
            )

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
            except OSError as exc:  # EMFILE, ECONNABORTED...: keep serving, quietly
                self._violation(None, "accept failed", str(exc))
                await anyio.sleep(_ACCEPT_BACKOFF)
                continue
            if len(self._connections) + self._starting >= self.max_connections:
                self._violation(
                    None, "connection limit", f"{self.max_connections} clients connected"
                )
                set_reset(sock)
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self._task_group is not None
            self._starting += 1  # counts against the cap until its task has started
            self._task_group.start_soon(self._serve_connection, sock)

    async def _sweep_idle(self, timeout: float) -> None:
        """Reset connections silent for ``timeout`` s (checked every quarter of it: one
        task per server instead of a timer per wait keeps the exchange path cheap)."""
        while True:
            await anyio.sleep(timeout / 4)
            now = time.monotonic()
            for conn in list(self._connections):
                if not conn.busy and now - conn.last_active >= timeout:
                    self._violation(conn, "idle timeout", f"nothing received for {timeout} s")
                    self._drop(conn, reset=True)

    async def _serve_connection(self, sock: socket.socket) -> None:
        self._starting -= 1
        with anyio.CancelScope() as scope:
            framer = ProgramFramer(
                max_text_size=self.max_text_size,
                max_message_size=self.max_message_size,
                max_elements=self.max_elements,
            )
            conn = _Connection(sock, scope, framer)
            self._connections.add(conn)
            self._connections_changed()
            reset = False
            try:
                await self._converse(conn)
            except _Closed as exc:
                reset = exc.reset
            except (OSError, anyio.ClosedResourceError):
                pass
            except Exception:
                _log.exception("%s: connection failed", self.resource)
            finally:
                if conn in self._connections:
                    self._drop(conn, reset=reset)

    async def _converse(self, conn: _Connection) -> None:
        assert self._lock is not None
        lock = self._lock
        handled = 0
        while True:
            message = await self._next_message(conn)
            if message is None:
                return
            conn.busy = True
            await lock.acquire()
            self._exchanges += 1
            try:
                responses = await self._exchange(conn, message)
            finally:
                self._exchanges -= 1
                lock.release()
                self._wake_timer()
            del message
            for parts in responses:  # the device is free for others meanwhile
                await self._send(conn, parts)
            conn.busy = False
            conn.last_active = time.monotonic()
            handled += 1
            if handled >= _BATCH:  # a client pipelining fast must not starve the others
                handled = 0
                await checkpoint()

    async def _next_message(self, conn: _Connection) -> bytes | bytearray | None:
        """The next program message, or None at EOF (a partial message is dropped)."""
        framer = conn.framer
        while True:
            try:
                message = framer.next_message()
            except FramingError as exc:
                self._violation(conn, exc.kind, exc.detail)
                continue
            if message is not NEED_DATA:
                assert isinstance(message, bytes | bytearray)
                return message
            if framer.eof:
                return None
            await self._receive(conn)

    async def _receive(self, conn: _Connection) -> None:
        """Receive what is there (at least one byte, or EOF) into the connection's framer."""
        sock = conn.sock
        buffers = scratch
        while True:
            try:
                n = sock.recv_into(buffers.buffer)
            except BlockingIOError:
                await conn.wait_readable(sock)
                continue
            conn.last_active = time.monotonic()
            conn.framer.feed(buffers.view[:n] if n else b"")
            if n == RECV_SIZE:  # more is probably waiting: let the other clients in
                conn.streak += 1
                if conn.streak >= _RECV_STREAK:
                    conn.streak = 0
                    await checkpoint()
            return

    async def _exchange(
        self, conn: _Connection, message: bytes | bytearray
    ) -> list[list[BytesLike]]:
        """Write one program message; collect its responses as they become readable."""
        device = self.device
        try:
            device.write(message)
        except Exception as exc:  # a bug in a command handler: report, keep serving
            _log.exception("%s: device failed on %r", self.resource, bytes(message[:60]))
            detail = f"{type(exc).__name__}: {exc}"
            device.push_error(DEVICE_ERROR, ScpiError(DEVICE_ERROR, detail).message)
        responses: list[list[BytesLike]] = []
        while device.busy:
            parts = device.read_parts()
            if parts is not None:
                responses.append(parts)
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
            # (later messages just stay buffered in the framer, up to a bound).
            if conn.framer.pending >= _WATCH_LIMIT:
                await anyio.sleep(min(delay, _WATCH_POLL))
                continue
            with anyio.move_on_after(delay):
                await self._receive(conn)
                if conn.framer.eof:
                    raise _Closed
        return responses

    async def _wait_writable(self, conn: _Connection) -> None:
        """Wait until the client reads; drop it after ``send_timeout`` without progress."""
        timeout = self.send_timeout
        if timeout is None:
            await anyio.wait_writable(conn.sock)
            return
        with anyio.move_on_after(timeout):
            await anyio.wait_writable(conn.sock)
            return
        self._violation(conn, "send timeout", f"the client read nothing for {timeout} s")
        raise _Closed(reset=True)

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
        views = byte_views(parts)
        if cut is not None:
            self.close_after_bytes = None
            views = truncate(views, cut)
        sock = conn.sock
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                await self._wait_writable(conn)
                continue
            drop_sent(views, sent)
        if cut is not None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            raise _Closed

    async def _send_drip(
        self, conn: _Connection, parts: list[BytesLike], size: int, interval: float
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
                    await self._wait_writable(conn)
                    continue
                piece = piece[sent:]


@asynccontextmanager
async def serve_many(
    devices: Sequence[SimDevice],
    *,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    **options: Unpack[ServerOptions],
) -> AsyncIterator[list[SimServer]]:
    """Serve each device on its own port (``ports`` or free ones); yield the servers.

    All servers share one task group, so a thousand of them cost a thousand small tasks
    (plus one per connection) and no nesting. ``options`` are the per-connection limits
    of :class:`SimServer` (``max_text_size``, ``idle_timeout``...), applied to each.
    """
    if ports is not None and len(ports) != len(devices):
        raise ValueError(f"{len(devices)} devices but {len(ports)} ports")
    servers = [
        SimServer(device, host=host, port=0 if ports is None else ports[index], **options)
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
    **options: Unpack[ServerOptions],
) -> None:
    """Serve ``{port: device}`` until cancelled; ``ready(servers)`` runs once listening.

    ``options``: the per-connection limits of :class:`SimServer`.
    """
    serving = serve_many(list(devices.values()), host=host, ports=list(devices), **options)
    async with serving as servers:
        if ready is not None:
            ready(servers)
        await anyio.sleep_forever()
