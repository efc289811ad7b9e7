"""The TLS layer of a HiSLIP channel (HiSLIP 2.0 StartTLS and EndTLS): the standard
library's sans-IO TLS (``ssl.SSLObject`` over two ``MemoryBIO``, what
``anyio.streams.tls`` is built on) between the channel's socket and its framing.

The channel's cancellation rules hold encrypted: plaintext is encrypted as it is
committed to the wire (:attr:`Wire.sent`), and the ciphertext of an interrupted send
stays queued (:attr:`TlsLayer.cipher`), in order, until the channel flushes it.
Imports nothing of the channel: it reaches the socket through :class:`Wire`.
"""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, cast

import anyio

from .._exceptions import AuthenticationError, ConnectionLostError, ConnectTimeout, WriteTimeout
from .._types import BytesLike

__all__ = ["TlsLayer", "Wire"]

_TLS_CHUNK: Final = 256 * 1024  # plaintext encrypted per step
_TLS_AHEAD: Final = 1024 * 1024  # ciphertext queued ahead while the socket is full, at most
_TLS_PULL: Final = 256 * 1024  # ciphertext read per recv


class Wire(Protocol):
    """What the TLS layer uses of the channel it sits in."""

    sock: socket.socket
    name: str
    sent: int  #: plaintext bytes committed to the wire

    def send_some(self, views: list[BytesLike]) -> int:
        """Send what the socket takes now, dropped from the front of ``views``."""
        ...

    def wait_writable(self, deadline: float) -> Awaitable[None]:
        """Until the socket takes more (``WriteTimeout`` at ``deadline``)."""
        ...

    def wait_readable(self, deadline: float) -> Awaitable[bool]:
        """Until the socket is readable (outside any message: reads nothing)."""
        ...


