"""The state of a HiSLIP link and its synchronous-channel primitives (one job).

:class:`LinkCore` holds everything a link knows about its session (both channels,
MessageIDs, the flags that keep the synchronous channel in step, its failure) and the
primitives every operation is built from: taking the link, finishing what an
interrupted operation left, sending Data messages, receiving an answer matched by
MessageID, the device clear, and turning a FatalError into the typed error.

The transport is this class plus layers that each add one job (:mod:`._reconnect`,
:mod:`._control`, :mod:`._tls`, then :mod:`._link`), as subclasses rather than separate
objects: the query path (:meth:`HislipTransport.exchange`) reads and writes this state
directly on the instance, so held elsewhere it would cost a lookup per query, and the
reconnection, which replaces all of it, would have to reach into another object's
internals. The asynchronous channel and the overlapped query path, which keep their own
state, are objects of their own (:mod:`._asyncchannel`, :mod:`._overlap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

import anyio

from ..._background import BackgroundTask
from ..._exceptions import (
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
)
from ..._types import BytesLike
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...srq import SrqBroadcaster
from .._probe import AnswerProbe
from ..base import Capabilities, TransportInfo
from ._asyncchannel import AsyncChannel
from ._handshake import Session, Target
from ._overlap import Overlap

__all__ = ["LinkCore"]

_CAPABILITIES: Final = Capabilities(
    srq=True,
    read_stb=True,
    device_clear=True,
    trigger=True,
    remote_local=True,
    eom=True,
    locking=True,
)


class LinkCore:
    """A HiSLIP link's session state and synchronous-channel primitives."""

    def __init__(self, session: Session, target: Target) -> None:
        self._target = target
        self._sync = session.sync
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
        self._srq = SrqBroadcaster(target.resource)
        self._async = AsyncChannel(  # the asynchronous channel, its reader and requests
            session.async_,
            target.resource,
            self._srq,
            status_query=self._status_query,
            check_failure=self._check_failure,
            fail=self._fail,
            fail_now=self._fail_now,
        )
        # the reconnection layer's (:mod:`._reconnect`); the query path reads _lost_locks
        self.reconnects = 0  #: how many times the session was replaced
        self._locks: set[str] = set()  #: locks granted to this session ("": exclusive)
        self._lost_locks: set[str] = set()  #: locks of a replaced session, not yet reported
        self._reconnector: BackgroundTask | None = None  #: a background reconnect running
        self._attempt: anyio.Event | None = None  #: set when its try in progress ends
        self._overlapped = bool(session.features & hs.Feature.OVERLAPPED)
        self._overlap = Overlap(self)
        self._info = self._describe(session)

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    def _describe(self, session: Session) -> TransportInfo:
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

    # -- hooks of the reconnection layer (:mod:`._reconnect`) ------------------------------

    async def _restore(self, deadline: float) -> None:
        """A new session before an operation, when the old one failed."""
        raise NotImplementedError

    def _schedule_reconnect(self) -> None:
        """A new session in the background, once the session failed."""
        raise NotImplementedError

    # -- failure ---------------------------------------------------------------------------

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

    def _check_failure(self) -> None:
        if self._failure is not None:
            raise SessionBrokenError(
                f"the HiSLIP session failed ({self._failure}); reopen the instrument",
                resource=self._info.resource,
            )

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._async.wake_all()
        if not self._closed:
            self._schedule_reconnect()

    def _lost(self, exc: BaseException) -> None:
        """An operation saw the synchronous channel go: the session is over (so that the
        next operation knows at once, without waiting for the reader to notice)."""
        if isinstance(exc, ConnectionLostError) and self._failure is None and not self._closed:
            self._fail(exc)

    # -- the synchronous channel -----------------------------------------------------------

    def _status_query(self) -> bytes:
        rmt, self._rmt = self._rmt, False
        return hs.encode(T.AsyncStatusQuery, int(rmt), self._ids.last)

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
                    if not self._answers(message, expected):
                        continue  # stale (timed out, cancelled, interrupted) or abandoned
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

    def _answers(self, message: hs.Message, expected: int) -> bool:
        """Whether a Data or DataEnd ``message`` belongs to the answer awaited as
        ``expected``: that MessageID, or an unattributed Data; never while that answer is
        abandoned (its rest is skipped as it comes)."""
        if message.param != expected and not (
            message.type == T.Data and message.param == hs.UNATTRIBUTED
        ):
            return False  # a stale answer (timed out, cancelled, interrupted)
        return expected != self._abandoned

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
        ack = await self._async.request(
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
