"""One HiSLIP connection on a non-blocking socket: whole messages in, whole messages out.

Receiving is cancellation-safe: bytes read are kept in the :class:`Reassembler` (or, read
at a message boundary as a wait ends, held in the channel's buffer and taken before
anything else) until a message is whole. The usual answer to a query, one whole DataEnd,
is taken past the reassembler (:meth:`Channel.data_end_now`). Sending tracks exactly what
went out: a send interrupted part-way keeps the unsent rest in :attr:`Channel.tail`, which
:meth:`Channel.flush` must send before anything else (the peer's framing depends on it).
Used by the client and the simulator.

HiSLIP 2.0 upgrades a connection in place (StartTLS): :meth:`Channel.start_tls` puts the
standard library's sans-IO TLS (``ssl.SSLObject`` over two ``MemoryBIO``, what
``anyio.streams.tls`` is built on) between the socket and the framing, so that the
same cancellation rules hold encrypted: plaintext is encrypted as it is committed to
the wire and the ciphertext of an interrupted send stays queued, in order.
"""

from __future__ import annotations

import asyncio
import math
import select
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, cast

import anyio

from ._exceptions import AuthenticationError, ConnectionLostError, ConnectTimeout, WriteTimeout
from ._fastpath import running_loop
from ._loops import loop_receiver
from ._types import BytesLike
from ._wake_threshold import wake_threshold
from .protocol.hislip import HEADER, HEADER_SIZE, PROLOGUE, Message, MessageType, Reassembler

if TYPE_CHECKING:
    from ._loops.asyncio_ import AsyncioReceiver
    from ._loops.trio_ import TrioReceiver

__all__ = ["Channel"]

_RECV_SIZE: Final = 256 * 1024
_FIRST_READ: Final = 64 * 1024  # read at a message boundary (larger payloads: in place)
_MAX_IOV: Final = 512
_TLS_CHUNK: Final = 256 * 1024  # plaintext encrypted per step
_TLS_AHEAD: Final = 1024 * 1024  # ciphertext queued ahead while the socket is full, at most
_TLS_PULL: Final = 256 * 1024  # ciphertext read per recv
_DATA_END: Final = int(MessageType.DataEnd)


