"""A NATS client connection on anyio (asyncio and trio): publish, subscribe, inboxes.

Only what remote instruments and ``aiotmc agent`` need from core NATS, on the sans-IO
:mod:`aiotmc.protocol.nats`: ``CONNECT`` (user/password or token), ``PUB``/``HPUB``,
``SUB``/``UNSUB`` (queue groups too), ``PING``/``PONG`` both ways, and one wildcard inbox
subscription per connection that routes replies to per-request streams (a request may get
several replies: a block comes in chunks). The reader is a loop-owned background task
(:mod:`aiotmc._background`), so a connection may be opened and closed in different tasks.

A lost connection fails every waiting inbox and subscription with
:class:`~aiotmc.ConnectionLostError`; the owner reconnects by opening a new one.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import secrets
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

import anyio
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.tls import TLSStream

from ..._background import BackgroundTask, spawn
from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    PermissionDeniedError,
    ProtocolError,
    RemoteProtocolError,
)
from ..._types import BytesLike
from ..._version import __version__
from ...protocol.nats import (
    NEED_DATA,
    Err,
    Info,
    Msg,
    NatsParser,
    Ping,
    Pong,
    encode_connect,
    encode_pub,
    encode_sub,
    encode_unsub,
)

__all__ = ["NatsConnection", "NatsServer", "ReplyGroup", "Subscription"]

_log = logging.getLogger("aiotmc.nats")
_RECV_SIZE: Final = 256 * 1024
_SMALL: Final = 64 * 1024  # parts below this are joined into one write
_SEND_TIMEOUT: Final = 30.0
_PUBLISH_REFUSED: Final = re.compile(r'publish to "([^"]+)"', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class NatsServer:
    """Where a NATS server listens, and how to log in."""

    host: str = "127.0.0.1"
    port: int = 4222
    user: str | None = None
    password: str | None = None
    token: str | None = None
    #: TLS: the context that verifies the server (and may carry a client certificate).
    tls: ssl.SSLContext | None = None
    #: The name the server's certificate must carry (default: ``host``).
    tls_hostname: str | None = None

    def __repr__(self) -> str:  # credentials never shown
        who = f"{self.user}@" if self.user else ""
        return f"NatsServer({who}{self.host}:{self.port})"


class Subscription:
    """Messages of one subscription, as a receive stream (bounded: overflow is dropped
    and counted, as the NATS server itself does with slow consumers)."""

    def __init__(self, connection: NatsConnection, sid: int, subject: str, maxsize: float):
        self.connection = connection
        self.sid = sid
        self.subject = subject
        self.dropped = 0
        self._send, self.messages = anyio.create_memory_object_stream[Msg](maxsize)

    def _deliver(self, msg: Msg) -> None:
        try:
            self._send.send_nowait(msg)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def _end(self) -> None:
        self._send.close()

    async def unsubscribe(self) -> None:
        """Stop the subscription and close its stream (idempotent)."""
        try:
            await self.connection._unsubscribe(self)
        finally:
            self.messages.close()


class ReplyGroup:
    """The replies to a batch of requests published together: request ``i`` names
    :meth:`subject` ``(i)`` as its reply subject, its answer lands in :attr:`replies`
    (by ``i``), and one :meth:`wait` covers the whole batch. The reader stores each
    reply directly, so a thousand answers cost a thousand dictionary stores, not a
    thousand stream items and task wake-ups. Open with :meth:`NatsConnection.open_group`,
    close with :meth:`NatsConnection.close_group`."""

    __slots__ = ("_done", "_expected", "error", "prefix", "replies")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        #: Request index -> its reply (the first one; later ones are ignored).
        self.replies: dict[int, Msg] = {}
        #: Set when the connection is lost, or a publish on it is refused.
        self.error: Exception | None = None
        self._expected = 0
        self._done = anyio.Event()

    def subject(self, index: int) -> str:
        """The reply subject of request ``index``."""
        return f"{self.prefix}-{index}"

    async def wait(self, count: int) -> None:
        """Return once ``count`` replies are in (bound it with a timeout); raises
        :attr:`error` when the connection was lost or a publish refused meanwhile."""
        self._expected = count
        if len(self.replies) < count and self.error is None:
            await self._done.wait()
        if self.error is not None:
            raise self.error

    def _deliver(self, index: int, msg: Msg) -> None:
        self.replies.setdefault(index, msg)
        if len(self.replies) >= self._expected > 0:
            self._done.set()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._done.set()


class NatsConnection:
    """One connection to a NATS server. Open with :meth:`connect`; close with :meth:`aclose`."""

    def __init__(self, stream: ByteStream, info: Info, server: NatsServer) -> None:
        self.server = server
        self.info = info
        self.max_payload = info.max_payload
        self._stream = stream
        self._parser = NatsParser(max_payload=max(info.max_payload, 1024) + 64 * 1024)
        self._send_lock = anyio.Lock()
        self._sids = itertools.count(1)
        self._subs: dict[int, Subscription] = {}
        self._inbox_prefix = f"_INBOX.{secrets.token_hex(8)}"
        self._inbox_sid = 0
        self._inboxes: dict[str, MemoryObjectSendStream[Msg]] = {}
        self._requests: dict[str, str] = {}  # inbox -> the subject its request went to
        self._groups: dict[str, ReplyGroup] = {}  # reply prefix -> its group
        self._tokens = itertools.count(1)
        self._pongs: list[anyio.Event] = []
        self._reader: BackgroundTask | None = None
        self._closed = False
        self._closed_event = anyio.Event()
        self.error: Exception | None = None  #: why the connection ended, if it failed

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    async def connect(
        cls, server: NatsServer, *, timeout: float | None = 10.0, name: str = "aiotmc"
    ) -> NatsConnection:
        """Connect, log in and wait for the server's PONG (typed errors on failure)."""
        where = f"nats://{server.host}:{server.port}"
        try:
            with anyio.fail_after(math.inf if timeout is None else timeout):
                tcp = await anyio.connect_tcp(server.host, server.port)
                try:
                    return await cls._handshake(tcp, server, name)
                except BaseException:
                    await anyio.aclose_forcefully(tcp)
                    raise
        except TimeoutError:
            raise ConnectTimeout(f"no NATS server answered at {where}") from None
        except ConnectError:  # our own (PermissionDeniedError is also an OSError)
            raise
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            # the server went away in the middle of the handshake (a node being killed
            # still accepts for a moment): try again, like a refusal
            raise ConnectError(f"NATS at {where} closed the connection while connecting") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to NATS at {where}: {exc}") from exc

    @classmethod
    async def _handshake(cls, stream: ByteStream, server: NatsServer, name: str) -> NatsConnection:
        parser = NatsParser()
        info: Info | None = None
        while info is None:
            event = parser.next_event()
            if event is NEED_DATA:
                parser.feed(await stream.receive(4096))
                continue
            if isinstance(event, Info):
                info = event
            elif isinstance(event, Err):
                raise ConnectError(f"NATS server refused: {event.message}")
        if server.tls is not None:
            try:
                stream = await TLSStream.wrap(
                    stream,
                    hostname=server.tls_hostname or server.host,
                    ssl_context=server.tls,
                    standard_compatible=False,
                )
            except (ssl.SSLError, OSError) as exc:
                raise ConnectError(f"TLS with the NATS server failed: {exc}") from exc
        elif info.fields.get("tls_required"):
            raise ConnectError(
                "the NATS server requires TLS: give the connection an ssl.SSLContext (tls=)"
            )
        await stream.send(
            encode_connect(
                name=name,
                version=__version__,
                user=server.user,
                password=server.password,
                token=server.token,
            )
        )
        while True:  # until the PONG of our PING: the login was accepted
            event = parser.next_event()
            if event is NEED_DATA:
                parser.feed(await stream.receive(4096))
                continue
            if isinstance(event, Pong):
                break
            if isinstance(event, Err):
                message = event.message
                if "authoriz" in message.lower() or "authentic" in message.lower():
                    raise PermissionDeniedError(f"NATS login refused: {message}")
                raise ConnectError(f"NATS server refused: {message}")
        self = cls(stream, info, server)
        self._parser = parser
        parser.max_payload = max(info.max_payload, 1024) + 64 * 1024
        self._inbox_sid = next(self._sids)
        await stream.send(encode_sub(f"{self._inbox_prefix}.*", self._inbox_sid))
        self._reader = spawn(self._read_loop, name=f"nats reader {server.host}:{server.port}")
        return self

    @property
    def closed(self) -> bool:
        """True once the connection is closed or lost."""
        return self._closed

    async def wait_closed(self) -> None:
        """Wait until the connection is closed or lost."""
        await self._closed_event.wait()

    async def aclose(self) -> None:
        """Close the connection (idempotent; completes under cancellation)."""
        if self._closed and self._reader is None:
            return
        self._fail(None)
        with anyio.CancelScope(shield=True):
            if self._reader is not None:
                reader, self._reader = self._reader, None
                await reader.stop()
            await anyio.aclose_forcefully(self._stream)

    @classmethod
    async def connect_any(
        cls,
        servers: Sequence[NatsServer],
        *,
        timeout: float | None = 10.0,
        name: str = "aiotmc",
    ) -> NatsConnection:
        """The first of ``servers`` that accepts (a cluster: any node will do); the last
        failure when none does."""
        if not servers:
            raise ConnectError("no NATS server to connect to")
        last: ConnectError | None = None
        for server in servers:
            try:
                return await cls.connect(server, timeout=timeout, name=name)
            except ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    def cluster(self) -> list[NatsServer]:
        """This server and the other nodes of its cluster (from its ``INFO``), with this
        connection's login: where to go when this node stops."""
        out = [self.server]
        urls = self.info.fields.get("connect_urls") or []
        for url in urls if isinstance(urls, list) else []:
            host, _, port = str(url).rpartition(":")
            host = host.strip("[]")
            if host and port.isdigit():
                node = replace(self.server, host=host, port=int(port))
                if node not in out:
                    out.append(node)
        return out

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, parts: Sequence[BytesLike]) -> None:
        if self._closed:
            raise self._lost()
        async with self._send_lock:
            # A frame cut by a cancellation would corrupt the stream for every later one:
            # once started, a write completes (bounded: a server that reads nothing for
            # _SEND_TIMEOUT seconds is treated as lost).
            with anyio.CancelScope(shield=True), anyio.move_on_after(_SEND_TIMEOUT) as scope:
                try:
                    if sum(map(len, parts)) <= _SMALL:
                        await self._stream.send(b"".join(parts))
                    else:
                        for part in parts:
                            if len(part):
                                await self._stream.send(part)  # type: ignore[arg-type]
                except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                    self._fail(exc if isinstance(exc, Exception) else None)
                    raise self._lost() from exc
            if scope.cancelled_caught:
                self._fail(
                    ConnectionLostError(f"the NATS server read nothing for {_SEND_TIMEOUT} s")
                )
                raise self._lost()
        await checkpoint()

    async def publish(
        self,
        subject: str,
        payload: BytesLike = b"",
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish one message (``payload`` is not copied when large)."""
        if len(payload) > self.max_payload:
            raise ProtocolError(
                f"message of {len(payload)} bytes exceeds the server's limit of {self.max_payload}"
            )
        if reply is not None and reply in self._inboxes:
            self._requests[reply] = subject  # for a refusal by the server's permissions
        await self._send(encode_pub(subject, payload, reply=reply, headers=headers))

    async def publish_many(
        self, messages: Sequence[tuple[str, BytesLike, str | None, Mapping[str, str] | None]]
    ) -> None:
        """Publish ``(subject, payload, reply, headers)`` messages in as few writes as
        possible (one per 64 KiB): a batch costs one system call, not one per message."""
        parts: list[BytesLike] = []
        size = 0
        for subject, payload, reply, headers in messages:
            if len(payload) > self.max_payload:
                raise ProtocolError(
                    f"message of {len(payload)} bytes exceeds the server's limit of "
                    f"{self.max_payload}"
                )
            if reply is not None and reply in self._inboxes:
                self._requests[reply] = subject
            frame = encode_pub(subject, payload, reply=reply, headers=headers)
            parts.extend(frame)
            size += sum(map(len, frame))
            if size >= _SMALL:
                await self._send([b"".join(parts)])
                parts, size = [], 0
        if parts:
            await self._send([b"".join(parts)])

    async def subscribe(
        self, subject: str, *, queue: str | None = None, maxsize: float = 1000
    ) -> Subscription:
        """Subscribe to ``subject`` (in queue group ``queue``: one member gets each)."""
        sid = next(self._sids)
        sub = Subscription(self, sid, subject, maxsize)
        self._subs[sid] = sub
        try:
            await self._send([encode_sub(subject, sid, queue=queue)])
        except BaseException:
            self._subs.pop(sid, None)
            sub._end()
            sub.messages.close()
            raise
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.sid, None) is None:
            return
        sub._end()
        if not self._closed:
            with anyio.CancelScope(shield=True):
                try:
                    await self._send([encode_unsub(sub.sid)])
                except ConnectionLostError:
                    pass

    async def flush(self, timeout: float = 10.0) -> None:
        """A PING/PONG round trip: everything sent before has reached the server."""
        event = anyio.Event()
        self._pongs.append(event)
        await self._send([b"PING\r\n"])
        with anyio.move_on_after(timeout):
            await event.wait()
        if self._closed:
            raise self._lost()
        if not event.is_set():
            raise ConnectionLostError(f"NATS server did not answer a PING in {timeout} s")

    # -- inboxes ---------------------------------------------------------------------------

    def open_inbox(self, maxsize: float = math.inf) -> tuple[str, MemoryObjectReceiveStream[Msg]]:
        """A fresh reply subject and the stream of what arrives on it; close it with
        :meth:`close_inbox`. Unbounded by default: replies are bounded by the request."""
        if self._closed:
            raise self._lost()
        subject = f"{self._inbox_prefix}.{next(self._tokens)}"
        send, receive = anyio.create_memory_object_stream[Msg](maxsize)
        self._inboxes[subject] = send
        return subject, receive

    def open_group(self) -> ReplyGroup:
        """A :class:`ReplyGroup` for a batch of requests; close it with :meth:`close_group`."""
        if self._closed:
            raise self._lost()
        group = ReplyGroup(f"{self._inbox_prefix}.g{next(self._tokens)}")
        self._groups[group.prefix] = group
        return group

    def close_group(self, group: ReplyGroup) -> None:
        """Forget a reply group: later replies to it are dropped."""
        self._groups.pop(group.prefix, None)

    def unique_subject(self) -> str:
        """A reply subject of its own, outside the shared inbox, for a dedicated
        :meth:`subscribe` (JetStream delivers to it under each message's own subject)."""
        return f"{self._inbox_prefix}.s.{next(self._tokens)}"

    def close_inbox(self, subject: str) -> None:
        """Forget an inbox: later replies to it are dropped."""
        self._requests.pop(subject, None)
        send = self._inboxes.pop(subject, None)
        if send is not None:
            send.close()

    # -- receiving -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        parser = self._parser
        stream = self._stream
        error: Exception | None = None
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    parser.feed(await stream.receive(_RECV_SIZE))
                    continue
                if isinstance(event, Msg):
                    self._dispatch(event)
                elif isinstance(event, Ping):
                    await self._send([b"PONG\r\n"])
                elif isinstance(event, Pong):
                    if self._pongs:
                        self._pongs.pop(0).set()
                elif isinstance(event, Err):
                    _log.warning("NATS server error: %s", event.message)
                    if "permissions violation" not in event.message.lower():
                        error = ConnectionLostError(f"NATS server error: {event.message}")
                        return
                    self._refused(event.message)
                elif isinstance(event, Info):
                    self.info = event
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            error = ConnectionLostError("the NATS server closed the connection")
        except RemoteProtocolError as exc:
            _log.error("NATS protocol error: %s", exc)
            error = exc
        except ConnectionLostError as exc:
            error = exc
        finally:
            self._fail(error)

    def _dispatch(self, msg: Msg) -> None:
        if msg.sid == self._inbox_sid:
            send = self._inboxes.get(msg.subject)
            if send is not None:
                try:
                    send.send_nowait(msg)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
            elif self._groups:
                prefix, _, index = msg.subject.rpartition("-")
                group = self._groups.get(prefix)
                if group is not None and index.isdigit():
                    group._deliver(int(index), msg)
            return
        sub = self._subs.get(msg.sid)
        if sub is not None:
            sub._deliver(msg)

    def _refused(self, message: str) -> None:
        """``Permissions Violation for Publish to "S"``: requests to S get a 403 reply."""
        match = _PUBLISH_REFUSED.search(message)
        if match is None:
            return
        subject = match.group(1)
        for group in self._groups.values():  # a batch on this connection was refused
            group._fail(PermissionDeniedError(f"NATS server: {message}"))
        for inbox, target in list(self._requests.items()):
            if target == subject:
                send = self._inboxes.get(inbox)
                if send is not None:
                    refusal = Msg(inbox, self._inbox_sid, None, message.encode(), {}, 403)
                    try:
                        send.send_nowait(refusal)
                    except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass

    def _fail(self, error: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = error
        self._closed_event.set()
        for send in self._inboxes.values():
            send.close()
        self._inboxes.clear()
        for sub in self._subs.values():
            sub._end()
        self._subs.clear()
        for group in self._groups.values():
            group._fail(self._lost())
        self._groups.clear()
        for event in self._pongs:
            event.set()
        self._pongs.clear()

    def _lost(self) -> ConnectionLostError:
        reason = f": {self.error}" if self.error else ""
        return ConnectionLostError(
            f"the NATS connection to {self.server.host}:{self.server.port} is closed{reason}"
        )
