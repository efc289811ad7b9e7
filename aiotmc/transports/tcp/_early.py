"""Hand-over by I/O on a raw socket: the exchange a releasing caller starts for the
caller waiting next (one job).

With many tasks sharing one instrument, a plain lock hand-over costs the next caller two
wake-ups: one to send its query, one when the answer is readable. Here the releaser,
still owning the link, sends the waiting caller's query and arms the socket's receiver
with that caller's own lock wait (its asyncio future, its parked trio task), so the
caller wakes once, when its answer is there (see :class:`aiotmc._loops.EarlyStart`).

The start happens only when the link is in step (not stale, nothing buffered, no other
operation in progress) and the receiver can arm; otherwise the caller gets its turn as
usual and does its own exchange. A caller cancelled after the start leaves the link
stale (its answer is on the way), as a cancelled exchange does; a deadline, a closed
link or a socket error reach the caller as :meth:`SocketTransport.exchange` would raise
them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._receivers import Receiver, receiver_for
from ..base import EarlyExchange
from ._core import SocketCore

#: ``SocketTransport.exchange``, for a request the releaser could not start
Exchange = Callable[..., Awaitable[bytes]]

__all__ = ["SocketEarlyExchange"]


class SocketEarlyExchange(EarlyExchange):
    """One waiting caller's query, for :meth:`SocketTransport.early_exchange`."""

    __slots__ = ("_deadline", "_exchange", "_fed", "_link", "_max_size", "_message", "_receiver")

    def __init__(
        self, link: SocketCore, exchange: Exchange, message: bytes, max_size: int, deadline: float
    ) -> None:
        self.waiter: object = None  # EarlyStart's, set here: one call less per query
        self.started = False
        self._link = link
        self._exchange = exchange
        self._message = message
        self._max_size = max_size
        self._deadline = deadline
        self._receiver: Receiver | None = None  # the one armed by start()
        self._fed = False  # answer() gave the first bytes to the decoder

    def start(self) -> bool:
        """Arm the receiver for the waiter, then send its query whole (else disarm)."""
        link = self._link
        sock = link._sock
        if (
            sock is None
            or link._busy
            or link._stale
            or link._closed
            or link._in_blocking
            or link._lowat != 1
            or link._decoder.pending
        ):
            return False
        receiver = link._receiver
        if receiver is None:
            receiver = link._receiver = receiver_for(sock)
        message = self._message
        if not receiver.arm(self.waiter, link._chunk, self._deadline):
            return False
        try:
            sent = sock.send(message)
        except OSError:  # full (BlockingIOError) or failed: the waiter's exchange sees it
            sent = 0
        if sent < len(message):
            receiver.disarm()
            self._message = message[sent:]  # the waiter sends the rest itself
            return False
        self._receiver = receiver
        link._busy = True  # the waiter's, until finish()
        link._fresh = False
        self.started = True
        return True

    def answer(self, woken: object) -> bytes | None:
        """See :meth:`EarlyExchange.answer`: the bytes the armed wait brought (asyncio:
        received by the reader callback; trio: the socket is readable)."""
        receiver = self._receiver
        if receiver is None:
            return None
        link = self._link
        try:
            try:
                n = receiver.received(woken, link._chunk)
            except OSError as exc:  # TimeoutError included
                raise link._receive_failed(exc) from exc
            if n < 0:  # nothing there after all: finish() waits
                return None
            self._fed = True
            answer = link._first_answer(n, self._max_size)
        except BaseException as exc:
            link._stale_unless_in_step(exc)
            link._busy = False
            raise
        if answer is not None:
            link._busy = False
        return answer

    async def finish(self, woken: object) -> bytes:
        """See :meth:`EarlyExchange.finish`."""
        link = self._link
        if not self.started:  # the exchange is the waiter's own
            return await self._exchange(
                self._message, max_size=self._max_size, deadline=self._deadline
            )
        sock = link._sock
        assert sock is not None
        try:
            if not self._fed:  # the wake-up was stale: wait for the first bytes
                answer = link._first_answer(
                    await link._recv_into(sock, link._chunk, self._deadline, False),
                    self._max_size,
                )
                if answer is not None:
                    return answer
            return await link._receive_message(sock, self._max_size, self._deadline)
        except BaseException as exc:
            link._stale_unless_in_step(exc)
            raise
        finally:
            link._busy = False

    def abandon(self) -> None:
        """The waiter was cancelled after the start: its answer is on the way."""
        link = self._link
        if self._receiver is not None:
            self._receiver.disarm()
        link._stale = True
        link._busy = False