class Channel:
    """A socket with a reassembler; not for concurrent senders (callers serialize)."""

    __slots__ = (
        "_callback_reads",
        "_chunk",
        "_cipher",
        "_deadline",
        "_held",
        "_incoming",
        "_loop",
        "_lowat",
        "_outgoing",
        "_pulled",
        "_registered",
        "_timer",
        "_timer_at",
        "_tls",
        "_trio_receiver",
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
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._cipher: list[BytesLike] = []  #: encrypted bytes not yet sent
        self._pulled: bytearray | None = None  #: ciphertext from the socket (reused)
        self._waiter: asyncio.Future[bool] | None = None  #: asyncio readiness wait
        #: bytes at the start of ``_chunk`` that the asyncio reader callback received and
        #: nobody took yet (taken before anything else is read; see :meth:`_on_readable`)
        self._held = 0
        self._callback_reads = True  #: off during the StartTLS handshake
        self._trio_receiver: TrioReceiver | AsyncioReceiver | None = (
            None  #: trio: waits at a message boundary
        )
        self._loop: asyncio.AbstractEventLoop | bool | None = None  #: False: trio; None: unknown
        self._registered = False  #: the fd is registered with the asyncio loop
        self._deadline = math.inf  #: of the asyncio wait in progress
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._lowat = 1  #: the socket's SO_RCVLOWAT (see :mod:`aiotmc._wake_threshold`)

    @property
    def tls(self) -> ssl.SSLObject | None:
        """The TLS session after :meth:`start_tls`, else None."""
        return self._tls

    @property
    def unsent(self) -> bool:
        """True if an interrupted send left bytes that :meth:`flush` must send first."""
        return bool(self.tail or self._cipher)

    def ready(self) -> Message | None:
        """A message already received whole, without waiting."""
        return self.reader.next_message()

    def readable_now(self) -> bool:
        """True if bytes wait in the socket or a message is whole in the buffer."""
        if self._lowat != 1:  # select() honours the threshold: any byte counts here
            self._lowat = wake_threshold(self.sock, 0, self._lowat)
        if self._held or self.reader.buffered or self._incoming.pending:
            return True
        if self._tls is not None and self._tls.pending():
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
        loop = self._loop
        if isinstance(loop, asyncio.AbstractEventLoop):
            return loop.time()
        return anyio.current_time()

    @property
    def at_rest(self) -> bool:
        """Nothing received and not yet taken: the next byte read starts a message."""
        return not self._held and self.reader.idle

    def data_end_now(self, message_id: int, *, look: bool = True) -> bytes | None:
        """The payload of a DataEnd with ``message_id`` if what arrived now is exactly
        that one whole message (the usual answer to a query), taken past the
        reassembler; else None, with whatever arrived given to the reassembler. Takes
        the bytes the reader callback received, else (``look``) one ``recv``. Plaintext
        only, and only at a message boundary with nothing buffered."""
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

    async def wait_readable(self, deadline: float) -> bool:
        """Wait until bytes may be read; False if ``deadline`` passed first. Reads
        nothing: bytes that arrive for a wait that is then cancelled stay in the socket."""
        return await self._readable(deadline)

    def _read_some(self) -> bool:
        """Read what is ready into the reassembler (a large payload in place); False if
        nothing was."""
        reader = self.reader
        held = self._held
        if held:  # what the reader callback received comes first
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
        :meth:`receive` under a cancel scope: the deadline is a timer on the wait itself
        (asyncio) or trio's own scope; bytes are only read after a wait, never lost."""
        tried = self._tls is not None or self._held > 0  # bytes may be waiting: look first
        while True:
            message = self.reader.next_message()
            if message is not None:
                return message
            if tried and self._read_some():
                continue
            tried = True
            if not await self._readable(deadline):
                return None

    async def _readable(self, deadline: float) -> bool:
        """Wait until the socket is readable; False if ``deadline`` passed first.

        asyncio: the fd stays registered between waits (no ``epoll_ctl`` pair per wait)
        and the callback only wakes the waiter, so no byte is read for a wait that is
        then cancelled; a callback that finds nobody waiting unregisters (a readable
        socket nobody reads never spins the loop). One timer is re-armed lazily for
        the deadlines (they mostly grow). trio: ``wait_readable``, a scope only for a
        finite deadline.
        """
        if self._lowat != 1 or not self.reader.idle:
            self._set_threshold()
        loop = self._loop
        if loop is None:
            loop = self._loop = running_loop() or False
        if loop is False:
            if deadline != math.inf and self._tls is None and self.at_rest:
                return await self._trio_receive(deadline)
            return await self._trio_readable(deadline)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        if self.closed:
            raise anyio.ClosedResourceError
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        self._deadline = deadline
        if not self._registered:
            loop.add_reader(self.sock.fileno(), self._on_readable)
            self._registered = True
        if deadline < self._timer_at:
            self._arm(loop, deadline)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _set_threshold(self) -> None:
        """Before a wait: for the rest of a long message (its length says how much is
        still in the socket or to come), wake once per megabyte; else at once. Not under
        TLS (ciphertext already pulled would not count) nor with bytes held back from
        the reassembler. Set before each wait; :meth:`readable_now` resets it."""
        remaining = 0 if self._tls is not None or self._held else self.reader.wants()
        self._lowat = wake_threshold(self.sock, remaining, self._lowat)

    def _on_readable(self) -> None:
        """The reader callback. At a message boundary (plaintext) it receives the bytes
        itself into ``_chunk`` (``_held``, taken before anything else is read), so a
        readiness event gone stale (the bytes were taken meanwhile) costs a failed
        ``recv``, not a task wake-up; the bytes stay with the channel even if the wait
        is then cancelled."""
        waiter = self._waiter
        if waiter is None:
            self._unregister()
            return
        if waiter.done():
            return
        if self._tls is None and self._callback_reads and not self._held and self.reader.idle:
            try:
                self._held = self.sock.recv_into(self._chunk, _FIRST_READ)
            except (BlockingIOError, InterruptedError):
                return  # stale: keep waiting
            except OSError:
                pass  # the waiter's own read reports it
        waiter.set_result(True)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            loop = self._loop
            assert isinstance(loop, asyncio.AbstractEventLoop)
            try:
                loop.remove_reader(self.sock.fileno())
            except (RuntimeError, ValueError, OSError):  # loop or socket already closed
                pass

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._on_timer, when)
        self._timer_at = when

    def _on_timer(self, when: float) -> None:
        self._timer = None
        self._timer_at = math.inf
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._deadline <= when:
            waiter.set_result(False)
        else:  # a later wait's deadline: move on to it
            loop = self._loop
            assert isinstance(loop, asyncio.AbstractEventLoop)
            self._arm(loop, self._deadline)

    async def _trio_receive(self, deadline: float) -> bool:
        """trio, at a message boundary: wait without a cancel scope (~7 us each), the
        deadline kept by the TCP transport's watchdog (:class:`TrioReceiver`, which
        wakes an expired wait with ``notify_closing``: :meth:`_writable` waits again
        when that wakes it), and receive into ``_chunk`` as the asyncio callback does
        (no checkpoint between the wait and the ``recv``: nothing is lost)."""
        receiver = self._trio_receiver
        if receiver is None:
            receiver = self._trio_receiver = loop_receiver(self.sock)
            assert receiver is not None
        with memoryview(self._chunk) as view:
            try:
                self._held = await receiver.recv_into(view[:_FIRST_READ], deadline, False)
            except TimeoutError:
                return False
            except OSError:
                pass  # the caller's own read reports it
        return True

    async def _trio_readable(self, deadline: float) -> bool:
        trio = sys.modules["trio"]  # running: imported (an import statement costs per call)
        try:
            if deadline == math.inf:
                await trio.lowlevel.wait_readable(self.sock)
                return True
            with trio.move_on_at(deadline) as scope:
                await trio.lowlevel.wait_readable(self.sock)
            return not scope.cancelled_caught
        except trio.ClosedResourceError:
            raise anyio.ClosedResourceError from None

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
                    await self._readable(math.inf)
            if not self._read_some():
                await self._readable(math.inf)

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
        total = 0
        view = memoryview(chunk)
        tls = self._tls
        # SSLObject.read's C method: no Python wrapper frame per record (~16 KB each)
        read = cast("Callable[[int, memoryview], int]", getattr(tls, "_sslobj", tls).read)
        while total < size:
            try:
                n = read(size - total, view[total:])
            except ssl.SSLWantReadError:
                if total or not self._pull():
                    break
                continue
            except ssl.SSLZeroReturnError:
                if total:
                    break
                raise ConnectionLostError(f"HiSLIP {self.name} channel: TLS closed") from None
            except ssl.SSLError as exc:
                if total:
                    break
                raise ConnectionLostError(f"HiSLIP {self.name} channel: TLS: {exc}") from exc
            if n == 0:
                if total:
                    break
                raise ConnectionLostError(f"HiSLIP {self.name} channel closed by the peer")
            total += n
        return total or None

    def _pull(self) -> bool:
        """Move what the socket holds into the TLS input; False if nothing was there."""
        buffer = self._pulled
        if buffer is None:
            buffer = self._pulled = bytearray(_TLS_PULL)
        try:
            n = self.sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
        if not n:
            self._incoming.write_eof()
        else:
            with memoryview(buffer) as view:
                self._incoming.write(view[:n])
        return True

    def send_now(self, buffers: Sequence[BytesLike]) -> bool:
        """Send ``buffers`` if the socket takes them whole now (True). Otherwise False:
        nothing went out, or part did and the rest is in :attr:`tail` for :meth:`flush`
        (the caller's buffers, not copied: flush before they change). Plaintext only,
        with nothing unsent; else False at once."""
        if self._tls is not None or self.tail or self._cipher or len(buffers) > _MAX_IOV:
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
        if self._tls is not None:
            await self._flush_tls(deadline)
            return
        views = self.tail
        try:
            while views:
                self.sent += self._send_some(views)
                if views:
                    await self._writable(deadline)
        except BaseException:
            self.tail = [memoryview(bytes(v)) for v in views]  # the caller's may change later
            raise

    async def _flush_tls(self, deadline: float) -> None:
        """Encrypt the plaintext tail step by step and send the ciphertext, in order.

        While the socket is full, the next steps are encrypted ahead (up to
        ``_TLS_AHEAD`` bytes queued), so encryption overlaps the peer's reading."""
        tls, views, cipher = self._tls, self.tail, self._cipher
        assert tls is not None
        try:
            while views or cipher:
                if views and (not cipher or sum(map(len, cipher)) < _TLS_AHEAD):
                    budget = _TLS_CHUNK
                    while views and budget > 0:
                        first = views[0]
                        piece = first[:budget]
                        tls.write(piece)
                        budget -= len(piece)
                        self.sent += len(piece)
                        if len(piece) == len(first):
                            del views[0]
                        else:
                            views[0] = first[len(piece) :]
                    self._drain_outgoing()
                    self._send_some(cipher)  # what the socket takes now, without waiting
                    continue
                self._send_some(cipher)
                if cipher:
                    await self._writable(deadline)
        except BaseException:
            self.tail = [memoryview(bytes(v)) for v in views]
            raise

    def _drain_outgoing(self) -> None:
        if self._outgoing.pending:
            self._cipher.append(memoryview(self._outgoing.read()))

    async def _send_cipher(self, deadline: float) -> None:
        """Send queued ciphertext; wait for the socket (``WriteTimeout`` at ``deadline``)."""
        cipher = self._cipher
        while cipher:
            self._send_some(cipher)
            if cipher:
                await self._writable(deadline)

    def _send_some(self, views: list[BytesLike]) -> int:
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

    async def _writable(self, deadline: float) -> None:
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
        if early:
            self._incoming.write(early)
        self._callback_reads = False  # the handshake's bytes go to TLS, not to _chunk
        tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        with anyio.CancelScope(deadline=deadline) as scope:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._drain_outgoing()
                    await self._send_cipher(deadline)
                    if not self._pull():
                        await self._readable(math.inf)
                except ssl.SSLCertVerificationError as exc:
                    await self._flush_alert()
                    raise AuthenticationError(
                        f"HiSLIP {self.name} channel: certificate check failed: "
                        f"{exc.verify_message or exc}"
                    ) from exc
                except ssl.SSLError as exc:
                    await self._flush_alert()
                    raise AuthenticationError(
                        f"HiSLIP {self.name} channel: TLS handshake failed: {exc}"
                    ) from exc
            self._drain_outgoing()
            await self._send_cipher(deadline)
        if scope.cancelled_caught:
            raise ConnectTimeout(f"HiSLIP {self.name} channel: TLS handshake timed out")
        self._tls = tls
        return tls

    async def end_tls(self, *, deadline: float = math.inf) -> None:
        """Leave TLS (EndTLS): send our close_notify, wait for the peer's, and go on in
        plaintext; bytes that followed the peer's close_notify are plaintext already.
        Only between messages, and with nobody else reading this channel."""
        tls = self._tls
        if tls is None:
            return
        if self.unsent:
            await self.flush(deadline)
        with anyio.CancelScope(deadline=deadline) as scope:
            while True:
                try:
                    tls.unwrap()
                    break
                except ssl.SSLWantReadError:
                    self._drain_outgoing()
                    await self._send_cipher(deadline)
                    if not self._pull():
                        await self._readable(math.inf)
                except ssl.SSLError as exc:
                    raise ConnectionLostError(
                        f"HiSLIP {self.name} channel: ending TLS failed: {exc}"
                    ) from exc
            self._drain_outgoing()
            await self._send_cipher(deadline)
        if scope.cancelled_caught:
            raise WriteTimeout(f"HiSLIP {self.name} channel: the peer did not end TLS in time")
        self._tls = None
        self._callback_reads = True
        rest = self._incoming.read()
        if rest:
            self.reader.feed(rest)

    async def _flush_alert(self) -> None:
        """Best effort: tell the peer why the handshake ended."""
        self._drain_outgoing()
        with anyio.move_on_after(0.5):
            try:
                await self._send_cipher(math.inf)
            except (ConnectionLostError, WriteTimeout):
                pass

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            self._unregister()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = math.inf
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_exception(anyio.ClosedResourceError())
            receiver, self._trio_receiver = self._trio_receiver, None
            if receiver is not None:
                try:
                    receiver.close()  # stops its watchdog, wakes a waiter
                except Exception:  # outside the trio run
                    pass
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
