"""Serve a simulated instrument over HiSLIP (IVI-6.1) on 127.0.0.1, synchronized mode.

:class:`HislipServer` accepts sessions of two connections each (Initialize on the
synchronous channel, AsyncInitialize with the session id on the asynchronous one) and
serves one :class:`~aiotmc.sim.SimDevice`: Data/DataEnd program messages, responses
split to the client's maximum message size and tagged with the MessageID of the message
that asked, Trigger, device clear (AsyncDeviceClear ... DeviceClearAcknowledge on the
synchronous channel), AsyncStatusQuery (MAV also while a sent response has not been
reported delivered), AsyncServiceRequest latched until the next status query (one
requested meanwhile follows the status response if the device still requests service),
AsyncRemoteLocalControl, AsyncMaximumMessageSize, and AsyncLock / AsyncLockInfo: exclusive
and named shared locks between sessions, waited for up to the requested timeout (locks are
bookkeeping only: a session without the lock is not held back).

Synchronized mode (the default): a new message that arrives while an answer is still
pending interrupts it (IEEE 488.2 query interrupted): the answer is dropped, Interrupted and
AsyncInterrupted are sent. Overlapped mode (``overlapped=True`` offers it; the client picks
it at device clear): messages queue and run one after another, each answer tagged with its
message's MessageID, so a client may send many queries before reading any answer.

Lenient by default where pyvisa-py is known to be wrong: RMT-delivered, MessageID gaps,
status-query MessageIDs and messages above our maximum size are counted
(:attr:`HislipServer.counters`), never rejected. ``strict=True`` refuses them with a
HiSLIP Error instead, and the session goes on (docs/hislip.md, "Strict mode").

Bounded per client (issue 14): headers are checked against ``max_message_size`` before
any payload is kept, a program message is limited to ``max_input`` bytes (Error
"message too large", the message is dropped, the device's error queue is untouched),
``max_connections`` connections, ``init_timeout`` to complete Initialize, ``idle_timeout``
on an idle synchronous channel, ``send_timeout`` for a client that does not read.

HiSLIP 2.0 security (``tls=`` a server ``ssl.SSLContext``): AsyncInitializeResponse says
a secure connection is supported, AsyncStartTLS / StartTLS upgrade the two channels,
``require_tls`` demands it (InitializeResponse encryption bit; a program message on a
plain session is a FatalError; AsyncEndTLS is refused), AsyncEndTLS / EndTLS go back to
plaintext otherwise, and ``users={"name": "password"}`` requires SASL client
authentication (SCRAM-SHA-256 or PLAIN; ANONYMOUS is offered only without a user table)
before any program message is accepted.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from .._exceptions import AuthenticationError, ProtocolError, TransportError
from .._hislip_wire import Channel
from .._types import BytesLike
from ..protocol import hislip as hs
from ..protocol import sasl
from ..protocol.hislip import MessageType as T
from ..protocol.hislip_descriptors import Descriptor, encode_descriptors
from ._serving import BackgroundServer
from .device import SimDevice

__all__ = ["HislipServer"]

_log = logging.getLogger("aiotmc.sim.hislip")
_MAV: Final = 0x10
_MSS: Final = 0x40
_VERSION: Final = (1, 1)
_DATA_END: Final = int(T.DataEnd)
_VERSION_SECURE: Final = (2, 0)
_START_TLS_OK: Final = 1
_START_TLS_ERROR: Final = 3
_AUTH_FAILED: Final = 0x01
_AUTH_SUCCESS: Final = 0x02
_CATCH_UP_STEPS: Final = 200  # scheduler steps a status query waits for the sync channel
_UNWAITED_MAX: Final = 16  # messages handled without a wait before yielding to other tasks
_MAX_SKIP: Final = 64  # looks for a next message skipped after misses, at most


class _Session:
    """One client session: both channels and the synchronized-mode bookkeeping."""

    def __init__(self, server: HislipServer, session_id: int, sync: Channel) -> None:
        self.server = server
        self.id = session_id
        self.sync = sync
        self.async_: Channel | None = None
        self.async_ready = anyio.Event()
        self.sync_lock = anyio.Lock()
        self.async_lock = anyio.Lock()
        self.client_max = hs.DEFAULT_MAX_MESSAGE_SIZE  #: largest payload we may send
        self.input = bytearray()
        self.dropping = False  #: the current program message exceeded max_input
        self.clearing = False  #: between AsyncDeviceClear and DeviceClearComplete
        self.last_id = hs.NO_MESSAGE_ID  #: most recent Data/DataEnd/Trigger received
        self.next_id = hs.FIRST_MESSAGE_ID  #: what the client's next MessageID should be
        self.response_id = hs.UNATTRIBUTED  #: MessageID the next answer carries
        self.unread = False  #: an answer was sent and not yet reported delivered
        self.unreported = 0  #: overlapped mode: answers sent, not yet reported delivered
        self.srq_latched = False
        self.srq_missed = False  #: a service request came while latched
        self.handling = False  #: the sync task holds a message not yet given to the device
        self.kick = anyio.Event()
        self.scope = anyio.CancelScope()
        self.async_scope = anyio.CancelScope()
        self.remote_local: list[int] = []
        self.version = _VERSION  #: the negotiated protocol version
        self.overlapped = False  #: this session runs in overlapped mode
        self.queue: deque[tuple[int, bytes | None]] = deque()  #: overlapped: (id, message)
        self.exclusive = False  #: holds the exclusive lock
        self.shared: str | None = None  #: name of the shared lock it holds
        self.encrypted = False  #: both channels run TLS
        self.user: str | None = None  #: who authenticated (SASL), "" for ANONYMOUS
        self.sasl_mechanism: str | None = None
        self.scram: sasl.ScramServer | None = None

    def cancel(self) -> None:
        self.scope.cancel()
        self.async_scope.cancel()

    def wake(self) -> None:
        self.kick.set()


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
            version = _VERSION if tls is None else _VERSION_SECURE
        if tls is not None and version < _VERSION_SECURE:
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
        self._sessions: dict[int, _Session] = {}
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

    async def _fatal_now(self, session: _Session) -> None:
        text, self.fatal_next = self.fatal_next or "", None
        async with session.sync_lock:
            await self._fatal(session.sync, hs.FatalCode.UNIDENTIFIED, text)
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
                await self._fatal(channel, hs.FatalCode.MAXIMUM_CLIENTS_EXCEEDED, "too many")
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
                await self._fatal(
                    channel, hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE, "Initialize first"
                )
        except hs.MessageTooLarge as exc:
            await self._fatal(channel, hs.FatalCode.POORLY_FORMED_HEADER, str(exc))
        except ProtocolError as exc:
            await self._fatal(channel, hs.FatalCode.POORLY_FORMED_HEADER, str(exc))
        except (TransportError, OSError):
            pass
        except Exception:
            _log.exception("HiSLIP connection failed")
        finally:
            self._connections -= 1
            channel.close()

    async def _fatal(self, channel: Channel, code: int, text: str) -> None:
        self.counters["fatal"] += 1
        channel.tail = []
        with anyio.move_on_after(1.0, shield=True):
            try:
                await channel.send([hs.encode(T.FatalError, code, 0, text.encode()[:200])])
            except (TransportError, OSError):
                pass

    async def _error(self, session: _Session, code: int, text: str) -> None:
        self.counters["errors"] += 1
        await self._send(
            session, session.sync, session.sync_lock, [hs.encode(T.Error, code, 0, text.encode())]
        )

    async def _send(
        self, session: _Session, channel: Channel, lock: anyio.Lock, buffers: list[BytesLike]
    ) -> None:
        if lock.locked() or channel.unsent:
            async with lock:
                await self._send_locked(session, channel, buffers, begun=False)
            return
        if channel.send_now(buffers):
            return  # the usual case: out whole at once, nobody else sending meanwhile
        lock.acquire_nowait()  # still free: nothing ran since it was checked
        try:
            await self._send_locked(session, channel, buffers, begun=channel.unsent)
        finally:
            lock.release()

    async def _send_locked(
        self, session: _Session, channel: Channel, buffers: list[BytesLike], *, begun: bool
    ) -> None:
        """Send ``buffers`` (``begun``: the rest of what :meth:`Channel.send_now` began)."""
        deadline = anyio.current_time() + self.send_timeout
        try:
            if begun:
                await channel.flush(deadline)
            else:
                await channel.send(buffers, deadline)
        except BaseException:
            session.cancel()  # a half-sent message: the session cannot go on
            raise

    # -- the synchronous channel ------------------------------------------------------------

    async def _serve_sync(self, channel: Channel, first: hs.Message) -> None:
        request = hs.decode_initialize(first)
        if request.sub_address.lower() not in self.sub_addresses:
            await self._fatal(
                channel,
                hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE,
                f"unknown sub-address {request.sub_address!r}",
            )
            return
        if self.silent:
            await anyio.sleep_forever()
        session_id = self._next_id
        self._next_id = self._next_id % 0xFFFF + 1
        session = _Session(self, session_id, channel)
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
                    tg.start_soon(self._pump, session)
                    try:
                        await self._sync_loop(session)
                    except (TransportError, OSError):
                        pass  # the client went away
                    except ProtocolError as exc:
                        await self._fatal(channel, hs.FatalCode.POORLY_FORMED_HEADER, str(exc))
                    tg.cancel_scope.cancel()
        finally:
            del self._sessions[session_id]
            self._changed()
            self._locks_changed()  # its locks went with it
            session.cancel()
            if session.async_ is not None:
                session.async_.close()

    async def _sync_loop(self, session: _Session) -> None:
        channel = session.sync
        unwaited = 0  # messages handled since the last wait
        # The next message is rarely there already when an answer has gone out: after a
        # look that found nothing, skip the next 1, 2, 4 ... 64 looks (each a failed recv)
        skip, backoff = 0, 1
        while True:
            looked = not skip
            message = channel.receive_nowait(look=looked)
            if not looked:
                skip -= 1
            elif message is None:
                skip, backoff = backoff, min(backoff * 2, _MAX_SKIP)
            else:
                backoff = 1
            if message is None:
                unwaited = 0
                # the idle limit is a timer on the wait itself, not a cancel scope
                message = await channel.receive_until(channel.clock() + self.idle_timeout)
                if message is None:
                    return  # idle too long: end the session
            elif unwaited >= _UNWAITED_MAX:  # a client that never lets us wait
                unwaited = 0
                await checkpoint()  # must not starve the other tasks
            unwaited += 1
            session.handling = True
            try:
                await self._handle_sync(session, message)
            finally:
                session.handling = channel.reader.buffered > 0

    async def _handle_sync(self, session: _Session, message: hs.Message) -> None:
        type_ = message.type
        if type_ in (T.Data, T.DataEnd, T.Trigger):
            if self.fatal_next is not None:
                await self._fatal_now(session)
                return
            if session.clearing:
                return  # discarded until DeviceClearComplete
            if (self.require_tls or self.users is not None) and not await self._admitted(session):
                return
            if (
                self.strict or len(message.payload) > self.max_message_size - hs.HEADER_SIZE
            ) and await self._breaks_rules(session, message):
                return
            if message.control & 1:
                if not session.unread:
                    self.counters["rmt_extra"] += 1  # pyvisa-py never clears it
                session.unread = False
            elif session.unread:
                self.counters["rmt_missing"] += 1  # or an answer the client abandoned
            if message.param != session.next_id:
                self.counters["id_gap"] += 1  # not +2 from the previous one (§3.1.2)
            session.next_id = (message.param + 2) & 0xFFFFFFFF
            session.last_id = message.param
            if session.overlapped and type_ == T.Trigger:
                session.queue.append((message.param, None))  # in turn, after the others
                session.wake()
                return
            if type_ == T.Trigger:
                if self.device.busy:
                    await self._interrupt_if_pending(session, message.param)
                session.response_id = message.param
                self.device.trigger()
                session.wake()
                return
            payload = message.payload
            whole = type_ == T.DataEnd and not session.input and not session.dropping
            if whole and len(payload) <= self.max_input:
                program = payload  # the usual case: one DataEnd is the whole message
            else:
                if not session.dropping:
                    if len(session.input) + len(payload) > self.max_input:
                        session.dropping = True
                        session.input.clear()
                        await self._error(
                            session, hs.ErrorCode.MESSAGE_TOO_LARGE, "program message too large"
                        )
                    else:
                        session.input += payload
                if type_ != T.DataEnd:
                    return
                if session.dropping:
                    session.dropping = False
                    return
                program = bytes(session.input)
                session.input.clear()
            if session.overlapped:  # executed one after another, answers by MessageID
                session.queue.append((message.param, program))
                session.wake()
                return
            device = self.device
            if device.busy:
                await self._interrupt_if_pending(session, message.param)
            session.response_id = message.param
            device.write(program)
            parts = device.read_parts()  # answered at once: no hand-over to the pump
            if parts is not None:
                session.unread = True
                await self._send_response(session, parts, message.param)
            if device.busy or device.next_deadline() is not None:
                session.wake()  # more to come later: the pump sends it
        elif type_ == T.DeviceClearComplete:
            session.overlapped = self.overlapped and bool(message.control & hs.Feature.OVERLAPPED)
            session.clearing = False
            session.input.clear()
            session.dropping = False
            session.last_id = hs.NO_MESSAGE_ID
            session.next_id = hs.FIRST_MESSAGE_ID
            await self._send(
                session,
                session.sync,
                session.sync_lock,
                [hs.encode(T.DeviceClearAcknowledge, int(session.overlapped))],
            )
        elif type_ == T.StartTLS:
            await self._start_tls_sync(session)
        elif type_ == T.EndTLS:
            async with session.sync_lock:
                deadline = anyio.current_time() + self.init_timeout
                await session.sync.end_tls(deadline=deadline)
            self.counters["tls_ended"] += 1
        elif type_ == T.GetDescriptors and session.version >= _VERSION_SECURE:
            count, payload = encode_descriptors(self.descriptors)
            await self._reply_sync(session, hs.encode(T.GetDescriptorsResponse, 0, count, payload))
        elif type_ in (T.GetSaslMechanismList, T.AuthenticationStart, T.AuthenticationExchange):
            await self._authenticate(session, message)
        else:
            await self._error(
                session, hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE, f"message type {type_}"
            )

    # -- HiSLIP 2.0 security ----------------------------------------------------------------

    async def _admitted(self, session: _Session) -> bool:
        """May this session send program messages (encrypted / authenticated if required)?"""
        if self.require_tls and not session.encrypted:
            await self._fatal(
                session.sync, hs.FatalCode.SECURE_CONNECTION_FAILED, "encryption required"
            )
            session.cancel()
            return False
        if self.users is not None and session.user is None:
            await self._error(session, hs.ErrorCode.AUTHENTICATION_FAILED, "authenticate first")
            return False
        return True

    @staticmethod
    def _report_delivery(session: _Session) -> bool:
        """RMT-delivered came: was a response sent and not yet reported delivered? In
        overlapped mode several may be in flight: each RMT reports one of them."""
        if session.overlapped:
            if not session.unreported:
                return False
            session.unreported -= 1
            return True
        return session.unread

    async def _breaks_rules(self, session: _Session, message: hs.Message) -> bool:
        """A Data, DataEnd or Trigger above our maximum message size (header included) is
        counted (``too_large``); in strict mode it, RMT-delivered without a delivered
        response and a MessageID not +2 from the previous one are refused: Error, and the
        program message is dropped. True when refused."""
        too_large = len(message.payload) > self.max_message_size - hs.HEADER_SIZE
        if too_large:
            self.counters["too_large"] += 1
        if not self.strict:
            return False
        rmt_ok = self._report_delivery(session) if message.control & 1 else True
        if too_large:
            code, reason = hs.ErrorCode.MESSAGE_TOO_LARGE, "message above the maximum size"
        elif not rmt_ok:
            self.counters["rmt_extra"] += 1
            code, reason = hs.ErrorCode.UNIDENTIFIED, "RMT-delivered, but nothing was delivered"
        elif message.param != session.next_id:
            self.counters["id_gap"] += 1
            code = hs.ErrorCode.UNIDENTIFIED
            reason = f"MessageID {message.param:#x}, expected {session.next_id:#x}"
        else:
            return False
        self.counters["strict_refused"] += 1
        if message.control & 1:
            session.unread = False
        session.next_id = (message.param + 2) & 0xFFFFFFFF
        session.last_id = message.param
        session.input.clear()
        session.dropping = message.type == T.Data  # the rest of this program message too
        await self._error(session, code, reason)
        return True

    async def _start_tls_async(self, session: _Session) -> None:
        """AsyncStartTLS: answer, then the TLS handshake on the asynchronous channel."""
        channel = session.async_
        assert channel is not None
        async with session.async_lock:
            if self.tls is None or channel.tls is not None:
                reply = hs.encode(T.AsyncStartTLSResponse, _START_TLS_ERROR)
                await channel.send([reply], anyio.current_time() + self.send_timeout)
                return
            await channel.send(
                [hs.encode(T.AsyncStartTLSResponse, _START_TLS_OK)],
                anyio.current_time() + self.send_timeout,
            )
            await self._handshake(session, channel)

    async def _end_tls_async(self, session: _Session) -> None:
        """AsyncEndTLS: answer, then close TLS on the asynchronous channel (refused while
        encryption is required or off)."""
        channel = session.async_
        assert channel is not None
        async with session.async_lock:
            deadline = anyio.current_time() + self.send_timeout
            if self.require_tls or channel.tls is None:
                await channel.send([hs.encode(T.AsyncEndTLSResponse, _START_TLS_ERROR)], deadline)
                return
            session.encrypted = False
            await channel.send([hs.encode(T.AsyncEndTLSResponse, _START_TLS_OK)], deadline)
            await channel.end_tls(deadline=deadline)

    async def _start_tls_sync(self, session: _Session) -> None:
        if self.tls is None or session.sync.tls is not None:
            await self._error(session, hs.ErrorCode.UNRECOGNIZED_CONTROL_CODE, "no TLS here")
            return
        async with session.sync_lock:
            await self._handshake(session, session.sync)
        session.encrypted = session.async_ is not None and session.async_.tls is not None

    async def _handshake(self, session: _Session, channel: Channel) -> None:
        assert self.tls is not None
        try:
            await channel.start_tls(
                self.tls, server_side=True, deadline=anyio.current_time() + self.init_timeout
            )
        except (AuthenticationError, TransportError):
            self.counters["tls_failed"] += 1
            session.cancel()
            raise
        self.counters["tls"] += 1

    def _mechanisms(self) -> list[str]:
        if self.users is None:
            return ["ANONYMOUS"]
        return ["SCRAM-SHA-256", "PLAIN"]

    async def _authenticate(self, session: _Session, message: hs.Message) -> None:
        """GetSaslMechanismList, AuthenticationStart, AuthenticationExchange."""
        type_ = message.type
        if type_ == T.GetSaslMechanismList:
            names = " ".join(self._mechanisms()).encode("ascii")
            await self._reply_sync(session, hs.encode(T.GetSaslMechanismListResponse, 0, 0, names))
            return
        if type_ == T.AuthenticationStart:
            chosen = message.payload.decode("ascii", "replace").upper()
            session.sasl_mechanism = chosen
            wants_scram = chosen == "SCRAM-SHA-256"
            session.scram = sasl.ScramServer(self.users or {}) if wants_scram else None
            return
        name = session.sasl_mechanism
        user: str | None = None
        final = b""
        if not session.encrypted or name not in self._mechanisms():
            pass  # SASL only inside TLS, and only what we offered
        elif name == "ANONYMOUS":
            user = ""
        elif name == "PLAIN":
            user = sasl.verify_plain(message.payload, self.users or {})
        elif session.scram is not None:
            scram = session.scram
            outcome: tuple[str, bytes] | None = None
            try:
                if not scram.started:
                    challenge = scram.first(message.payload)
                    reply = hs.encode(T.AuthenticationExchange, 0, 0, challenge)
                    await self._reply_sync(session, reply)
                    return  # the client answers with its proof
                outcome = scram.final(message.payload)
            except sasl.SaslError:
                outcome = None
            if outcome is not None:
                user, final = outcome
        if user is None:
            self.counters["auth_failed"] += 1
            session.sasl_mechanism = session.scram = None
            result = hs.encode(T.AuthenticationResult, _AUTH_FAILED, 1)
        else:
            self.counters["auth_ok"] += 1
            session.user = user
            session.sasl_mechanism = session.scram = None
            result = hs.encode(T.AuthenticationResult, _AUTH_SUCCESS, 0, final)
        await self._reply_sync(session, result)

    async def _reply_sync(self, session: _Session, message: bytes) -> None:
        await self._send(session, session.sync, session.sync_lock, [message])

    async def _interrupt_if_pending(self, session: _Session, message_id: int) -> None:
        """A new message while an answer is pending interrupts it (synchronized mode)."""
        if not self.device.busy:
            return
        self.counters["interrupted"] += 1
        self.device.device_clear()
        await self._send(
            session, session.sync, session.sync_lock, [hs.encode(T.Interrupted, 0, message_id)]
        )
        if session.async_ is not None:
            await self._send(
                session,
                session.async_,
                session.async_lock,
                [hs.encode(T.AsyncInterrupted, 0, message_id)],
            )

    async def _pump(self, session: _Session) -> None:
        """Send each answer the device produces, tagged, split to the client's limit."""
        try:
            await self._pump_answers(session)
        except (TransportError, OSError):
            session.cancel()

    async def _pump_answers(self, session: _Session) -> None:
        device = self.device
        while True:
            kick = session.kick = anyio.Event()
            if session.queue and not device.busy:  # overlapped: the next message, in turn
                message_id, program = session.queue.popleft()
                session.response_id = message_id
                if program is None:
                    device.trigger()
                else:
                    device.write(program)
                await checkpoint()  # a long pipeline must not starve the other tasks
                continue
            # nothing goes out before this session's first message: output left by
            # another session is not its answer (and must not precede StartTLS)
            parts = None if session.last_id == hs.NO_MESSAGE_ID else device.read_parts()
            if parts is not None:
                session.unread = True
                await self._send_response(session, parts, session.response_id)
                continue
            deadline = device.next_deadline()
            delay = math.inf if deadline is None else max(0.0, deadline - device.clock())
            with anyio.move_on_after(delay):
                await kick.wait()

    async def _send_response(
        self, session: _Session, parts: list[BytesLike], message_id: int
    ) -> None:
        session.unreported += 1
        limit = max(1, min(session.client_max, self.max_message_size) - hs.HEADER_SIZE)
        size = 0
        for part in parts:
            size += part.nbytes if isinstance(part, memoryview) else len(part)
        if 0 < size <= limit:  # the usual case: one DataEnd
            header = hs.HEADER.pack(hs.PROLOGUE, _DATA_END, 0, message_id, size)
            await self._send(session, session.sync, session.sync_lock, [header, *parts])
            return
        ids = _Fixed(message_id)
        messages = hs.data_messages(parts, max_payload=limit, end=True, ids=ids, rmt=False)
        for header, pieces in messages:
            await self._send(session, session.sync, session.sync_lock, [header, *pieces])

    # -- the asynchronous channel -----------------------------------------------------------

    async def _serve_async(self, channel: Channel, first: hs.Message) -> None:
        session = self._sessions.get(first.param & 0xFFFF)
        if session is None or session.async_ is not None:
            await self._fatal(
                channel, hs.FatalCode.INVALID_INITIALIZATION_SEQUENCE, "unknown session id"
            )
            return
        session.async_ = channel
        vendor = (self.vendor[0] << 8) | self.vendor[1]
        secure = int(self.tls is not None)  # 2.0: secure connection supported
        await channel.send([hs.encode(T.AsyncInitializeResponse, secure, vendor)])
        session.async_ready.set()
        try:
            with session.async_scope:
                while True:
                    message = await channel.receive()
                    await self._handle_async(session, message)
        finally:
            session.cancel()  # one channel gone ends the session

    async def _handle_async(self, session: _Session, message: hs.Message) -> None:
        assert session.async_ is not None
        type_ = message.type
        reply: bytes
        if type_ == T.AsyncMaximumMessageSize:
            session.client_max = max(hs.HEADER_SIZE + 1, hs.decode_max_message_size(message))
            reply = hs.encode_max_message_size(
                T.AsyncMaximumMessageSizeResponse, self.max_message_size
            )
        elif type_ == T.AsyncStatusQuery:
            await self._catch_up(session)
            if self.strict and await self._refuses_status(session, message):
                return
            if message.control & 1:
                session.unread = False
            if message.param != session.last_id:
                self.counters["status_id_mismatch"] += 1
            stb = self.device.serial_poll()
            if session.unread or (session.overlapped and (session.queue or self.device.busy)):
                stb |= _MAV  # sent and not reported delivered, or still to come
            session.srq_latched = False
            reply = hs.encode(T.AsyncStatusResponse, stb & 0xFF)
            if session.srq_missed:  # requested while latched: send it now if still due
                session.srq_missed = False
                status = self.device.status_byte
                if status & _MSS:
                    session.srq_latched = True
                    reply += hs.encode(T.AsyncServiceRequest, status & 0xFF)
        elif type_ == T.AsyncDeviceClear:
            await self._catch_up(session)
            self.device.device_clear()
            session.clearing = True
            session.unread = False
            session.unreported = 0
            session.input.clear()
            session.queue.clear()
            reply = hs.encode(T.AsyncDeviceClearAcknowledge, int(self.overlapped))
        elif type_ == T.AsyncRemoteLocalControl:
            session.remote_local.append(message.control)
            reply = hs.encode(T.AsyncRemoteLocalResponse)
        elif type_ == T.AsyncLock:
            reply = hs.encode(T.AsyncLockResponse, await self._lock(session, message))
        elif type_ == T.AsyncStartTLS:
            await self._start_tls_async(session)
            return
        elif type_ == T.AsyncEndTLS:
            await self._end_tls_async(session)
            return
        elif type_ == T.AsyncLockInfo:
            holders = sum(1 for s in self._sessions.values() if s.exclusive or s.shared)
            exclusive = any(s.exclusive for s in self._sessions.values())
            reply = hs.encode(T.AsyncLockInfoResponse, int(exclusive), holders)
        else:
            self.counters["errors"] += 1
            reply = hs.encode(T.Error, hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE)
        await self._send(session, session.async_, session.async_lock, [reply])

    async def _refuses_status(self, session: _Session, message: hs.Message) -> bool:
        """Strict mode: Error instead of AsyncStatusResponse for a status query whose
        MessageID the client never sent (since the last device clear), or with
        RMT-delivered when no response was delivered.

        The two channels are read by two tasks, so the synchronous one may already have
        handled messages the client sent after this query: any MessageID sent since the
        clear is accepted (they are +2 apart: strict mode refuses gaps), the next one
        (pyvisa-py's mistake) is not."""
        if not _sent_since_clear(session, message.param):
            self.counters["status_id_mismatch"] += 1
            reason = f"status query MessageID {message.param:#x}, last was {session.last_id:#x}"
        elif message.control & 1 and not self._report_delivery(session):
            reason = "RMT-delivered in a status query, but no response was delivered"
        else:
            return False
        if message.control & 1:
            session.unread = False
        self.counters["strict_refused"] += 1
        assert session.async_ is not None
        error = hs.encode(T.Error, hs.ErrorCode.UNIDENTIFIED, 0, reason.encode())
        await self._send(session, session.async_, session.async_lock, [error])
        return True

    async def _lock(self, session: _Session, message: hs.Message) -> int:
        """Grant, wait for, or release a lock; the AsyncLockResponse control code."""
        if message.control == 0:  # release
            if session.exclusive:
                session.exclusive = False
                result = hs.LockResult.SUCCESS
            elif session.shared is not None:
                session.shared = None
                result = hs.LockResult.SUCCESS_SHARED
            else:
                return hs.LockResult.ERROR
            self._locks_changed()
            return result
        if message.control != 1 or len(message.payload) > hs.MAX_SUB_ADDRESS:
            return hs.LockResult.ERROR
        name = message.payload.decode("ascii", "replace") or None
        with anyio.move_on_after(message.param / 1000):
            while not self._grantable(session, name):
                if self._lock_event is None:
                    self._lock_event = anyio.Event()
                self.lock_waiters += 1
                self._changed()
                try:
                    await self._lock_event.wait()
                finally:
                    self.lock_waiters -= 1
            if name is None:
                session.exclusive = True
            else:
                session.shared = name
            return hs.LockResult.SUCCESS
        return hs.LockResult.FAILURE

    def _grantable(self, session: _Session, name: str | None) -> bool:
        others = [s for s in self._sessions.values() if s is not session]
        if any(s.exclusive for s in others):
            return False
        if name is None:
            return not any(s.shared is not None for s in others)
        return all(s.shared in (None, name) for s in others)

    def _locks_changed(self) -> None:
        event, self._lock_event = self._lock_event, None
        if event is not None:
            event.set()

    async def _catch_up(self, session: _Session) -> None:
        """Let the synchronous channel hand what the client sent before this asynchronous
        request to the device first (both reach us in any order; bounded)."""
        for _ in range(_CATCH_UP_STEPS):
            if not (session.handling or session.sync.readable_now()):
                return
            await checkpoint()

    # -- device callbacks ---------------------------------------------------------------------

    def _on_srq(self, status: int) -> None:
        task_group = self._task_group
        if task_group is None:
            return
        for session in self._sessions.values():
            if session.async_ is None:
                continue
            if session.srq_latched:
                session.srq_missed = True
            else:
                session.srq_latched = True
                task_group.start_soon(self._send_srq, session, status)

    async def _send_srq(self, session: _Session, status: int) -> None:
        channel = session.async_
        if channel is None or channel.closed:
            return
        try:
            message = hs.encode(T.AsyncServiceRequest, status & 0xFF)
            await self._send(session, channel, session.async_lock, [message])
        except (TransportError, OSError):
            pass

    def _wake_all(self) -> None:
        for session in self._sessions.values():
            session.wake()


def _sent_since_clear(session: _Session, message_id: int) -> bool:
    """Did the client send ``message_id`` since the last device clear (or nothing yet)?"""
    last = session.last_id
    if message_id in (last, hs.NO_MESSAGE_ID):
        return True
    if last == hs.NO_MESSAGE_ID:
        return False
    offset = (message_id - hs.FIRST_MESSAGE_ID) & 0xFFFFFFFF
    return offset % 2 == 0 and offset <= (last - hs.FIRST_MESSAGE_ID) & 0xFFFFFFFF


class _Fixed:
    """A MessageID source that always gives the same id (a server echoes one)."""

    __slots__ = ("last", "value")

    def __init__(self, value: int) -> None:
        self.value = value
        self.last = value

    def take(self) -> int:
        return self.value