class TlsLayer:
    """One connection's TLS, from the start of StartTLS to the end of EndTLS."""

    __slots__ = ("_incoming", "_outgoing", "_pulled", "_wire", "cipher", "session")

    def __init__(self, wire: Wire, early: bytes) -> None:
        """``early``: bytes already received that belong to the handshake."""
        self._wire = wire
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if early:
            self._incoming.write(early)
        self.cipher: list[BytesLike] = []  #: encrypted bytes not yet sent
        self._pulled: bytearray | None = None  #: ciphertext from the socket (reused)
        self.session: ssl.SSLObject | None = None  #: once the handshake succeeded

    def readable_now(self) -> bool:
        """True if ciphertext or plaintext waits here, past the socket."""
        if self._incoming.pending:
            return True
        return self.session is not None and self.session.pending() > 0

    # -- receiving -------------------------------------------------------------------------

    def read_into(self, chunk: bytearray | memoryview, size: int) -> int | None:
        """Plaintext read into ``chunk`` now, up to ``size`` bytes (>0), or None if none
        is ready (what the socket holds is pulled in as needed)."""
        tls = self.session
        assert tls is not None
        name = self._wire.name
        total = 0
        view = memoryview(chunk)
        # SSLObject.read's C method: no Python wrapper frame per record (~16 KB each)
        read = cast("Callable[[int, memoryview], int]", getattr(tls, "_sslobj", tls).read)
        while total < size:
            try:
                n = read(size - total, view[total:])
            except ssl.SSLWantReadError:
                if total or not self.pull():
                    break
                continue
            except ssl.SSLZeroReturnError:
                if total:
                    break
                raise ConnectionLostError(f"HiSLIP {name} channel: TLS closed") from None
            except ssl.SSLError as exc:
                if total:
                    break
                raise ConnectionLostError(f"HiSLIP {name} channel: TLS: {exc}") from exc
            if n == 0:
                if total:
                    break
                raise ConnectionLostError(f"HiSLIP {name} channel closed by the peer")
            total += n
        return total or None

    def pull(self) -> bool:
        """Move what the socket holds into the TLS input; False if nothing was there."""
        buffer = self._pulled
        if buffer is None:
            buffer = self._pulled = bytearray(_TLS_PULL)
        try:
            n = self._wire.sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise ConnectionLostError(f"HiSLIP {self._wire.name} channel: {exc}") from exc
        if not n:
            self._incoming.write_eof()
        else:
            with memoryview(buffer) as view:
                self._incoming.write(view[:n])
        return True

    # -- sending ---------------------------------------------------------------------------

    async def send(self, views: list[BytesLike], deadline: float) -> None:
        """Encrypt the plaintext ``views`` step by step (taken from its front as they
        are committed) and send the ciphertext, in order; ``WriteTimeout`` at
        ``deadline``.

        While the socket is full, the next steps are encrypted ahead (up to
        ``_TLS_AHEAD`` bytes queued), so encryption overlaps the peer's reading."""
        tls, cipher, wire = self.session, self.cipher, self._wire
        assert tls is not None
        while views or cipher:
            if views and (not cipher or sum(map(len, cipher)) < _TLS_AHEAD):
                budget = _TLS_CHUNK
                while views and budget > 0:
                    first = views[0]
                    piece = first[:budget]
                    tls.write(piece)
                    budget -= len(piece)
                    wire.sent += len(piece)
                    if len(piece) == len(first):
                        del views[0]
                    else:
                        views[0] = first[len(piece) :]
                self._drain_outgoing()
                wire.send_some(cipher)  # what the socket takes now, without waiting
                continue
            wire.send_some(cipher)
            if cipher:
                await wire.wait_writable(deadline)

    def _drain_outgoing(self) -> None:
        if self._outgoing.pending:
            self.cipher.append(memoryview(self._outgoing.read()))

    async def _send_cipher(self, deadline: float) -> None:
        """Send queued ciphertext; wait for the socket (``WriteTimeout`` at ``deadline``)."""
        cipher, wire = self.cipher, self._wire
        while cipher:
            wire.send_some(cipher)
            if cipher:
                await wire.wait_writable(deadline)

    # -- starting and ending ---------------------------------------------------------------

    async def handshake(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None,
        deadline: float,
    ) -> ssl.SSLObject:
        """StartTLS's handshake, within ``deadline`` (:class:`ConnectTimeout`); a failed
        one is :class:`AuthenticationError` (the connection is unusable after it)."""
        name = self._wire.name
        tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                await self._complete(tls.do_handshake, deadline)
            except ssl.SSLCertVerificationError as exc:
                await self._flush_alert()
                raise AuthenticationError(
                    f"HiSLIP {name} channel: certificate check failed: {exc.verify_message or exc}"
                ) from exc
            except ssl.SSLError as exc:
                await self._flush_alert()
                raise AuthenticationError(
                    f"HiSLIP {name} channel: TLS handshake failed: {exc}"
                ) from exc
        if scope.cancelled_caught:
            raise ConnectTimeout(f"HiSLIP {name} channel: TLS handshake timed out")
        self.session = tls
        return tls

    async def unwrap(self, deadline: float) -> bytes:
        """EndTLS: send our close_notify and wait for the peer's, within ``deadline``
        (:class:`WriteTimeout`); the bytes that followed the peer's (plaintext)."""
        tls = self.session
        assert tls is not None
        name = self._wire.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                await self._complete(tls.unwrap, deadline)
            except ssl.SSLError as exc:
                raise ConnectionLostError(
                    f"HiSLIP {name} channel: ending TLS failed: {exc}"
                ) from exc
        if scope.cancelled_caught:
            raise WriteTimeout(f"HiSLIP {name} channel: the peer did not end TLS in time")
        return self._incoming.read()

    async def _complete(self, step: Callable[[], object], deadline: float) -> None:
        """Call ``step`` (``do_handshake``, ``unwrap``) until it stops asking for the peer's
        bytes, moving ciphertext both ways meanwhile, then send what it left (the caller
        keeps the deadline's scope; ``ssl.SSLError`` from ``step`` propagates)."""
        while True:
            try:
                step()
                break
            except ssl.SSLWantReadError:
                self._drain_outgoing()
                await self._send_cipher(deadline)
                if not self.pull():
                    await self._wire.wait_readable(math.inf)
        self._drain_outgoing()
        await self._send_cipher(deadline)

    async def _flush_alert(self) -> None:
        """Best effort: tell the peer why the handshake ended."""
        self._drain_outgoing()
        with anyio.move_on_after(0.5):
            try:
                await self._send_cipher(math.inf)
            except (ConnectionLostError, WriteTimeout):
                pass
