"""The calling-thread fast path of ``aiotmc.sync`` over a raw socket (one job).

:class:`CallerThreadIO` adds ``SupportsBlockingIO`` (:meth:`exchange_blocking`,
:meth:`send_blocking`, :meth:`receive_blocking`): a thread that holds the instrument's
lock claims the link (:meth:`_blocking_ready`, under the lock :meth:`aclose` takes too),
sends and receives one message itself, and gives the link back; when the link is busy,
stale or closed it answers None and the caller takes the event-loop path. The waits are
:mod:`aiotmc.transports._blocking`'s (``sendall_blocking``, ``wait_blocking``: ``poll``
on the non-blocking socket the event loop shares, for any transport); this module is the
raw-socket link's use of them (its state, framing and errors). A layer of the transport
for the reason given in :mod:`._core`.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence

from ..._exceptions import ReadTimeout, RemoteProtocolError, WriteTimeout
from .._blocking import sendall_blocking, wait_blocking
from ..base import BytesLike
from ._blocks import BlockReading
from ._core import _too_long

__all__ = ["CallerThreadIO"]


class CallerThreadIO(BlockReading):
    """A raw-socket link usable from the calling thread (``aiotmc.sync``)."""

    def _blocking_ready(self) -> socket.socket | None:
        """The socket, claimed for a blocking operation; None when the link is not in a
        state for one (busy, stale, closed): the caller then takes the event-loop path."""
        with self._blocking_gate:
            sock = self._sock
            if self._busy or self._stale or sock is None or self._closed:
                return None
            self._busy = self._in_blocking = True
        return sock

    def _blocking_done(self) -> None:
        with self._blocking_gate:
            self._busy = self._in_blocking = False

    def _send_blocking(
        self, sock: socket.socket, parts: Sequence[BytesLike], deadline: float
    ) -> None:
        try:
            done = sendall_blocking(sock, parts, deadline)
        except OSError as exc:
            raise self._lost("send failed", exc) from exc
        if not done:
            raise WriteTimeout(f"{self._info.resource}: could not send before the deadline")

    def _receive_blocking(self, sock: socket.socket, max_size: int, deadline: float) -> bytes:
        """One message (terminator included), waiting in this thread."""
        decoder = self._decoder
        chunk = self._chunk
        flowing = False  # once data flows, try recv before waiting (a long message)
        while True:
            message = decoder.next_message()
            if isinstance(message, bytes):
                if len(message) > max_size:
                    raise _too_long(len(message), max_size)
                return message
            if decoder.pending > max_size:  # the connection is replaced (stale) after this
                raise RemoteProtocolError(f"response exceeds max_size={max_size} bytes")
            if not flowing and not wait_blocking(sock, select.POLLIN, deadline):
                raise ReadTimeout(f"{self._info.resource}: no complete answer before the deadline")
            try:
                n = sock.recv_into(chunk)
            except BlockingIOError:
                flowing = False
                continue
            except OSError as exc:
                raise self._receive_failed(exc) from exc
            if not n:
                raise self._closed_by_peer()
            flowing = True
            decoder.receive_data(chunk[:n])

    def exchange_blocking(self, message: bytes, *, max_size: int, deadline: float) -> bytes | None:
        """:meth:`exchange` in the calling thread (``deadline``: ``time.monotonic()``);
        None when the link is not in a state for it. The caller holds the instrument's lock.
        A failure or interruption (Ctrl-C) part-way marks the link stale, as a cancellation."""
        sock = self._blocking_ready()
        if sock is None:
            return None
        try:
            self._send_blocking(sock, (message,), deadline)
            self._fresh = False
            return self._receive_blocking(sock, max_size, deadline)
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._blocking_done()

    def send_blocking(self, data: BytesLike, *, end: bool = True, deadline: float) -> bool:
        """:meth:`send_message` of one buffer in the calling thread; False when the link is
        not in a state for it."""
        sock = self._blocking_ready()
        if sock is None:
            return False
        try:
            self._send_blocking(sock, (data,), deadline)
            self._fresh = not self._decoder.pending
        except BaseException:
            self._stale = True
            raise
        finally:
            self._blocking_done()
        return True

    def receive_blocking(self, *, max_size: int, deadline: float) -> bytes | None:
        """:meth:`receive_message` in the calling thread; None when the link is not in a
        state for it."""
        sock = self._blocking_ready()
        if sock is None:
            return None
        try:
            self._fresh = False
            return self._receive_blocking(sock, max_size, deadline)
        except BaseException as exc:
            self._stale_unless_in_step(exc)
            raise
        finally:
            self._blocking_done()
