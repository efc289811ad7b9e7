"""The HiSLIP client transport: opening a link, its data path, closing it (this module).

The link has a synchronous and an asynchronous channel and runs in either mode.

Synchronous channel (Data, DataEnd, Trigger, DeviceClearComplete): used only by the task
holding the link (``anyio.BusyResourceError`` for another). Answers are matched by
MessageID: a Data/DataEnd whose MessageID is not the one of the last message sent is
discarded, and so is everything of a query that timed out or was cancelled, so a late
answer never reaches a later exchange. RMT-delivered goes on the first message after each
answer delivered to the caller, once.

Asynchronous channel (:mod:`._asyncchannel`): one background reader separates
AsyncServiceRequest (published to :attr:`HislipTransport.srq`, then re-armed with a status
query) from replies, which are handed in order to the requests waiting for them; a request
abandoned by timeout or cancellation has its reply dropped when it comes.

An interrupted send (timeout, cancellation part-way) leaves the rest of the HiSLIP
message to be sent first and a device clear to be done before the next operation.

Overlapped mode (chosen at device clear when both sides want it) adds :meth:`pipeline`:
a batch of queries in flight at once, answers matched by MessageID. There, nothing
interrupts a query whose answer nobody waits for any more, so a stopped one is
device-cleared before the next operation.

:class:`HislipTransport` is built in layers (subclasses, for the reason given in
:mod:`._core`), each in its module with one job: :mod:`._core` (session state and the
synchronous channel's primitives), :mod:`._reconnect` (a new session in place of a failed
one), :mod:`._control` (status byte, clear, trigger, remote/local, locks, descriptors),
:mod:`._tls` (StartTLS, EndTLS), and this module (opening; messages, queries, blocks and
pipelines; closing). Objects of their own: :mod:`._asyncchannel` (the asynchronous
channel's reader and requests), :mod:`._overlap` (concurrent overlapped queries),
:mod:`._handshake` (a session's set-up), :mod:`._blocksink` (blocks straight into a
buffer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint

from ..._exceptions import (
    ReadTimeout,
    RemoteProtocolError,
    UnsupportedOperation,
)
from ..._fastpath import schedule_point_due
from ..._types import BytesLike
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...protocol.ieee4882 import block_payload_view
from ...reconnect import Reconnect
from ...srq import SrqBroadcaster
from .._block_into import deliver_block
from ._blocksink import BlockSink
from ._control import ControlOperations
from ._handshake import Target, handshake
from ._security import Security
from ._tls import TlsOperations

__all__ = ["HislipTransport"]

_BLOCK_SLACK: Final = 64  # header and terminator around a block payload
_DATA_END: Final = int(T.DataEnd)


class HislipTransport(ControlOperations, TlsOperations):
    """A :class:`~aiotmc.transports.base.MessageTransport` over HiSLIP."""

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
        target = Target(
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
        session = await handshake(target, connect_timeout)
        link = cls(session, target)
        link._async.start_reader()
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
        return deliver_block(payload, into)

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
                        if not self._answers(message, expected):
                            continue  # stale (timed out, cancelled, interrupted) or abandoned
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

    async def aclose(self) -> None:
        """Close both channels and stop the reader; idempotent, completes when cancelled."""
        if self._closed:
            return
        self._closed = True
        self._sync.close()
        self._async.close()  # and wakes its waiting requests
        self._srq.close()
        await self._async.stop_reader()
        reconnector, self._reconnector = self._reconnector, None
        if reconnector is not None:
            await reconnector.stop()
