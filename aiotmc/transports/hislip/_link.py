"""The HiSLIP client link: a synchronous and an asynchronous channel, either mode.

Synchronous channel (Data, DataEnd, Trigger, DeviceClearComplete): used only by the task
holding the link (``anyio.BusyResourceError`` for another). Answers are matched by
MessageID: a Data/DataEnd whose MessageID is not the one of the last message sent is
discarded, and so is everything of a query that timed out or was cancelled, so a late
answer never reaches a later exchange. RMT-delivered goes on the first message after each
answer delivered to the caller, once.

Asynchronous channel: one background reader (:mod:`aiotmc._background`) separates
AsyncServiceRequest (published to :attr:`HislipTransport.srq`, then re-armed with a status
query) from replies, which are handed in order to the requests waiting for them; a request
abandoned by timeout or cancellation has its reply dropped when it comes.

An interrupted send (timeout, cancellation part-way) leaves the rest of the HiSLIP
message to be sent first and a device clear to be done before the next operation.

Overlapped mode (chosen at device clear when both sides want it) adds :meth:`pipeline`:
a batch of queries in flight at once, answers matched by MessageID. There, nothing
interrupts a query whose answer nobody waits for any more, so a stopped one is
device-cleared before the next operation.
"""

from __future__ import annotations

import logging
import math
import ssl
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint

from ..._background import BackgroundTask, spawn
from ..._exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    LocalProtocolError,
    LockLostError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    TransportError,
    UnsupportedOperation,
)
from ..._fastpath import schedule_point_due
from ..._hislip_wire import Channel
from ..._types import BytesLike, RenMode
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...protocol.hislip_descriptors import Descriptor, decode_descriptors
from ...protocol.ieee4882 import block_payload_view
from ...reconnect import Reconnect, retry_connect
from ...srq import SrqBroadcaster
from .._probe import AnswerProbe
from ..base import Capabilities, TransportInfo
from ..tcp import connect_socket
from ._blocksink import BlockSink
from ._overlap import Overlap
from ._security import Security, authenticate, secure_session

__all__ = ["HislipTransport"]

_log = logging.getLogger("aiotmc.transports.hislip")

_CAPABILITIES: Final = Capabilities(
    srq=True,
    read_stb=True,
    device_clear=True,
    trigger=True,
    remote_local=True,
    eom=True,
    locking=True,
)
_VERSION: Final = (2, 0)
_VENDOR: Final = b"AT"
_ASYNC_SEND_TIMEOUT: Final = 5.0  # a 16-byte request that cannot go out: the link is dead
_BLOCK_SLACK: Final = 64  # header and terminator around a block payload
_U32: Final = struct.Struct("!I")
_TLS_RESPONSE_OK: Final = 1  #: AsyncStartTLSResponse / AsyncEndTLSResponse: success
_DATA_END: Final = int(T.DataEnd)


class _Pending:
    """One asynchronous request waiting for its reply (replies come in request order)."""

    __slots__ = ("done", "expect", "reply", "wanted")

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.done = anyio.Event()
        self.reply: hs.Message | None = None
        self.wanted = True


class HislipTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` over HiSLIP."""

    def __init__(self, session: _Session, target: _Target) -> None:
        self._target = target
        self._sync = session.sync
        self._async = session.async_
        self._server_max = session.server_max
        self._ids = hs.MessageIdCounter()
        self._probe = AnswerProbe()  #: look for the answer right after sending?
        self._rmt = False  #: an answer was delivered and not yet reported
        self._abandoned: int | None = None  #: MessageID whose answer nobody waits for
        self._resync = False  #: a send or clear was interrupted: clear before going on
        self._acks_due = 0  #: DeviceClearAcknowledge still to come
        self._busy = False
        self._closed = False
        self._failure: Exception | None = None
        self._pending: deque[_Pending] = deque()
        self._async_lock = anyio.Lock()
        self._srq = SrqBroadcaster(target.resource)
        self._reader: BackgroundTask | None = None
        self._reader_done = False  #: nobody will answer pending requests any more
        self.reconnects = 0  #: how many times the session was replaced
        self._locks: set[str] = set()  #: locks granted to this session ("": exclusive)
        self._lost_locks: set[str] = set()  #: locks of a replaced session, not yet reported
        self._reconnector: BackgroundTask | None = None  #: a background reconnect running
        self._attempt: anyio.Event | None = None  #: set when its try in progress ends
        self._overlapped = bool(session.features & hs.Feature.OVERLAPPED)
        self._overlap = Overlap(self)
        self._upgrade: tuple[ssl.SSLContext, str] | None = None  #: StartTLS in progress
        self._upgrade_error: Exception | None = None
        self._info = self._describe(session)

    def _describe(self, session: _Session) -> TransportInfo:
        version = session.version
        return TransportInfo(
            resource=self._target.resource,
            kind="hislip",
            capabilities=replace(_CAPABILITIES, pipelining=self._overlapped),
            details={
                "protocol_version": f"{version[0]}.{version[1]}",
                "session_id": str(session.session_id),
                "server_vendor": session.vendor,
                "server_max_message_size": str(session.server_max),
                "mode": "overlapped" if self._overlapped else "synchronized",
                "encryption": session.encryption,
            },
        )

    def _start_reader(self) -> None:
        self._reader_done = False
        self._reader = spawn(
            self._read_async, name=f"aiotmc hislip {self._target.resource}", on_error=self._fail
        )

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        sub_address: str,
        *,
        resource: str,
        connect_timeout: float | None = 10.0,
        max_message_size: int = hs.DEFAULT_MAX_MESSAGE_SIZE,
        overlapped: bool = False,
        security: Security | None = None,
        reconnect: Reconnect | None = None,
    ) -> HislipTransport:
        """Open both channels and initialize the session, all within ``connect_timeout``
        (a wrong sub-address or a silent server: a typed error, never a hang).

        ``overlapped``: run in overlapped mode if the server offers it (see
        :meth:`pipeline`); otherwise, and by default, synchronized mode.
        ``security``: HiSLIP 2.0 encryption and client authentication (see
        :mod:`._security`); by default only when the server demands encryption.
        ``reconnect``: after a lost connection or a FatalError, the next operation sets up
        a new session under this policy (see :mod:`aiotmc.reconnect`); without it the
        session stays broken until :meth:`reconnect`.
        """
        if max_message_size <= hs.HEADER_SIZE:
            raise ValueError(f"max_message_size must exceed 16, got {max_message_size}")
        target = _Target(
            host,
            port,
            sub_address,
            resource,
            max_message_size,
            overlapped,
            security or Security(),
            reconnect,
            connect_timeout,
        )
        session = await _handshake(target, connect_timeout)
        link = cls(session, target)
        link._start_reader()
        try:
            await link._choose_mode(connect_timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await link.aclose()
            raise
        return link

    async def _choose_mode(self, timeout: float | None) -> None:
        """A session starts in the server's preferred mode; a device clear picks ours."""
        if self._overlapped == self._target.overlapped:
            return
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        self._begin()
        try:
            await self._clear(deadline)
        finally:
            self._busy = False

    # -- MessageTransport ------------------------------------------------------------------

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster:
        """Service requests (AsyncServiceRequest)."""
        return self._srq

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Send one message as Data messages (the last one DataEnd when ``end``)."""
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            await self._send_data(parts, end, deadline)
        finally:
            self._busy = False

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Receive the answer to the last message sent."""
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            return await self._receive(max_size, deadline)
        finally:
            self._busy = False

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and receive its answer.

        The usual case (link in step, plaintext, nothing buffered, one DataEnd each
        way) takes a short path: the header packed directly, one ``sendmsg`` for header
        and payload, and an answer that arrives whole in one ``recv`` is taken without
        the reassembler. Everything else, and every failure, is the general path's.
        """
        sync = self._sync
        size = len(message)
        if (
            self._busy
            or self._resync
            or self._failure is not None
            or self._lost_locks
            or self._closed
            or sync.unsent
            or sync.tls is not None
            or self._overlap.busy
            or not 0 < size <= self._server_max - hs.HEADER_SIZE
        ):
            return await self._exchange(message, max_size, deadline)
        self._busy = True
        try:
            ids = self._ids
            before = (ids.next, ids.last, self._rmt, self._abandoned)
            message_id = ids.next
            ids.last = message_id
            ids.next = (message_id + 2) & 0xFFFFFFFF
            header = hs.HEADER.pack(hs.PROLOGUE, _DATA_END, self._rmt, message_id, size)
            self._rmt = False
            self._abandoned = None
            sent = sync.sent
            if not sync.send_now((header, message)):  # the socket is full: wait for it
                try:
                    if sync.unsent:  # part went out: the rest must follow
                        await sync.flush(deadline)
                    else:
                        await sync.send((header, message), deadline)
                except BaseException as exc:
                    self._interrupted(sent, before)
                    self._lost(exc)
                    raise
            waited = False
            try:
                probe = self._probe  # look at once only while looks tend to find it
                looked = probe.should_look()
                answer = sync.data_end_now(message_id, look=looked)
                if answer is None and sync.at_rest:  # nothing there yet: wait, then take it
                    if looked:
                        probe.missed()
                    waited = True
                    if not await sync.wait_readable(deadline):
                        raise ReadTimeout(f"{self._info.resource}: no answer within the timeout")
                    answer = sync.data_end_now(message_id)
                elif looked:
                    probe.found()
            except BaseException as exc:
                self._abandoned = message_id  # the rest of this answer is dropped when it comes
                if self._overlapped:  # and nothing interrupts it: clear it before going on
                    self._resync = True
                self._lost(exc)
                raise
            if answer is None:  # anything else: the general path
                return await self._receive(max_size, deadline)
            self._rmt = True
            if len(answer) > max_size:
                raise RemoteProtocolError(f"response exceeds max_size={max_size}")
        finally:
            self._busy = False
        if not waited and schedule_point_due():  # no wait so far: let other tasks run
            await cancel_shielded_checkpoint()
        return answer

    async def _exchange(self, message: bytes, max_size: int, deadline: float) -> bytes:
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            await self._send_data((message,), True, deadline)
            return await self._receive(max_size, deadline)
        finally:
            self._busy = False

    async def exchange_overlapped(
        self, message: bytes, *, max_size: int, deadline: float = math.inf
    ) -> bytes:
        """Overlapped mode: like :meth:`exchange`, but several tasks may call it at once
        and their queries are in flight together, answers matched by MessageID (see
        :mod:`._overlap`). Other operations raise ``BusyResourceError`` meanwhile."""
        if not self._overlapped:
            raise UnsupportedOperation(
                f"{self._info.resource}: overlapped queries need overlapped mode (open with "
                "overlapped=True on a server that offers it)"
            )
        return await self._overlap.query(message, max_size=max_size, deadline=deadline)

    @property
    def overlapped(self) -> bool:
        """True while the session runs in overlapped mode."""
        return self._overlapped

    async def pipeline(
        self, queries: Sequence[bytes], *, max_size: int, deadline: float = math.inf
    ) -> list[bytes]:
        """Overlapped mode: send every query at once, then collect the answers, matched
        by MessageID (one round trip for the lot, not one per query).

        Each message must ask for exactly one answer. Stopped part-way (timeout,
        cancellation, an error), the next operation device-clears first, so no answer of
        this batch reaches a later exchange.
        """
        if not self._overlapped:
            raise UnsupportedOperation(
                f"{self._info.resource}: pipelining needs overlapped mode (open with "
                "overlapped=True on a server that offers it)"
            )
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            ids: list[int] = []
            try:
                for query in queries:
                    await self._send_data((query,), True, deadline)
                    ids.append(self._ids.last)
                answers = await self._collect(ids, max_size, deadline)
            except BaseException as exc:
                if ids:
                    self._resync = True  # answers of this batch may still come
                self._lost(exc)
                raise
            self._rmt = bool(ids)
            return answers
        finally:
            self._busy = False

    async def _collect(self, ids: list[int], max_size: int, deadline: float) -> list[bytes]:
        waiting = {message_id: i for i, message_id in enumerate(ids)}
        pieces: list[list[bytes]] = [[] for _ in ids]
        sizes = [0] * len(ids)
        answers: list[bytes | None] = [None] * len(ids)
        while waiting:
            message = await self._sync_message(deadline)
            type_ = message.type
            if type_ in (T.Data, T.DataEnd):
                index = waiting.get(message.param)
                if index is None:
                    continue  # an answer from before this batch
                sizes[index] += len(message.payload)
                if sizes[index] > max_size:
                    raise RemoteProtocolError(f"response exceeds max_size={max_size}")
                pieces[index].append(message.payload)
                if type_ == T.DataEnd:
                    del waiting[message.param]
                    answers[index] = b"".join(pieces[index])
            elif type_ == T.Error:
                hs.raise_if_error(message)
            elif type_ not in (T.Interrupted,):
                self._fail_now(message)
        return [a for a in answers if a is not None]

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive an answer holding one IEEE 488.2 block; return its payload."""
        if into is not None:
            return await self._receive_block_into(into, max_size, deadline)
        message = await self.receive_message(max_size=max_size + _BLOCK_SLACK, deadline=deadline)
        payload = block_payload_view(message, max_size=max_size)
        if into is None:
            return memoryview(bytearray(payload))
        if len(into) < len(payload):
            raise LocalProtocolError(
                f"block of {len(payload)} bytes does not fit the {len(into)}-byte buffer"
            )
        into[: len(payload)] = payload
        return into[: len(payload)]

    async def _receive_block_into(
        self, into: memoryview, max_size: int, deadline: float
    ) -> memoryview:
        """The answer's block straight into ``into``: the socket reads the data there."""
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            expected = self._ids.last
            sink = BlockSink(into, max_size)
            reader = self._sync.reader
            if expected != self._abandoned:  # (an abandoned answer is only skipped)
                reader.route(sink, expected)
            done = False
            try:
                while True:
                    message = await self._sync_message(deadline)
                    type_ = message.type
                    if type_ in (T.Data, T.DataEnd):
                        if message.param != expected and not (
                            type_ == T.Data and message.param == hs.UNATTRIBUTED
                        ):
                            continue  # a stale answer (timed out, cancelled, interrupted)
                        if expected == self._abandoned:
                            continue
                        if message.payload:  # a small one (large ones went to the sink)
                            sink.write(message.payload)
                        if type_ == T.DataEnd:
                            break
                    elif type_ == T.Interrupted:
                        sink.reset()
                    elif type_ == T.Error:
                        hs.raise_if_error(message)
                    else:
                        self._fail_now(message)
                done = True
            except BaseException as exc:
                self._abandoned = expected  # the rest of this answer is dropped when it comes
                if self._overlapped:  # and nothing interrupts it: clear it before going on
                    self._resync = True
                self._lost(exc)
                raise
            finally:
                reader.unroute(abandon=not done)
            self._rmt = True
            return sink.finish()
        finally:
            self._busy = False

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """AsyncStatusQuery with the MessageID of the last message sent; MAV is the
        server's verdict on whether that message's answer is still unread."""
        await self._restore_idle(deadline)
        reply = await self._async_request(self._status_query, T.AsyncStatusResponse, deadline)
        return reply.control

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear: AsyncDeviceClear, DeviceClearComplete, DeviceClearAcknowledge."""
        await self._settle(deadline)
        self._begin()
        try:
            if self._failure is not None:  # under a reconnect policy: a new session first
                await self._restore(deadline)
            if self._sync.unsent:
                await self._sync.flush(deadline)
            await self._clear(deadline)
        finally:
            self._busy = False

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """The HiSLIP Trigger message (GET)."""
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            before = self._snapshot()
            self._rmt = False
            self._abandoned = None
            message = hs.encode(T.Trigger, int(before[2]), self._ids.take())
            sent = self._sync.sent
            try:
                await self._sync.send([message], deadline)
            except BaseException as exc:
                self._interrupted(sent, before)
                self._lost(exc)
                raise
        finally:
            self._busy = False

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """AsyncRemoteLocalControl with the VISA remote-enable operation ``mode`` (HiSLIP's
        codes 0-6 are VISA's)."""
        code = int(RenMode(mode))
        await self._restore_idle(deadline)
        request = hs.encode(T.AsyncRemoteLocalControl, code, self._ids.last)
        await self._async_request(request, T.AsyncRemoteLocalResponse, deadline)

    async def lock(
        self, *, timeout: float = 0.0, shared: str | None = None, deadline: float = math.inf
    ) -> bool:
        """AsyncLock: the exclusive lock, or the shared lock named ``shared``; wait up to
        ``timeout`` seconds for it. True if granted, False if the server gave up.

        ``deadline`` should lie beyond ``timeout``: a grant that arrives after the caller
        stopped waiting is dropped, and the lock stays held until :meth:`unlock`.
        """
        name = b"" if shared is None else shared.encode("ascii")
        if shared is not None and not 0 < len(name) <= hs.MAX_SUB_ADDRESS:
            raise ValueError(f"a shared lock name has 1 to 256 ASCII characters: {shared!r}")
        millis = min(max(0, round(timeout * 1000)), 0xFFFFFFFF)
        await self._restore_idle(deadline)
        request = hs.encode(T.AsyncLock, 1, millis, name)
        reply = await self._async_request(request, T.AsyncLockResponse, deadline)
        if reply.control == hs.LockResult.ERROR:
            raise RemoteProtocolError(f"{self._info.resource}: the server refused the lock request")
        granted = reply.control == hs.LockResult.SUCCESS
        if granted:
            self._locks.add(shared or "")
        return granted

    async def unlock(self, *, deadline: float = math.inf) -> None:
        """Release the lock this session holds (after the messages already sent)."""
        await self._restore_idle(deadline)
        request = hs.encode(T.AsyncLock, 0, self._ids.last)
        reply = await self._async_request(request, T.AsyncLockResponse, deadline)
        if reply.control == hs.LockResult.ERROR:
            self._locks.clear()
            raise LocalProtocolError(f"{self._info.resource}: no lock held by this session")
        if reply.control == hs.LockResult.SUCCESS:  # the exclusive one went first
            self._locks.discard("")
        else:
            self._locks = {name for name in self._locks if name == ""}

    async def lock_info(self, *, deadline: float = math.inf) -> tuple[bool, int]:
        """AsyncLockInfo: (an exclusive lock is granted, how many sessions hold locks)."""
        await self._restore_idle(deadline)
        reply = await self._async_request(
            hs.encode(T.AsyncLockInfo), T.AsyncLockInfoResponse, deadline
        )
        return bool(reply.control & 1), reply.param

    async def get_descriptors(self, *, deadline: float = math.inf) -> list[Descriptor]:
        """HiSLIP 2.0 GetDescriptors: the server's descriptors (type code and data each;
        the payload layout is an assumption, see :mod:`aiotmc.protocol.hislip_descriptors`).

        Call it between operations: an answer not yet read is discarded. A 1.x session,
        or a server that does not know the message, gives
        :class:`~aiotmc.UnsupportedOperation`.
        """
        version = self._info.details["protocol_version"]
        if tuple(int(part) for part in version.split(".")) < (2, 0):
            raise UnsupportedOperation(
                f"{self._info.resource}: GetDescriptors needs HiSLIP 2.0 (the session runs "
                f"{version})"
            )
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            try:
                await self._sync.send([hs.encode(T.GetDescriptors)], deadline)
                while True:
                    message = await self._sync_message(deadline)
                    type_ = message.type
                    if type_ == T.GetDescriptorsResponse:
                        return decode_descriptors(message.payload, message.param)
                    if type_ in (T.Data, T.DataEnd):
                        self._abandoned = self._ids.last  # an unread answer: dropped
                    elif type_ == T.Error:
                        if message.control == hs.ErrorCode.UNRECOGNIZED_MESSAGE_TYPE:
                            raise UnsupportedOperation(
                                f"{self._info.resource}: the server does not know GetDescriptors"
                            )
                        hs.raise_if_error(message)
                    elif type_ != T.Interrupted:
                        self._fail_now(message)
            except BaseException as exc:
                if not isinstance(exc, (UnsupportedOperation, hs.HislipError)):
                    self._resync = True  # the response may still come: clear it first
                self._lost(exc)
                raise
        finally:
            self._busy = False

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Replace both channels with a new session (after a FatalError or a lost
        connection); the transport object and its SRQ fan-out stay. With a ``reconnect=``
        policy it makes up to that many tries. If the old session held locks, the new
        one is up but :class:`~aiotmc.LockLostError` says they are gone."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._busy = True
        try:
            await self._renew(deadline)
        finally:
            self._busy = False

    async def _renew(self, deadline: float) -> None:
        """A new session, one try or the policy's (``_busy`` is held by the caller); then
        the report of lost locks."""
        policy = self._target.reconnect
        if policy is None:
            await self._replace(deadline)
        else:
            await retry_connect(
                policy,
                lambda: self._replace(deadline),
                resource=self._target.resource,
                deadline=deadline,
            )
        self._lost_locks |= self._locks
        self._locks = set()
        self._report_lost_locks()

    def _report_lost_locks(self) -> None:
        """:class:`~aiotmc.LockLostError`, once, for the locks of a replaced session."""
        lost, self._lost_locks = self._lost_locks, set()
        if lost:
            names = ", ".join("exclusive" if n == "" else f"shared {n!r}" for n in sorted(lost))
            raise LockLostError(
                f"the HiSLIP session was replaced and its locks ({names}) are gone; the "
                "operation was not performed: lock again",
                resource=self._target.resource,
            )

    async def _settle(self, deadline: float) -> None:
        """Before an operation: wait for a background reconnect's try in progress (it
        holds the link), then report the locks a replaced session lost."""
        attempt = self._attempt
        if attempt is not None and self._busy:
            with anyio.CancelScope(deadline=deadline) as scope:
                await attempt.wait()
            if scope.cancelled_caught:
                raise ConnectTimeout(
                    "the HiSLIP session was not restored in time", resource=self._target.resource
                )
        if self._lost_locks:
            self._report_lost_locks()

    def _schedule_reconnect(self) -> None:
        """Under a ``reconnect=`` policy, once the session failed: a new one in the
        background, so that service-request subscribers of an idle link hear from the
        instrument again without waiting for an operation to bring it back."""
        if self._target.reconnect is None or self._closed or self._reconnector is not None:
            return
        self._reconnector = spawn(
            self._background_reconnect, name=f"aiotmc hislip reconnect {self._target.resource}"
        )

    async def _background_reconnect(self) -> None:
        policy = self._target.reconnect
        assert policy is not None
        replaced = False

        async def attempt() -> None:
            nonlocal replaced
            if self._closed:
                raise anyio.ClosedResourceError
            if self._failure is None:  # an operation brought it back meanwhile
                return
            if self._busy or self._overlap.busy:  # an operation is failing: later
                raise ConnectionLostError("the link is in use", resource=self._target.resource)
            self._busy = True
            self._attempt = done = anyio.Event()
            try:
                await self._replace(math.inf)
                replaced = True
            finally:
                self._busy = False
                self._attempt = None
                done.set()

        try:
            await anyio.sleep(policy.backoff)  # a restarted instrument needs a moment
            await retry_connect(policy, attempt, resource=self._target.resource)
        except anyio.ClosedResourceError:
            pass
        except Exception as exc:  # the next operation tries again (or reports it)
            _log.warning("%s: background reconnect gave up: %s", self._target.resource, exc)
        else:
            if replaced:
                self._lost_locks |= self._locks  # reported by the next operation
                self._locks = set()
        finally:
            self._reconnector = None

    async def _restore(self, deadline: float) -> None:
        """Under a ``reconnect=`` policy: a new session before an operation, when the
        old one failed (``_busy`` is held by the caller); without one, the typed error."""
        if self._target.reconnect is None:
            self._check_failure()
        _log.info("%s: session failed (%s); reconnecting", self._target.resource, self._failure)
        await self._renew(deadline)

    async def _restore_idle(self, deadline: float) -> None:
        """:meth:`_restore` for the asynchronous-channel operations (read_stb, locks...),
        which do not hold the link: only when nobody else does."""
        await self._settle(deadline)
        if (
            self._failure is None
            or self._target.reconnect is None
            or self._closed
            or self._busy
            or self._overlap.busy
        ):
            return
        self._busy = True
        try:
            await self._restore(deadline)
        finally:
            self._busy = False

    async def _replace(self, deadline: float) -> None:
        """One try at a new session (``_busy`` is held by the caller)."""
        timeout = self._target.connect_timeout
        if deadline != math.inf:
            left = max(0.0, deadline - anyio.current_time())
            timeout = left if timeout is None else min(timeout, left)
        session = await _handshake(self._target, timeout)
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
        self._sync.close()
        self._async.close()
        self._wake_all()
        if self._closed:  # closed while we were connecting
            session.sync.close()
            session.async_.close()
            raise anyio.ClosedResourceError
        self._sync, self._async = session.sync, session.async_
        self._server_max = session.server_max
        self._ids.reset()
        self._rmt = False
        self._abandoned = None
        self._resync = False
        self._acks_due = 0
        self._failure = None
        self._overlapped = bool(session.features & hs.Feature.OVERLAPPED)
        self._info = self._describe(session)
        self.reconnects += 1
        _log.info("%s: new HiSLIP session (reconnect %d)", self._target.resource, self.reconnects)
        self._start_reader()
        if self._overlapped != self._target.overlapped:
            await self._clear(deadline)

    def _lost(self, exc: BaseException) -> None:
        """An operation saw the synchronous channel go: the session is over (so that the
        next operation knows at once, without waiting for the reader to notice)."""
        if isinstance(exc, ConnectionLostError) and self._failure is None and not self._closed:
            self._fail(exc)

    async def start_tls(self, *, deadline: float = math.inf) -> None:
        """StartTLS in a running session (one opened plain, or after :meth:`end_tls`):
        both channels encrypted and the client authenticated again, with the security
        options the link was opened with. Call it between operations. A refusal is
        :class:`~aiotmc.AuthenticationError` and leaves the session plain; a failed
        handshake breaks it (reopen or ``reconnect()``)."""
        if self._sync.tls is not None:
            return
        security = self._target.security
        if security.tls is False:
            raise AuthenticationError(f"{self._info.resource}: opened with tls=False")
        resource = self._info.resource
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            context = security.ssl_context()
            name = security.server_name or self._target.host
            self._upgrade, self._upgrade_error = (context, name), None
            payload = _U32.pack(self._ids.last)
            request = hs.encode(T.AsyncStartTLS, 0, self._ids.last, payload)
            try:
                reply = await self._async_request(request, T.AsyncStartTLSResponse, deadline)
            finally:
                self._upgrade = None
            if self._upgrade_error is not None:
                raise self._upgrade_error
            if reply.control != _TLS_RESPONSE_OK:
                raise AuthenticationError(
                    f"{resource}: the server refused AsyncStartTLS (code {reply.control})"
                )
            try:
                assert self._async.tls is not None
                security.check_pin(self._async.tls, "asynchronous")
                await self._sync.send([hs.encode(T.StartTLS)], deadline)
                tls = await self._sync.start_tls(context, server_hostname=name, deadline=deadline)
                security.check_pin(tls, "synchronous")
                await authenticate(self._sync, security, resource, deadline)
            except (AuthenticationError, TransportError) as exc:
                self._fail(exc)  # half-encrypted: the session cannot go on
                raise
            details = dict(self._info.details)
            details["encryption"] = tls.version() or "TLS"
            self._info = replace(self._info, details=details)
        finally:
            self._busy = False

    async def _upgrade_async_channel(
        self, context: ssl.SSLContext, name: str, pending: _Pending, reply: hs.Message
    ) -> None:
        """The reader's part of :meth:`start_tls`: the asynchronous channel's handshake,
        before the reply is handed over (no request goes out meanwhile)."""
        async with self._async_lock:
            limit = anyio.current_time() + _ASYNC_SEND_TIMEOUT
            try:
                await self._async.start_tls(context, server_hostname=name, deadline=limit)
            except (AuthenticationError, TransportError) as exc:
                self._upgrade_error = exc
                pending.reply = reply
                pending.done.set()
                raise

    async def end_tls(self, *, deadline: float = math.inf) -> None:
        """EndTLS: both channels go back to plaintext (HiSLIP 2.0 §6.16). Call it between
        operations; a server that insists on encryption refuses (``RemoteProtocolError``,
        the session stays encrypted)."""
        if self._sync.tls is None:
            return
        await self._settle(deadline)
        self._begin()
        try:
            await self._prepare(deadline)
            payload = _U32.pack(self._ids.last)
            request = hs.encode(T.AsyncEndTLS, 0, self._ids.last, payload)
            # the reader ends TLS on the asynchronous channel before handing the reply over
            reply = await self._async_request(request, T.AsyncEndTLSResponse, deadline)
            if reply.control != _TLS_RESPONSE_OK:
                raise RemoteProtocolError(
                    f"{self._info.resource}: the server refused EndTLS (code {reply.control})"
                )
            await self._sync.send([hs.encode(T.EndTLS)], deadline)
            await self._sync.end_tls(deadline=deadline)
            details = dict(self._info.details)
            details["encryption"] = "none"
            self._info = replace(self._info, details=details)
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """Close both channels and stop the reader; idempotent, completes when cancelled."""
        if self._closed:
            return
        self._closed = True
        self._sync.close()
        self._async.close()
        self._wake_all()
        self._srq.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
        reconnector, self._reconnector = self._reconnector, None
        if reconnector is not None:
            await reconnector.stop()

    # -- the synchronous channel -----------------------------------------------------------

    def _begin(self) -> None:
        self._check_usable()
        if self._overlap.busy:
            raise anyio.BusyResourceError("overlapped queries of other tasks are in flight")
        self._busy = True

    def _check_usable(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._failure is not None and self._target.reconnect is None:
            raise SessionBrokenError(
                f"the HiSLIP session failed ({self._failure}); reopen the instrument",
                resource=self._info.resource,
            )
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")

    async def _prepare(self, deadline: float) -> None:
        """Finish what an interrupted operation left: the rest of a message, a clear (or,
        under a reconnect policy, a new session)."""
        if self._failure is not None:
            await self._restore(deadline)
        if self._sync.unsent:
            await self._sync.flush(deadline)
        if self._resync:
            await self._clear(deadline)

    async def _send_data(self, parts: Sequence[BytesLike], end: bool, deadline: float) -> None:
        limit = max(1, self._server_max - hs.HEADER_SIZE)
        before = self._snapshot()
        self._rmt = False
        self._abandoned = None
        view = memoryview(parts[0]).cast("B") if end and len(parts) == 1 else None
        messages: list[tuple[bytes, list[memoryview]]]
        if view is not None and 0 < len(view) <= limit:  # the usual case: one DataEnd
            header = hs.encode_header(T.DataEnd, int(before[2]), self._ids.take(), len(view))
            messages = [(header, [view])]
        else:
            messages = hs.data_messages(
                parts, max_payload=limit, end=end, ids=self._ids, rmt=before[2]
            )
        sent = self._sync.sent
        try:
            for header, pieces in messages:
                await self._sync.send([header, *pieces], deadline)
        except BaseException as exc:
            self._interrupted(sent, before)
            self._lost(exc)
            raise

    def _snapshot(self) -> tuple[int, int, bool, int | None]:
        return self._ids.next, self._ids.last, self._rmt, self._abandoned

    def _interrupted(self, sent: int, before: tuple[int, int, bool, int | None]) -> None:
        """A send stopped: nothing went out, as if never tried (MessageIDs stay +2 apart);
        part of it went out, the server holds part of a message: clear before going on."""
        if self._sync.sent == sent:
            self._ids.next, self._ids.last, self._rmt, self._abandoned = before
        else:
            self._resync = True

    async def _next_sync(self, deadline: float) -> hs.Message:
        message = self._sync.receive_nowait()
        if message is None and deadline == math.inf:
            message = await self._sync.receive(wait_first=True)
        elif message is None:  # the deadline is a timer on the wait (see _hislip_wire)
            message = await self._sync.receive_until(deadline)
            if message is None:
                raise ReadTimeout(f"{self._info.resource}: no answer within the timeout")
        if message.type == T.FatalError:
            self._fail_now(message)
        return message

    async def _receive(self, max_size: int, deadline: float) -> bytes:
        expected = self._ids.last
        pieces: list[bytes] = []
        size = 0
        too_long = False
        try:
            while True:
                message = await self._sync_message(deadline)
                type_ = message.type
                if type_ in (T.Data, T.DataEnd):
                    if message.param != expected and not (
                        type_ == T.Data and message.param == hs.UNATTRIBUTED
                    ):
                        continue  # a stale answer (timed out, cancelled, interrupted)
                    if expected == self._abandoned:
                        continue
                    if not too_long:
                        size += len(message.payload)
                        if size > max_size:
                            too_long = True
                            pieces.clear()
                        else:
                            pieces.append(message.payload)
                    if type_ == T.DataEnd:
                        break
                elif type_ == T.Interrupted:
                    pieces.clear()
                    size = 0
                    too_long = False
                elif type_ == T.Error:
                    hs.raise_if_error(message)
                else:
                    self._fail_now(message)
        except BaseException as exc:
            self._abandoned = expected  # the rest of this answer is dropped when it comes
            if self._overlapped:  # and nothing interrupts it: clear it before going on
                self._resync = True
            self._lost(exc)
            raise
        self._rmt = True
        if too_long:
            raise RemoteProtocolError(f"response exceeds max_size={max_size}")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def _sync_message(self, deadline: float) -> hs.Message:
        """The next synchronous message, skipping stray DeviceClearAcknowledges."""
        while True:
            message = await self._next_sync(deadline)
            if message.type == T.DeviceClearAcknowledge and self._acks_due:
                self._acks_due -= 1
                continue
            return message

    async def _clear(self, deadline: float) -> None:
        self._resync = True  # until the acknowledge arrives
        ack = await self._async_request(
            hs.encode(T.AsyncDeviceClear), T.AsyncDeviceClearAcknowledge, deadline
        )
        offered = ack.control & hs.Feature.OVERLAPPED
        wanted = hs.Feature.OVERLAPPED if self._target.overlapped and offered else 0
        self._acks_due += 1
        await self._sync.send([hs.encode(T.DeviceClearComplete, int(wanted))], deadline)
        while self._acks_due:  # everything before the acknowledge is stale
            message = await self._next_sync(deadline)
            if message.type == T.DeviceClearAcknowledge:
                self._acks_due -= 1
                if not self._acks_due:
                    self._set_mode(bool(message.control & hs.Feature.OVERLAPPED))
        self._ids.reset()
        self._abandoned = None
        self._rmt = False
        self._resync = False

    def _set_mode(self, overlapped: bool) -> None:
        if overlapped != self._overlapped:
            self._overlapped = overlapped
            details = dict(self._info.details)
            details["mode"] = "overlapped" if overlapped else "synchronized"
            capabilities = replace(self._info.capabilities, pipelining=overlapped)
            self._info = replace(self._info, details=details, capabilities=capabilities)

    def _fail_now(self, message: hs.Message) -> None:
        try:
            hs.raise_if_error(message)
        except hs.HislipError as exc:
            if not exc.fatal:
                raise
            self._failure = exc
            raise SessionBrokenError(
                f"{exc}; reopen the instrument", resource=self._info.resource
            ) from exc
        exc2 = RemoteProtocolError(f"unexpected HiSLIP message type {message.type}")
        self._failure = exc2
        raise exc2

    # -- the asynchronous channel ----------------------------------------------------------

    def _status_query(self) -> bytes:
        rmt, self._rmt = self._rmt, False
        return hs.encode(T.AsyncStatusQuery, int(rmt), self._ids.last)

    async def _async_request(
        self, message: bytes | Callable[[], bytes], expect: int, deadline: float
    ) -> hs.Message:
        if self._closed:
            raise anyio.ClosedResourceError
        self._check_failure()
        pending = _Pending(expect)
        try:
            await self._post(message, pending)
            with anyio.CancelScope(deadline=deadline) as scope:
                await pending.done.wait()
            if scope.cancelled_caught:
                raise ReadTimeout(f"{self._info.resource}: no HiSLIP reply within the timeout")
        finally:
            pending.wanted = False
        if self._closed:
            raise anyio.ClosedResourceError
        reply = pending.reply
        if reply is None:
            self._check_failure()
            raise ConnectionLostError(
                "the HiSLIP asynchronous channel closed", resource=self._info.resource
            )
        return reply

    async def _post(self, message: bytes | Callable[[], bytes], pending: _Pending) -> None:
        """Queue ``pending`` and send its request, in order, even if cancelled meanwhile.
        A callable ``message`` is built at the moment it goes out (a status query must
        carry the MessageID of the last message sent before it, not before the wait for
        the lock)."""
        async with self._async_lock:
            if callable(message):
                message = message()
            self._pending.append(pending)
            if self._reader_done:
                self._wake_all()
            with anyio.CancelScope(shield=True):
                limit = anyio.current_time() + _ASYNC_SEND_TIMEOUT
                try:
                    await self._async.send([message], limit)
                except (TransportError, OSError) as exc:
                    self._fail(exc)
                    raise SessionBrokenError(
                        f"HiSLIP asynchronous channel: {exc}", resource=self._info.resource
                    ) from exc

    def _check_failure(self) -> None:
        if self._failure is not None:
            raise SessionBrokenError(
                f"the HiSLIP session failed ({self._failure}); reopen the instrument",
                resource=self._info.resource,
            )

    async def _read_async(self) -> None:
        """The one reader of the asynchronous channel."""
        try:
            while True:
                message = await self._async.receive()
                type_ = message.type
                if type_ == T.AsyncServiceRequest:
                    self._srq.publish(message.control)
                    await self._post(self._status_query, _Pending(T.AsyncStatusResponse))
                    continue  # the re-arming status query's reply is dropped below
                if type_ == T.AsyncInterrupted:
                    continue
                if type_ == T.FatalError:
                    self._fail_now(message)
                if not self._pending:
                    if type_ == T.Error:
                        _log.warning("%s: HiSLIP Error %d", self._info.resource, message.control)
                        continue
                    raise RemoteProtocolError(f"unexpected HiSLIP asynchronous message {type_}")
                pending = self._pending.popleft()
                if type_ == T.Error:
                    hs.raise_if_error(message)
                if type_ != pending.expect:
                    raise RemoteProtocolError(
                        f"HiSLIP reply of type {type_} to a request expecting {pending.expect}"
                    )
                if (
                    type_ == T.AsyncStartTLSResponse
                    and message.control == _TLS_RESPONSE_OK
                    and self._upgrade is not None
                ):
                    await self._upgrade_async_channel(*self._upgrade, pending, message)
                if type_ == T.AsyncEndTLSResponse and message.control == _TLS_RESPONSE_OK:
                    async with self._async_lock:  # no request goes out half-way through
                        limit = anyio.current_time() + _ASYNC_SEND_TIMEOUT
                        await self._async.end_tls(deadline=limit)
                pending.reply = message
                pending.done.set()
        except (ConnectionLostError, anyio.ClosedResourceError) as exc:
            if not self._closed:
                self._fail(exc)
        except (TransportError, RemoteProtocolError, hs.HislipError) as exc:
            self._fail(exc)
        finally:
            self._reader_done = True
            self._wake_all()

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake_all()
        if not self._closed:
            self._schedule_reconnect()

    def _wake_all(self) -> None:
        while self._pending:
            self._pending.popleft().done.set()


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a link goes (kept for :meth:`HislipTransport.reconnect`)."""

    host: str
    port: int
    sub_address: str
    resource: str
    max_message_size: int
    overlapped: bool = False  #: ask for overlapped mode (if the server offers it)
    #: Encryption and credentials (``repr`` hides passwords).
    security: Security = field(default_factory=Security)
    reconnect: Reconnect | None = None  #: automatic reconnection policy
    connect_timeout: float | None = 10.0  #: bounds each new session's set-up


@dataclass(frozen=True, slots=True)
class _Session:
    """An initialized session: both channels and what the server said."""

    sync: Channel
    async_: Channel
    session_id: int
    version: tuple[int, int]
    server_max: int
    vendor: str
    features: hs.Feature = hs.Feature.NONE
    encryption: str = "none"  #: the TLS version of both channels, or "none"


async def _handshake(target: _Target, connect_timeout: float | None) -> _Session:
    """Connect both channels, Initialize, AsyncInitialize, AsyncMaximumMessageSize."""
    deadline = math.inf if connect_timeout is None else anyio.current_time() + connect_timeout
    channels: list[Channel] = []
    try:
        with anyio.CancelScope(deadline=deadline) as scope:
            sync = Channel(
                await connect_socket(target.host, target.port, timeout=connect_timeout),
                max_payload=target.max_message_size,
                name="synchronous",
            )
            channels.append(sync)
            await sync.send([hs.encode_initialize(_VERSION, _VENDOR, target.sub_address)])
            answer = hs.decode_initialize_response(await sync.receive())
            async_ = Channel(
                await connect_socket(target.host, target.port, timeout=connect_timeout),
                max_payload=target.max_message_size,
                name="asynchronous",
            )
            channels.append(async_)
            await async_.send([hs.encode(T.AsyncInitialize, 0, answer.session_id)])
            reply = await async_.receive()
            hs.raise_if_error(reply)
            if reply.type != T.AsyncInitializeResponse:
                raise RemoteProtocolError(
                    f"expected AsyncInitializeResponse, got message type {reply.type}"
                )
            vendor = bytes(((reply.param >> 8) & 0xFF, reply.param & 0xFF))
            encrypted = await secure_session(
                sync,
                async_,
                target.security,
                host=target.host,
                resource=target.resource,
                features=answer.features,
                version=answer.version,
                async_control=reply.control,
            )
            await async_.send(
                [hs.encode_max_message_size(T.AsyncMaximumMessageSize, target.max_message_size)]
            )
            reply = await async_.receive()
            hs.raise_if_error(reply)
            if reply.type != T.AsyncMaximumMessageSizeResponse:
                raise RemoteProtocolError(
                    f"expected AsyncMaximumMessageSizeResponse, got type {reply.type}"
                )
            server_max = hs.decode_max_message_size(reply)
        if scope.cancelled_caught:
            raise ConnectTimeout(
                f"{target.resource}: HiSLIP session not initialized within {connect_timeout} s",
                resource=target.resource,
            )
    except hs.HislipError as exc:
        for channel in channels:
            channel.close()
        raise ConnectError(f"{target.resource}: the server refused the session: {exc}") from exc
    except (RemoteProtocolError, LocalProtocolError, ConnectionLostError) as exc:
        for channel in channels:
            channel.close()
        raise ConnectError(f"{target.resource}: HiSLIP initialization failed: {exc}") from exc
    except BaseException:
        for channel in channels:
            channel.close()
        raise
    if server_max <= hs.HEADER_SIZE:
        server_max = hs.DEFAULT_MAX_MESSAGE_SIZE
    return _Session(
        sync,
        async_,
        answer.session_id,
        answer.version,
        server_max,
        vendor.decode("ascii", "replace"),
        answer.features,
        (sync.tls.version() or "TLS") if encrypted and sync.tls is not None else "none",
    )
