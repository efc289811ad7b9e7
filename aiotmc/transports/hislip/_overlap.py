"""Overlapped mode for concurrent tasks: queries from several tasks in flight at once.

Each task sends its query under a short send lock (MessageIDs stay +2 apart, a message
is never cut by another), registers the MessageID it waits for, then waits. Whoever
waits first reads the synchronous channel for everybody (the *reader* role; no
background task): every Data/DataEnd goes to the task waiting for its MessageID, and
an answer nobody waits for any more is dropped. When the reader has its own answer it
hands the role on by waking the others. Cancellation or a timeout only removes the
task's entry: the channel stays in step (the reassembler keeps partial messages, a send
cut short is finished by the next sender), and no device clear is needed, because
answers are matched by MessageID and not by order.

What it uses of its link (the HiSLIP transport) is spelled out by :class:`OverlapLink`,
so that this module does not depend on the transport's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import anyio

from ..._exceptions import ReadTimeout, RemoteProtocolError
from ..._hislip_wire import Channel
from ..._types import BytesLike
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ..base import TransportInfo

__all__ = ["Overlap", "OverlapLink"]


class OverlapLink(Protocol):
    """What :class:`Overlap` needs of its link: the synchronous channel and its state,
    and the link's primitives to send, receive and handle a failure (see
    :class:`~._core.LinkCore`, which provides them)."""

    _sync: Channel
    _ids: hs.MessageIdCounter
    _rmt: bool  #: an answer was delivered and not yet reported
    _resync: bool  #: clear before going on
    _failure: Exception | None

    @property
    def info(self) -> TransportInfo: ...
    def _check_usable(self) -> None: ...
    def _check_failure(self) -> None: ...
    async def _restore(self, deadline: float) -> None: ...
    async def _clear(self, deadline: float) -> None: ...
    async def _send_data(self, parts: Sequence[BytesLike], end: bool, deadline: float) -> None: ...
    async def _sync_message(self, deadline: float) -> hs.Message: ...
    def _lost(self, exc: BaseException) -> None: ...
    def _fail_now(self, message: hs.Message) -> None: ...


class _Answer:
    __slots__ = ("done", "error", "max_size", "pieces", "size", "wake")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.pieces: list[bytes] = []
        self.size = 0
        self.done = False
        self.error: Exception | None = None
        self.wake = anyio.Event()


class Overlap:
    """The concurrent query path of one overlapped HiSLIP link."""

    def __init__(self, link: OverlapLink) -> None:
        self._link = link
        self._send_lock = anyio.Lock()
        self._waiting: dict[int, _Answer] = {}
        self._reading = False
        self.peak = 0  #: most queries in flight at once (for tests and benchmarks)

    @property
    def busy(self) -> bool:
        """A query is being sent or waits for its answer."""
        return bool(self._waiting) or self._reading or self._send_lock.locked()

    async def query(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and wait for its answer, matched by MessageID."""
        answer = _Answer(max_size)
        message_id = await self._send(message, answer, deadline)
        try:
            while not answer.done:
                if self._reading:
                    await self._wait(answer, deadline)
                else:
                    await self._read_for(answer, deadline)
        finally:
            self._waiting.pop(message_id, None)  # a late answer is dropped when it comes
            if not answer.done and not self._waiting and not self._reading:
                self._link._resync = True  # alone: clear it rather than wait behind it
        if answer.error is not None:
            raise answer.error
        self._link._rmt = True
        return answer.pieces[0] if len(answer.pieces) == 1 else b"".join(answer.pieces)

    async def _send(self, message: bytes, answer: _Answer, deadline: float) -> int:
        link = self._link
        async with self._send_lock:
            link._check_usable()
            if link._failure is not None:  # under a reconnect policy
                if self._waiting or self._reading:  # their answers went with the session
                    link._check_failure()
                await link._restore(deadline)
            if link._sync.unsent:  # a send cut short: finish that message first
                await link._sync.flush(deadline)
            if link._resync and not self._waiting and not self._reading:
                await link._clear(deadline)  # nobody else in flight: safe to clear
            await link._send_data((message,), True, deadline)
            link._resync = False  # cut short, the rest goes first next time: still in step
            message_id = link._ids.last
            self._waiting[message_id] = answer
            self.peak = max(self.peak, len(self._waiting))
            return message_id

    async def _wait(self, answer: _Answer, deadline: float) -> None:
        answer.wake = anyio.Event()
        with anyio.CancelScope(deadline=deadline) as scope:
            await answer.wake.wait()
        if scope.cancelled_caught:
            raise ReadTimeout(f"{self._link.info.resource}: no answer within the timeout")

    async def _read_for(self, answer: _Answer, deadline: float) -> None:
        """Take the reader role until ``answer`` is complete, then hand it on."""
        self._reading = True
        try:
            while not answer.done:
                self._dispatch(await self._link._sync_message(deadline))
        except BaseException as exc:
            self._link._lost(exc)
            raise
        finally:
            self._reading = False
            for other in self._waiting.values():
                other.wake.set()  # one of them takes the role (or finds its answer)

    def _dispatch(self, message: hs.Message) -> None:
        type_ = message.type
        if type_ in (T.Data, T.DataEnd):
            answer = self._waiting.get(message.param)
            if answer is None:
                return  # abandoned, or from before
            if answer.error is None:
                answer.size += len(message.payload)
                if answer.size > answer.max_size:
                    answer.error = RemoteProtocolError(
                        f"response exceeds max_size={answer.max_size}"
                    )
                    answer.pieces.clear()
                else:
                    answer.pieces.append(message.payload)
            if type_ == T.DataEnd:
                answer.done = True
                del self._waiting[message.param]
                answer.wake.set()
        elif type_ == T.Error:
            hs.raise_if_error(message)
        elif type_ != T.Interrupted:
            self._link._fail_now(message)
