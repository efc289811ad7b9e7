"""Service-request fan-out: one producer (a transport's listener), many subscribers.

The producer calls :meth:`SrqBroadcaster.publish` from the event-loop thread; it never
blocks: a subscriber whose buffer is full misses that event (counted in ``dropped``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._types import ServiceRequest, StatusByte

__all__ = ["SrqBroadcaster"]


class SrqBroadcaster:
    """Fans service requests out to every subscriber's memory stream."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self._subscribers: set[MemoryObjectSendStream[ServiceRequest]] = set()
        self.published = 0  #: events published so far
        self.dropped = 0  #: deliveries skipped because a subscriber's buffer was full
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    def publish(self, status: int, *, monotonic: float | None = None) -> ServiceRequest:
        """Stamp ``status`` and deliver it to every subscriber without blocking."""
        event = ServiceRequest(
            status=StatusByte(status & 0xFF),
            monotonic=time.monotonic() if monotonic is None else monotonic,
            wall=time.time(),
            source=self.source,
        )
        self.published += 1
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(stream)
        return event

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int = 64
    ) -> AsyncIterator[MemoryObjectReceiveStream[ServiceRequest]]:
        """Yield a receive stream that gets every service request published from now on."""
        send, receive = anyio.create_memory_object_stream[ServiceRequest](buffer)
        if self._closed:
            send.close()
        else:
            self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def close(self) -> None:
        """End every subscription (their ``async for`` loops finish)."""
        self._closed = True
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()
