"""A session's state, what its handlers see of the server, and how anything is sent.

:class:`Session` holds both channels of one client session and its synchronized-mode
bookkeeping; :class:`ServerState` is the part of the server the channel handlers use
(:class:`~aiotmc.sim.hislip_server.HislipServer` provides it); :meth:`Session.send`,
:meth:`Session.error` and :func:`fatal` put messages on a channel. The bottom of the
package: it imports none of the others.
"""

from __future__ import annotations

import ssl
from collections import Counter, deque
from typing import Final, Protocol

import anyio
from anyio.abc import TaskGroup

from ..._exceptions import TransportError
from ..._hislip_wire import Channel
from ..._types import BytesLike
from ...protocol import hislip as hs
from ...protocol import sasl
from ...protocol.hislip import MessageType as T
from ...protocol.hislip_descriptors import Descriptor
from ..device import SimDevice

VERSION: Final = (1, 1)
VERSION_SECURE: Final = (2, 0)


class ServerState(Protocol):
    """What the channel handlers read and change of the server (see
    :class:`~aiotmc.sim.hislip_server.HislipServer` for each setting)."""

    device: SimDevice
    vendor: bytes
    max_message_size: int
    max_input: int
    init_timeout: float
    idle_timeout: float
    send_timeout: float
    overlapped: bool
    tls: ssl.SSLContext | None
    require_tls: bool
    users: dict[str, str] | None
    descriptors: list[Descriptor]
    strict: bool
    counters: Counter[str]
    fatal_next: str | None
    lock_waiters: int
    _task_group: TaskGroup | None
    _sessions: dict[int, Session]
    _lock_event: anyio.Event | None

    def _changed(self) -> None:
        """Wake :meth:`~aiotmc.sim.hislip_server.HislipServer.wait_sessions`."""


class Session:
    """One client session: both channels and the synchronized-mode bookkeeping."""

    def __init__(self, server: ServerState, session_id: int, sync: Channel) -> None:
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
        self.version = VERSION  #: the negotiated protocol version
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

    def report_delivery(self) -> bool:
        """RMT-delivered came: was a response sent and not yet reported delivered? In
        overlapped mode several may be in flight: each RMT reports one of them."""
        if self.overlapped:
            if not self.unreported:
                return False
            self.unreported -= 1
            return True
        return self.unread

    async def send(self, channel: Channel, lock: anyio.Lock, buffers: list[BytesLike]) -> None:
        """Send one message on ``channel`` (this session's), ``lock`` its send lock."""
        if lock.locked() or channel.unsent:
            async with lock:
                await self._send_locked(channel, buffers, begun=False)
            return
        if channel.send_now(buffers):
            return  # the usual case: out whole at once, nobody else sending meanwhile
        lock.acquire_nowait()  # still free: nothing ran since it was checked
        try:
            await self._send_locked(channel, buffers, begun=channel.unsent)
        finally:
            lock.release()

    async def _send_locked(
        self, channel: Channel, buffers: list[BytesLike], *, begun: bool
    ) -> None:
        """Send ``buffers`` (``begun``: the rest of what :meth:`Channel.send_now` began)."""
        deadline = anyio.current_time() + self.server.send_timeout
        try:
            if begun:
                await channel.flush(deadline)
            else:
                await channel.send(buffers, deadline)
        except BaseException:
            self.cancel()  # a half-sent message: the session cannot go on
            raise

    async def reply_sync(self, message: bytes) -> None:
        """Send ``message`` on the synchronous channel."""
        await self.send(self.sync, self.sync_lock, [message])

    async def error(self, code: int, text: str) -> None:
        """Send Error on the synchronous channel (counted)."""
        self.server.counters["errors"] += 1
        await self.send(self.sync, self.sync_lock, [hs.encode(T.Error, code, 0, text.encode())])


async def fatal(server: ServerState, channel: Channel, code: int, text: str) -> None:
    """Send FatalError on ``channel`` (counted; at most a second, errors ignored)."""
    server.counters["fatal"] += 1
    channel.tail = []
    with anyio.move_on_after(1.0, shield=True):
        try:
            await channel.send([hs.encode(T.FatalError, code, 0, text.encode()[:200])])
        except (TransportError, OSError):
            pass
