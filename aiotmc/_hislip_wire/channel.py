"""One HiSLIP connection on a non-blocking socket: whole messages in, whole messages out.

Receiving is cancellation-safe: bytes read are kept in the :class:`Reassembler` (or, read
at a message boundary as a wait ends, held in the channel's buffer and taken before
anything else) until a message is whole. The usual answer to a query, one whole DataEnd,
is taken past the reassembler (:meth:`Channel.data_end_now`). Sending tracks exactly what
went out: a send interrupted part-way keeps the unsent rest in :attr:`Channel.tail`, which
:meth:`Channel.flush` must send before anything else (the peer's framing depends on it).
Used by the client and the simulator.

Waiting is the event loop's (:func:`aiotmc._loops.boundary_waiter`); encryption, once
StartTLS has upgraded the connection in place, is :mod:`.tls`'s.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
from collections.abc import Awaitable, Sequence
from typing import Final

import anyio

from .._exceptions import ConnectionLostError, WriteTimeout
from .._loops import BoundaryWaiter, boundary_waiter
from .._types import BytesLike
from .._wake_threshold import wake_threshold
from ..protocol.hislip import HEADER, HEADER_SIZE, PROLOGUE, Message, MessageType, Reassembler
from .tls import TlsLayer

__all__ = ["Channel"]

_RECV_SIZE: Final = 256 * 1024
_FIRST_READ: Final = 64 * 1024  # read at a message boundary (larger payloads: in place)
_MAX_IOV: Final = 512
_DATA_END: Final = int(MessageType.DataEnd)


class Channel:
    """A socket with a reassembler; not for concurrent senders (callers serialize)."""

    __slots__ = (
        "_chunk",
        "_held",
        "_layer",
        "_lowat",
        "_tls",
        "_waiter",
        "closed",
        "name",
        "reader",
        "sent",
        "sock",
        "tail",
    )

    def __init__(self, sock: socket.socket, *, max_payload: int, name: str = "") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.reader = Reassembler(max_payload)
        self._chunk = bytearray(_RECV_SIZE)
        self.tail: list[BytesLike] = []  #: unsent rest of an interrupted message
        self.sent = 0  #: bytes committed to the wire (tells whether an interrupted send began)
        self.closed = False
        self._tls: ssl.SSLObject | None = None  #: the TLS session in force
        self._layer: TlsLayer | None = None  #: from the start of StartTLS to the end of EndTLS
        self._waiter: BoundaryWaiter | None = None  #: the loop's, made at the first wait
        #: bytes at the start of ``_chunk`` that a wait at a message boundary received and
        #: nobody took yet (taken before anything else is read; see :meth:`wait_readable`)
        self._held = 0
        self._lowat = 1  #: the socket's SO_RCVLOWAT (see :mod:`aiotmc._wake_threshold`)

    @property
    def tls(self) -> ssl.SSLObject | None:
        """The TLS session after :meth:`start_tls`, else None."""
        return self._tls

    @property
    def unsent(self) -> bool:
        """True if an interrupted send left bytes that :meth:`flush` must send first."""
        layer = self._layer
        return bool(self.tail) or (layer is not None and bool(layer.cipher))

    def ready(self) -> Message | None:
        """A message already received whole, without waiting."""
        return self.reader.next_message()

    def readable_now(self) -> bool:
        """True if bytes wait in the socket or a message is whole in the buffer."""
        if self._lowat != 1:  # select() honours the threshold: any byte counts here
            self._lowat = wake_threshold(self.sock, 0, self._lowat)
        if self._held or self.reader.buffered:
            return True
        if self._layer is not None and self._layer.readable_now():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def receive_nowait(self, *, look: bool = True) -> Message | None:
        """A whole message from what is buffered or readable now, else None (no waiting).
        ``look=False``: from what is buffered only (no ``recv``)."""
        message = self.reader.next_message()
        if message is not None:
            return message
        if not (look or self._held) or not self._read_some():
            return None
        return self.reader.next_message()

    def clock(self) -> float:
        """The event loop's clock (the one deadlines use), without a running-loop lookup
        once the channel has waited."""
        waiter = self._waiter
        if waiter is not None:
            return waiter.clock()
        return anyio.current_time()

    @property
    def at_rest(self) -> bool:
        """Nothing received and not yet taken: the next byte read starts a message."""
        return not self._held and self.reader.idle

    def data_end_now(self, message_id: int, *, look: bool = True) -> bytes | None:
        """The payload of a DataEnd with ``message_id`` if what arrived now is exactly
        that one whole message (the usual answer to a query), taken past the
        reassembler; else None, with whatever arrived given to the reassembler. Takes
        the bytes the last wait received, else (``look``) one ``recv``. Plaintext only,
        and only at a message boundary with nothing buffered."""
        reader = self.reader
        if self._tls is not None or not reader.idle:
            return None
        chunk = self._chunk
        n = self._held
        if n:
            self._held = 0
        elif not look:
            return None
        else:
            got = self._read_into(chunk, _FIRST_READ)  # plaintext: one recv
            if got is None:
                return None
            n = got
        if n >= HEADER_SIZE:
            prologue, type_, _, param, length = HEADER.unpack_from(chunk)
            if (
                n == HEADER_SIZE + length
                and type_ == _DATA_END
                and param == message_id
                and prologue == PROLOGUE
                and length <= reader.max_payload
            ):
                with memoryview(chunk) as view:
                    return bytes(view[HEADER_SIZE:n])
        with memoryview(chunk) as view:
            reader.feed(view[:n])
        return None

    def _read_some(self) -> bool:
        """Read what is ready into the reassembler (a large payload in place); False if
        nothing was."""
        reader = self.reader
        held = self._held
        if held:  # what the last wait received comes first
            self._held = 0
            with memoryview(self._chunk) as view:
                reader.feed(view[:held])
            return True
        target = reader.direct()
        if target is not None:
            n = self._read_into(target, len(target))
            if n is None:
                return False
            reader.advance(n)
            return True
        n = self._read_into(self._chunk, min(_RECV_SIZE, max(reader.wants(), 4096)))
        if n is None:
            return False
        reader.feed(memoryview(self._chunk)[:n])
        return True

    async def receive_until(self, deadline: float) -> Message | None:
        """The next whole message, or None when ``deadline`` passes first. Cheaper than
        :meth:`receive` under a cancel scope: the loop's waiter keeps the deadline
        itself; bytes are only read after a wait, never lost."""
        tried = self._tls is not None or self._held > 0  # bytes may be waiting: look first
        while True:
            message = self.reader.next_message()
            if message is not None:
                return message
            if tried and self._read_some():
                continue
            tried = True
            if not await self.wait_readable(deadline):
                return None

    def wait_readable(self, deadline: float) -> Awaitable[bool]:
        """Wait until bytes may be read; False if ``deadline`` passed first.

        At a message boundary with nothing held, in plaintext, the loop's waiter may
        receive the first bytes itself (held in ``_chunk``, taken before anything else
        is read, also if the wait is then cancelled); else it reads nothing, and bytes
        that arrive for a wait that is then cancelled stay in the socket. See
        :class:`aiotmc._loops.BoundaryWaiter`.
        """
        idle = self.reader.idle
        if self._lowat != 1 or not idle:
            self._set_threshold()
        waiter = self._waiter
        if waiter is None:
            waiter = self._new_waiter()
        return waiter.wait(deadline, idle and not self._held and self._layer is None)

    def _new_waiter(self) -> BoundaryWaiter:
        waiter = self._waiter = boundary_waiter(
            self.sock, memoryview(self._chunk)[:_FIRST_READ], self._hold
        )
        if self.closed:
            waiter.close()
        return waiter

    def _hold(self, n: int) -> None:
        """The waiter received ``n`` bytes into ``_chunk``."""
        self._held = n

    def _set_threshold(self) -> None:
        """Before a wait: for the rest of a long message (its length says how much is
        still in the socket or to come), wake once per megabyte; else at once. Not under
        TLS (ciphertext already pulled would not count) nor with bytes held back from
        the reassembler. Set before each wait; :meth:`readable_now` resets it."""
        remaining = 0 if self._tls is not None or self._held else self.reader.wants()
        self._lowat = wake_threshold(self.sock, remaining, self._lowat)

    async def receive(self, *, wait_first: bool = False) -> Message:
        """The next whole message (raises ConnectionLostError at EOF). ``wait_first``:
        the caller just found nothing ready, so wait before trying to read."""
        while True:
            message = self.reader.next_message()
            if message is not None:
                return message
            if wait_first:
                wait_first = False
                if self._tls is None and not self._held:  # (else bytes may be there)
                    await self.wait_readable(math.inf)
            if not self._read_some():
                await self.wait_readable(math.inf)

    def _read_into(self, chunk: bytearray | memoryview, size: int) -> int | None:
        """Plaintext bytes read into ``chunk`` now (>0), or None if none are ready."""
        if self._tls is None:
            try:
                n = self.sock.recv_into(chunk, size)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
            if n == 0:
                raise ConnectionLostError(f"HiSLIP {self.name} channel closed by the peer")
            return n
        assert self._layer is not None
        return self._layer.read_into(chunk, size)

    def send_now(self, buffers: Sequence[BytesLike]) -> bool:
        """Send ``buffers`` if the socket takes them whole now (True). Otherwise False:
        nothing went out, or part did and the rest is in :attr:`tail` for :meth:`flush`
        (the caller's buffers, not copied: flush before they change). Plaintext only,
        with nothing unsent; else False at once."""
        layer = self._layer
        if (
            self._tls is not None
            or self.tail
            or (layer is not None and layer.cipher)
            or len(buffers) > _MAX_IOV
        ):
            return False
        try:
            n = self.sock.sendmsg(buffers)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
        self.sent += n
        if n == sum(map(len, buffers)):
            return True
        if not n:
            return False
        self.tail = _rest(buffers, n)  # (len() counts items: a wider memoryview went whole)
        return not self.tail

    async def send(self, buffers: Sequence[BytesLike], deadline: float = math.inf) -> None:
        """Send ``buffers`` in order; :class:`WriteTimeout` at ``deadline``. Interrupted
        (timeout, cancellation), the unsent rest stays in :attr:`tail` (copied)."""
        if self.unsent:
            raise RuntimeError("flush() the interrupted message first")
        n = 0
        if self._tls is None and len(buffers) <= _MAX_IOV:  # the usual case: all at once
            try:
                n = self.sock.sendmsg(buffers)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
            self.sent += n
            if n == sum(map(len, buffers)):
                return
        if self._tls is None and n:  # part of it went out: the rest must follow
            self.tail = _rest(buffers, n)
            await self.flush(deadline)
            return
        self.tail = [memoryview(b).cast("B") for b in buffers if len(b)]
        before = self.sent
        try:
            await self.flush(deadline)
        except BaseException:
            if self.sent == before:  # nothing went out: as if never tried
                self.tail = []
            raise

    async def flush(self, deadline: float = math.inf) -> None:
        """Send what an interrupted :meth:`send` left in :attr:`tail`."""
        views = self.tail
        try:
            if self._tls is not None:
                assert self._layer is not None
                await self._layer.send(views, deadline)
            else:
                while views:
                    self.sent += self.send_some(views)
                    if views:
                        await self.wait_writable(deadline)
        except BaseException:
            self.tail = [memoryview(bytes(v)) for v in views]  # the caller's may change later
            raise

    def send_some(self, views: list[BytesLike]) -> int:
        """``sendmsg`` what the socket takes now and drop it from the front of ``views``;
        the bytes sent (0 when the socket is full)."""
        try:
            n = self.sock.sendmsg(views[:_MAX_IOV])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
        sent = n
        while n:
            first = views[0]
            if n >= len(first):
                n -= len(first)
                del views[0]
            else:
                views[0] = first[n:]
                n = 0
        return sent

    async def wait_writable(self, deadline: float) -> None:
        """Wait until the socket takes more (``WriteTimeout`` at ``deadline``)."""
        with anyio.CancelScope(deadline=deadline) as scope:
            while True:
                try:
                    await anyio.wait_writable(self.sock)
                    break
                except anyio.ClosedResourceError:
                    if self.closed:
                        raise
                    # woken by the trio watchdog of a read that timed out: wait again
        if scope.cancelled_caught:
            raise WriteTimeout(f"HiSLIP {self.name} channel: send timed out")

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        deadline: float = math.inf,
    ) -> ssl.SSLObject:
        """Upgrade this connection to TLS (the handshake, within ``deadline``).

        Bytes already received past the last whole message belong to the handshake and
        are handed to TLS. A failed handshake is :class:`AuthenticationError`; the
        channel is unusable after it (close it).
        """
        if self._tls is not None:
            raise RuntimeError("TLS is already on")
        if self.unsent:
            raise RuntimeError("flush() the interrupted message first")
        early = self.reader.take_buffered()
        if self._held:  # received after the reassembler's bytes
            early += bytes(memoryview(self._chunk)[: self._held])
            self._held = 0
        layer = self._layer = TlsLayer(self, early)  # the handshake's bytes go to TLS
        self._tls = await layer.handshake(
            context, server_side=server_side, server_hostname=server_hostname, deadline=deadline
        )
        return self._tls

    async def end_tls(self, *, deadline: float = math.inf) -> None:
        """Leave TLS (EndTLS): send our close_notify, wait for the peer's, and go on in
        plaintext; bytes that followed the peer's close_notify are plaintext already.
        Only between messages, and with nobody else reading this channel."""
        layer = self._layer
        if self._tls is None or layer is None:
            return
        if self.unsent:
            await self.flush(deadline)
        rest = await layer.unwrap(deadline)
        self._tls = None
        self._layer = None
        if rest:
            self.reader.feed(rest)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            if self._waiter is not None:
                self._waiter.close()  # wakes a waiter (trio: stops the watchdog)
            try:
                anyio.notify_closing(self.sock)  # wake a task waiting on it
            except Exception:  # outside the event loop, or not waited on
                pass
            try:
                self.sock.close()
            except OSError:
                pass


def _rest(buffers: Sequence[BytesLike], n: int) -> list[BytesLike]:
    """What is left of ``buffers`` after their first ``n`` bytes (views, no copies)."""
    views: list[BytesLike] = []
    for b in buffers:
        view = memoryview(b).cast("B")
        if n >= len(view):
            n -= len(view)
            continue
        views.append(view[n:])
        n = 0
    return views
