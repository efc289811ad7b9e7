"""Terminator framing over any non-blocking byte channel (serial fd, adapter socket).

:class:`FramedStream` sends messages and receives response messages (framed by the
terminator with :class:`~aiotmc.protocol.scpi.MessageDecoder`) and IEEE 488.2 blocks
(payload read by length, straight into the destination) over a :class:`ByteChannel`: a
non-blocking object whose reads and writes raise ``BlockingIOError`` when not ready and
whose waits are ``anyio.wait_readable``/``wait_writable``. The serial and the Prologix
transports build on it; the TCP transport has its own tuned copy of this logic.

Errors come out typed: :class:`~aiotmc.ReadTimeout` / :class:`~aiotmc.WriteTimeout` when
the deadline passes, :class:`~aiotmc.ConnectionLostError` when the channel fails or ends,
:class:`~aiotmc.RemoteProtocolError` for oversized or malformed answers. After any error,
:attr:`FramedStream.in_step` says whether the stream is at a message boundary (the caller
resynchronises otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import anyio

from .._buffers import byte_views, drop_sent
from .._exceptions import (
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    WriteTimeout,
)
from .._types import BytesLike
from ..protocol.framing import MessageDecoder
from ..protocol.ieee4882 import decode_block, find_block_header
from ._block_into import TRAILER_LIMIT, block_target, buffer_too_small, deliver_block

__all__ = ["ByteChannel", "FramedStream"]

_CHUNK: Final = 64 * 1024


class ByteChannel(Protocol):
    """A non-blocking byte pipe: ``read_into``/``write`` raise ``BlockingIOError`` when
    not ready; ``read_into`` returns 0 at end of stream; other ``OSError`` is a failure."""

    def read_into(self, view: memoryview) -> int:
        """Read what is there into ``view``."""
        ...

    def write(self, view: memoryview) -> int:
        """Write what the channel takes now; return the count."""
        ...

    async def wait_readable(self) -> None:
        """Wait until a read would not block."""
        ...

    async def wait_writable(self) -> None:
        """Wait until a write would not block."""
        ...


class FramedStream:
    """Messages and blocks over a :class:`ByteChannel` (see the module docstring)."""

    def __init__(self, channel: ByteChannel, *, terminator: bytes, resource: str) -> None:
        self.channel = channel
        self.resource = resource
        self.decoder = MessageDecoder(terminator=terminator)
        self._chunk = memoryview(bytearray(_CHUNK))
        self._desync = False
        #: what an interrupted :meth:`send` did not write (see there)
        self.unsent: list[bytes] = []

    @property
    def terminator(self) -> bytes:
        """The response terminator."""
        return self.decoder.terminator

    @property
    def in_step(self) -> bool:
        """True at a message boundary (nothing half-received)."""
        return self.decoder.at_message_start and not self._desync

    def set_terminator(self, terminator: bytes) -> None:
        """Frame later responses on ``terminator``; buffered bytes are kept."""
        pending = bytes(self.decoder.buffered)
        self.decoder = MessageDecoder(terminator=terminator)
        if pending:
            self.decoder.receive_data(pending)

    def reset(self) -> None:
        """Forget everything buffered."""
        self.decoder.reset()
        self._desync = False

    # -- sending ---------------------------------------------------------------------------

    async def send(self, parts: Sequence[BytesLike], deadline: float = math.inf) -> None:
        """Write ``parts`` back to back, waiting while the channel is full.

        If this stops part-way (cancelled, deadline), the bytes not yet written are kept
        (copied) in :attr:`unsent`, so that the caller can complete the message later.
        """
        channel = self.channel
        views = byte_views(parts)
        try:
            while views:
                try:
                    sent = channel.write(views[0])
                except BlockingIOError:
                    await self._wait(channel.wait_writable, deadline, write=True)
                    continue
                except OSError as exc:
                    raise self.lost("write failed", exc) from exc
                drop_sent(views, sent)
        except BaseException:
            self.unsent = [bytes(view) for view in views] + self.unsent
            raise

    # -- receiving -------------------------------------------------------------------------

    async def receive_message(self, max_size: int, deadline: float = math.inf) -> bytes:
        """One response message, terminator included; over ``max_size``: the message is
        consumed (however long) and :class:`~aiotmc.RemoteProtocolError` raised."""
        decoder = self.decoder
        while True:
            message = decoder.next_message()
            if isinstance(message, bytes):
                if len(message) > max_size:
                    raise _too_long(len(message), max_size)
                return message
            if decoder.pending > max_size:
                decoder.discard_current()
                while not decoder.at_message_start:
                    await self.fill(deadline)
                raise RemoteProtocolError(f"response exceeds max_size={max_size} bytes")
            await self.fill(deadline)

    async def fill(self, deadline: float = math.inf) -> None:
        """Receive at least one byte into the decoder."""
        n = await self.read_into(self._chunk, deadline)
        self.decoder.receive_data(self._chunk[:n])

    async def read_into(self, view: memoryview, deadline: float = math.inf) -> int:
        """Read at least one byte into ``view`` (ConnectionLostError at end of stream)."""
        channel = self.channel
        while True:
            try:
                n = channel.read_into(view)
            except BlockingIOError:
                await self._wait(channel.wait_readable, deadline, write=False)
                continue
            except OSError as exc:
                raise self.lost("read failed", exc) from exc
            if n == 0:
                pending = self.decoder.pending
                detail = f" after {pending} bytes of a response" if pending else ""
                raise ConnectionLostError(f"the line went dead{detail}", resource=self.resource)
            return n

    async def receive_block(
        self, into: memoryview | None, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """One message holding an IEEE 488.2 block; the payload goes straight to ``into``."""
        decoder = self.decoder
        while True:
            with decoder.buffered as buffered:
                try:
                    found = find_block_header(buffered, max_size=max_size)
                except RemoteProtocolError:
                    self._desync = True  # unknown extent: the message's end is lost
                    raise
            if found is None:
                head = await self._skip_message(max_size, deadline)
                raise RemoteProtocolError(f"expected an IEEE 488.2 block, got {head!r}")
            start, header = found
            if header is not None:
                break
            await self.fill(deadline)
        if header.payload_length is None:  # "#0...<terminator>"
            message = await self.receive_message(max_size + TRAILER_LIMIT, deadline)
            payload = decode_block(message, terminator=self.terminator, max_size=max_size)
            return deliver_block(payload, into)
        size = header.payload_length
        decoder.consume(start + header.header_length)
        target, too_small = block_target(into, size)
        have = min(decoder.pending, size)
        target[:have] = decoder.buffered[:have]
        decoder.consume(have)
        pos = have
        while pos < size:
            pos += await self.read_into(target[pos:], deadline)
        rest = await self._skip_message(TRAILER_LIMIT, deadline)
        if rest.strip():
            raise RemoteProtocolError(f"unexpected bytes after the block: {rest!r}")
        if too_small is not None:
            raise buffer_too_small(size, too_small)
        return target

    # -- helpers ---------------------------------------------------------------------------

    def lost(self, what: str, exc: OSError) -> ConnectionLostError:
        """The typed error for a failed read or write."""
        return ConnectionLostError(f"{what}: {exc}", resource=self.resource)

    async def _skip_message(self, limit: int, deadline: float) -> bytes:
        """Consume the current message (keeping at most ``limit`` bytes); its first 40."""
        head = bytes(self.decoder.buffered[:40])
        try:
            message = await self.receive_message(limit, deadline)
        except RemoteProtocolError:
            if not self.decoder.at_message_start:
                raise
            return head or b"?"
        return message[:40]

    async def _wait(
        self, wait: Callable[[], Awaitable[None]], deadline: float, *, write: bool
    ) -> None:
        if deadline == math.inf:
            await wait()
            return
        with anyio.CancelScope(deadline=deadline) as scope:
            await wait()
        if scope.cancelled_caught:
            if write:
                raise WriteTimeout(f"{self.resource}: could not send before the deadline")
            raise ReadTimeout(f"{self.resource}: no complete answer before the deadline")


def _too_long(size: int, max_size: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"response of {size} bytes exceeds max_size={max_size}")
