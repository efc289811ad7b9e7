"""One HiSLIP connection on a non-blocking socket: whole messages in, whole messages out.

Receiving is cancellation-safe: bytes read are kept in the :class:`Reassembler` until a
message is whole. Sending tracks exactly what went out: a send interrupted part-way keeps
the unsent rest in :attr:`Channel.tail`, which :meth:`Channel.flush` must send before
anything else (the peer's framing depends on it). Used by the client and the simulator.
"""

from __future__ import annotations

import math
import select
import socket
from collections.abc import Sequence
from typing import Final

import anyio

from ._exceptions import ConnectionLostError, WriteTimeout
from ._types import BytesLike
from .protocol.hislip import Message, Reassembler

__all__ = ["Channel"]

_RECV_SIZE: Final = 256 * 1024
_MAX_IOV: Final = 512


class Channel:
    """A socket with a reassembler; not for concurrent senders (callers serialize)."""

    __slots__ = ("_chunk", "closed", "name", "reader", "sent", "sock", "tail")

    def __init__(self, sock: socket.socket, *, max_payload: int, name: str = "") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.reader = Reassembler(max_payload)
        self._chunk = bytearray(_RECV_SIZE)
        self.tail: list[BytesLike] = []  #: unsent rest of an interrupted message
        self.sent = 0  #: bytes sent so far (tells whether an interrupted send began)
        self.closed = False

    def ready(self) -> Message | None:
        """A message already received whole, without waiting."""
        return self.reader.next_message()

    def readable_now(self) -> bool:
        """True if bytes wait in the socket or a message is whole in the buffer."""
        if self.reader.buffered:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def receive_nowait(self) -> Message | None:
        """A whole message from what is buffered or readable now, else None (no waiting)."""
        message = self.reader.next_message()
        if message is not None:
            return message
        try:
            n = self.sock.recv_into(self._chunk, min(_RECV_SIZE, max(self.reader.wants(), 4096)))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
        if n == 0:
            raise ConnectionLostError(f"HiSLIP {self.name} channel closed by the peer")
        self.reader.feed(memoryview(self._chunk)[:n])
        return self.reader.next_message()

    async def receive(self) -> Message:
        """The next whole message (raises ConnectionLostError at EOF)."""
        chunk = self._chunk
        while True:
            message = self.reader.next_message()
            if message is not None:
                return message
            try:
                n = self.sock.recv_into(chunk, min(len(chunk), max(self.reader.wants(), 4096)))
            except (BlockingIOError, InterruptedError):
                await anyio.wait_readable(self.sock)
                continue
            except OSError as exc:
                raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
            if n == 0:
                raise ConnectionLostError(f"HiSLIP {self.name} channel closed by the peer")
            self.reader.feed(memoryview(chunk)[:n])

    async def send(self, buffers: Sequence[BytesLike], deadline: float = math.inf) -> None:
        """Send ``buffers`` in order; :class:`WriteTimeout` at ``deadline``. Interrupted
        (timeout, cancellation), the unsent rest stays in :attr:`tail` (copied)."""
        if self.tail:
            raise RuntimeError("flush() the interrupted message first")
        self.tail = [memoryview(b).cast("B") for b in buffers if len(b)]
        await self.flush(deadline)

    async def flush(self, deadline: float = math.inf) -> None:
        """Send what an interrupted :meth:`send` left in :attr:`tail`."""
        views = self.tail
        try:
            while views:
                try:
                    n = self.sock.sendmsg(views[:_MAX_IOV])
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError as exc:
                    raise ConnectionLostError(f"HiSLIP {self.name} channel: {exc}") from exc
                self.sent += n
                while n:
                    first = views[0]
                    if n >= len(first):
                        n -= len(first)
                        del views[0]
                    else:
                        views[0] = first[n:]
                        n = 0
                if views:
                    with anyio.CancelScope(deadline=deadline) as scope:
                        await anyio.wait_writable(self.sock)
                    if scope.cancelled_caught:
                        raise WriteTimeout(f"HiSLIP {self.name} channel: send timed out")
        except BaseException:
            self.tail = [bytes(v) for v in views]  # the caller's buffers may change later
            raise

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            try:
                anyio.notify_closing(self.sock)  # wake a task waiting on it
            except Exception:  # outside the event loop, or not waited on
                pass
            try:
                self.sock.close()
            except OSError:
                pass
