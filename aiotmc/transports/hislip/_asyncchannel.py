"""The HiSLIP asynchronous channel: its one reader and the requests waiting for replies.

:class:`AsyncChannel` owns the asynchronous channel of a link for the link's lifetime
(a reconnect hands it the new session's channel; the send lock and the queue of waiting
requests stay). One background reader (:mod:`aiotmc._background`) separates
AsyncServiceRequest (published to the link's :class:`~aiotmc.srq.SrqBroadcaster`, then
re-armed with a status query) from replies, which are handed in order to the requests
waiting for them; a request abandoned by timeout or cancellation has its reply dropped
when it comes. The reader also does this channel's part of StartTLS and EndTLS before
handing their replies over, so that no request goes out half-way through.

The link's state stays the link's: what this object needs of it (the status query to
send, its failure check and its two failure handlers) it is given as callables.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final

import anyio

from ..._background import BackgroundTask, spawn
from ..._exceptions import (
    AuthenticationError,
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    TransportError,
)
from ..._hislip_wire import Channel
from ...protocol import hislip as hs
from ...protocol.hislip import MessageType as T
from ...srq import SrqBroadcaster

__all__ = ["TLS_RESPONSE_OK", "AsyncChannel"]

_log = logging.getLogger("aiotmc.transports.hislip")

_ASYNC_SEND_TIMEOUT: Final = 5.0  # a 16-byte request that cannot go out: the link is dead
TLS_RESPONSE_OK: Final = 1  #: AsyncStartTLSResponse / AsyncEndTLSResponse: success


class _Pending:
    """One asynchronous request waiting for its reply (replies come in request order)."""

    __slots__ = ("done", "expect", "reply", "wanted")

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.done = anyio.Event()
        self.reply: hs.Message | None = None
        self.wanted = True


class AsyncChannel:
    """The asynchronous channel of one link: requests, replies, service requests.

    ``status_query`` builds the AsyncStatusQuery that re-arms service requests;
    ``check_failure`` raises the link's typed error once its session failed; ``fail``
    marks the session failed (an error of this channel); ``fail_now`` handles a
    FatalError (or an unexpected message) as the synchronous channel does.
    """

    def __init__(
        self,
        channel: Channel,
        resource: str,
        srq: SrqBroadcaster,
        *,
        status_query: Callable[[], bytes],
        check_failure: Callable[[], None],
        fail: Callable[[Exception], None],
        fail_now: Callable[[hs.Message], None],
    ) -> None:
        self.channel = channel  #: the current session's asynchronous channel
        self.closed = False  #: the link was closed
        self._resource = resource
        self._srq = srq
        self._status_query = status_query
        self._check_failure = check_failure
        self._fail = fail
        self._fail_now = fail_now
        self._pending: deque[_Pending] = deque()
        self._lock = anyio.Lock()
        self._reader: BackgroundTask | None = None
        self._reader_done = False  #: nobody will answer pending requests any more
        self._upgrade: tuple[ssl.SSLContext, str] | None = None  #: StartTLS in progress
        self._upgrade_error: Exception | None = None

    def start_reader(self) -> None:
        """Start the reader of the current channel."""
        self._reader_done = False
        self._reader = spawn(
            self._read, name=f"aiotmc hislip {self._resource}", on_error=self._fail
        )

    async def stop_reader(self) -> None:
        """Stop the reader (if one runs) and wait for it to end."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()

    def close(self) -> None:
        """The link closes: close the channel and wake every waiting request."""
        self.closed = True
        self.channel.close()
        self.wake_all()

    async def request(
        self, message: bytes | Callable[[], bytes], expect: int, deadline: float
    ) -> hs.Message:
        """Send ``message`` and return its reply, of message type ``expect``."""
        if self.closed:
            raise anyio.ClosedResourceError
        self._check_failure()
        pending = _Pending(expect)
        try:
            await self._post(message, pending)
            with anyio.CancelScope(deadline=deadline) as scope:
                await pending.done.wait()
            if scope.cancelled_caught:
                raise ReadTimeout(f"{self._resource}: no HiSLIP reply within the timeout")
        finally:
            pending.wanted = False
        if self.closed:
            raise anyio.ClosedResourceError
        reply = pending.reply
        if reply is None:
            self._check_failure()
            raise ConnectionLostError(
                "the HiSLIP asynchronous channel closed", resource=self._resource
            )
        return reply

    async def request_start_tls(
        self, message: bytes, context: ssl.SSLContext, name: str, deadline: float
    ) -> hs.Message:
        """AsyncStartTLS: the reader does this channel's TLS handshake (verifying ``name``)
        before it hands the reply over; a failed handshake is raised here."""
        self._upgrade, self._upgrade_error = (context, name), None
        try:
            reply = await self.request(message, T.AsyncStartTLSResponse, deadline)
        finally:
            self._upgrade = None
        if self._upgrade_error is not None:
            raise self._upgrade_error
        return reply

    async def _post(self, message: bytes | Callable[[], bytes], pending: _Pending) -> None:
        """Queue ``pending`` and send its request, in order, even if cancelled meanwhile.
        A callable ``message`` is built at the moment it goes out (a status query must
        carry the MessageID of the last message sent before it, not before the wait for
        the lock)."""
        async with self._lock:
            if callable(message):
                message = message()
            self._pending.append(pending)
            if self._reader_done:
                self.wake_all()
            with anyio.CancelScope(shield=True):
                limit = anyio.current_time() + _ASYNC_SEND_TIMEOUT
                try:
                    await self.channel.send([message], limit)
                except (TransportError, OSError) as exc:
                    self._fail(exc)
                    raise SessionBrokenError(
                        f"HiSLIP asynchronous channel: {exc}", resource=self._resource
                    ) from exc

    async def _read(self) -> None:
        """The one reader of the asynchronous channel."""
        try:
            while True:
                message = await self.channel.receive()
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
                        _log.warning("%s: HiSLIP Error %d", self._resource, message.control)
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
                    and message.control == TLS_RESPONSE_OK
                    and self._upgrade is not None
                ):
                    await self._upgrade_channel(*self._upgrade, pending, message)
                if type_ == T.AsyncEndTLSResponse and message.control == TLS_RESPONSE_OK:
                    async with self._lock:  # no request goes out half-way through
                        limit = anyio.current_time() + _ASYNC_SEND_TIMEOUT
                        await self.channel.end_tls(deadline=limit)
                pending.reply = message
                pending.done.set()
        except (ConnectionLostError, anyio.ClosedResourceError) as exc:
            if not self.closed:
                self._fail(exc)
        except (TransportError, RemoteProtocolError, hs.HislipError) as exc:
            self._fail(exc)
        finally:
            self._reader_done = True
            self.wake_all()

    async def _upgrade_channel(
        self, context: ssl.SSLContext, name: str, pending: _Pending, reply: hs.Message
    ) -> None:
        """The reader's part of StartTLS: this channel's handshake, before the reply is
        handed over (no request goes out meanwhile)."""
        async with self._lock:
            limit = anyio.current_time() + _ASYNC_SEND_TIMEOUT
            try:
                await self.channel.start_tls(context, server_hostname=name, deadline=limit)
            except (AuthenticationError, TransportError) as exc:
                self._upgrade_error = exc
                pending.reply = reply
                pending.done.set()
                raise

    def wake_all(self) -> None:
        """Wake every waiting request (without a reply: the channel is gone)."""
        while self._pending:
            self._pending.popleft().done.set()
