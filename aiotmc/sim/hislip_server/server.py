"""The server and its sessions: :class:`HislipServer`'s settings and lifecycle, accepting
connections, and the initialization handshake (Initialize opens a session and runs its
synchronous channel and answer pump; AsyncInitialize attaches the asynchronous channel)."""

from __future__ import annotations

import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import anyio
from anyio.abc import TaskGroup

from ..._exceptions import ProtocolError, TransportError
from ..._hislip_wire import Channel
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...protocol.hislip_descriptors import Descriptor
from .._serving import BackgroundServer
from ..device import SimDevice
from ._answers import pump
from ._async import async_loop, on_srq
from ._locks import locks_changed
from ._session import VERSION, VERSION_SECURE, Session, fatal
from ._sync import sync_loop

__all__ = ["HislipServer"]

_log = logging.getLogger("aiotmc.sim.hislip")


class HislipServer(BackgroundServer):
    """Serve ``device`` over HiSLIP (async context manager; ``port=0`` picks one).

    ``sub_addresses``: the accepted sub-addresses (default ``hislip0``); another one is
    refused with FatalError "invalid initialization sequence".
    """

    def __init__(
        self,
        device: SimDevice,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sub_addresses: tuple[str, ...] = ("hislip0",),
        max_message_size: int = hs.DEFAULT_MAX_MESSAGE_SIZE,
        max_input: int = 4 << 20,
        max_connections: int = 32,
        init_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        send_timeout: float = 10.0,
        vendor: bytes = b"AS",
        overlapped: bool = False,
        tls: ssl.SSLContext | None = None,
        require_tls: bool = False,
        users: Mapping[str, str] | None = None,
        version: tuple[int, int] | None = None,
        descriptors: Iterable[Descriptor] = (),
        strict: bool = False,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.sub_addresses = tuple(a.lower() for a in sub_addresses)
        self.max_message_size = max_message_size
        self.max_input = max_input
        self.max_connections = max_connections
        self.init_timeout = init_timeout
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.vendor = vendor
        #: Offer overlapped mode (InitializeResponse says so; a session starts in it and a
        #: client may switch with the device clear features).
        self.overlapped = overlapped
        if (require_tls or users is not None) and tls is None:
            raise ValueError("require_tls and users need a server TLS context (tls=...)")
        self.tls = tls  #: server context: HiSLIP 2.0 with StartTLS when set
        self.require_tls = require_tls
        self.users = None if users is None else dict(users)
        if version is None:
            version = VERSION if tls is None else VERSION_SECURE
        if tls is not None and version < VERSION_SECURE:
            raise ValueError("TLS needs HiSLIP 2.0")
        #: The highest version offered (1.1 by default, 2.0 with TLS or when asked).
        self.version = version
        #: What GetDescriptors answers (HiSLIP 2.0 sessions only).
        self.descriptors = list(descriptors)
        #: Refuse (Error) what lenient mode only counts: RMT-delivered without a delivered
        #: response, a MessageID not +2 from the previous one, a status query without the
        #: last MessageID, a message above our maximum message size (header included).
        self.strict = strict
        #: Lenient-mode tallies: ``rmt_missing``, ``rmt_extra``, ``status_id_mismatch``,
        #: ``id_gap`` (a MessageID not +2 from the previous), ``interrupted``, ``errors``
        #: (Error sent), ``fatal`` (FatalError sent), ``refused``, ``tls`` (channels
        #: upgraded), ``tls_failed``, ``tls_ended`` (EndTLS), ``auth_ok``, ``auth_failed``,
        #: ``too_large`` (a message above ``max_message_size`` with its header),
        #: ``strict_refused`` (violations refused in strict mode).
        self.counters: Counter[str] = Counter()
        #: Fault hook: when True, Initialize is read but never answered.
        self.silent = False
        #: Fault hook: the next Data/DataEnd/Trigger of any session is answered with
        #: FatalError carrying this text, and that session ends (used once).
        self.fatal_next: str | None = None
        self._listener: socket.socket | None = None
        self._task_group: TaskGroup | None = None
        self._sessions: dict[int, Session] = {}
        self._sessions_changed: anyio.Event | None = None  # created in the event loop
        self._lock_event: anyio.Event | None = None  # set when a lock is released
        #: Lock requests waiting for a holder to release now.
        self.lock_waiters = 0
        self._next_id = 1
        self._connections = 0
        self._unsubscribe: list[Callable[[], None]] = []

    @property
    def resource(self) -> str:
        """The VISA resource name, e.g. ``TCPIP0::127.0.0.1::hislip0,4880::INSTR``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"TCPIP0::{host}::{self.sub_addresses[0]},{self.port}::INSTR"

    @property
    def connections(self) -> int:
        """Connections open now (both channels of a session count)."""
        return self._connections

    @property
    def sessions(self) -> int:
        """Sessions open now."""
        return len(self._sessions)

    async def wait_sessions(self, count: int, *, lock_waiters: int | None = None) -> None:
        """Wait until exactly ``count`` sessions are open and, if given, ``lock_waiters``
        lock requests wait (use under a timeout)."""
        while len(self._sessions) != count or lock_waiters not in (None, self.lock_waiters):
            if self._sessions_changed is None:
                self._sessions_changed = anyio.Event()
            await self._sessions_changed.wait()

    def _changed(self) -> None:
        changed, self._sessions_changed = self._sessions_changed, None
        if changed is not None:
            changed.set()

    async def _open(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener = listener  # closed by _close if the rest fails
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._unsubscribe = [
            self.device.add_srq_listener(self._on_srq),
            self.device.add_deadline_listener(self._wake_all),
        ]

    def _start(self, task_group: TaskGroup) -> None:
        assert self._listener is not None
        task_group.start_soon(self._accept_loop, self._listener)

    def _stopping(self) -> None:
        for remove in self._unsubscribe:
            remove()
        self._unsubscribe = []

    async def _close(self) -> None:
        self._stopping()  # (a failed start)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def disconnect_all(self) -> None:
        """Fault hook: end every session now (both channels close)."""
        for session in list(self._sessions.values()):
            session.cancel()

    # -- accepting --------------------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                await anyio.wait_readable(listener)
                continue
            except OSError as exc:  # EMFILE...: keep serving
                _log.warning("HiSLIP accept failed: %s", exc)
                await anyio.sleep(0.05)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self._task_group is not None
            self._task_group.start_soon(self._serve_connection, sock)

    async def _serve_connection(self, sock: socket.socket) -> None:
        channel = Channel(sock, max_payload=hs.MAX_SUB_ADDRESS, name="server")
        self._connections += 1
        try:
            if self._connections > self.max_connections:
                self.counters["refused"] += 1
                await fatal(self, channel, hs.FatalCode.MAXIMUM_CLIENTS_EXCEEDED, "too many")
                return
            first: hs.Message | None = None
            with anyio.move_on_after(self.init_timeout):
                first = await channel.receive()
            if first is None:
                return  # nothing whole within init_timeout: drop it
            channel.reader.max_payload = self.max_message_size
            if first.type == T.Initialize:
                await self._serve_sync(channel, first)
            elif first.type == T.AsyncInitialize:
                await self._serve_async(channel, first)
            else:
                await fatal(
                    self, channel, hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE, "Initialize first"
                )
        except hs.MessageTooLarge as exc:
            await fatal(self, channel, hs.FatalCode.POORLY_FORMED_HEADER, str(exc))
        except ProtocolError as exc:
            await fatal(self, channel, hs.FatalCode.POORLY_FORMED_HEADER, str(exc))
        except (TransportError, OSError):
            pass
        except Exception:
            _log.exception("HiSLIP connection failed")
        finally:
            self._connections -= 1
            channel.close()

    async def _serve_sync(self, channel: Channel, first: hs.Message) -> None:
        request = hs.decode_initialize(first)
        if request.sub_address.lower() not in self.sub_addresses:
            await fatal(
                self,
                channel,
                hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE,
                f"unknown sub-address {request.sub_address!r}",
            )
            return
        if self.silent:
            await anyio.sleep_forever()
        session_id = self._next_id
        self._next_id = self._next_id % 0xFFFF + 1
        session = Session(self, session_id, channel)
        version = session.version = hs.negotiate_version(request.version, self.version)
        self._sessions[session_id] = session
        self._changed()
        try:
            with session.scope:
                features = hs.Feature.OVERLAPPED if self.overlapped else hs.Feature.NONE
                if self.require_tls:
                    features |= hs.Feature.ENCRYPTION
                session.overlapped = self.overlapped
                await channel.send([hs.encode_initialize_response(version, session_id, features)])
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump, self, session)
                    try:
                        await sync_loop(self, session)
                    except (TransportError, OSError):
                        pass  # the client went away
                    except ProtocolError as exc:
                        await fatal(self, channel, hs.FatalCode.POORLY_FORMED_HEADER, str(exc))
                    tg.cancel_scope.cancel()
        finally:
            del self._sessions[session_id]
            self._changed()
            locks_changed(self)  # its locks went with it
            session.cancel()
            if session.async_ is not None:
                session.async_.close()

    async def _serve_async(self, channel: Channel, first: hs.Message) -> None:
        session = self._sessions.get(first.param & 0xFFFF)
        if session is None or session.async_ is not None:
            await fatal(
                self, channel, hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE, "unknown session id"
            )
            return
        session.async_ = channel
        vendor = (self.vendor[0] << 8) | self.vendor[1]
        secure = int(self.tls is not None)  # 2.0: secure connection supported
        await channel.send([hs.encode(T.AsyncInitializeResponse, secure, vendor)])
        session.async_ready.set()
        await async_loop(self, session)

    # -- device callbacks ---------------------------------------------------------------------

    def _on_srq(self, status: int) -> None:
        on_srq(self, status)

    def _wake_all(self) -> None:
        for session in self._sessions.values():
            session.wake()
