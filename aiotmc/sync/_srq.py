"""Service requests for blocking code: a loop task forwards a subscription into a
thread-safe queue that the caller iterates (``for srq in events:``) or polls with a timeout."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager
from typing import Final

from anyio.streams.memory import MemoryObjectReceiveStream

from .._exceptions import ReadTimeout
from .._types import ServiceRequest
from ._portal import Portal

__all__ = ["ServiceRequests"]

_END: Final = object()


class ServiceRequests:
    """A subscription to an instrument's service requests, read from blocking code.

    Iterating blocks until the next request and ends when the subscription ends (the
    instrument closed). Requests that arrive while ``buffer`` of them wait unread are
    dropped for this subscriber only, as with the async ``service_requests()``.
    """

    def __init__(
        self,
        portal: Portal,
        subscribe: AbstractAsyncContextManager[MemoryObjectReceiveStream[ServiceRequest]],
        buffer: int,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=buffer + 1)  # +1: the end mark
        self._buffer = buffer
        self._subscribed: Future[None] = Future()
        self._closed = False
        self._forwarding = portal.background(self._forward(subscribe))
        try:
            self._subscribed.result()
        except KeyboardInterrupt:
            self.close()
            raise

    async def _forward(
        self,
        subscribe: AbstractAsyncContextManager[MemoryObjectReceiveStream[ServiceRequest]],
    ) -> None:
        try:
            async with subscribe as events:
                self._subscribed.set_result(None)
                async for event in events:
                    if self._queue.qsize() < self._buffer:
                        self._queue.put_nowait(event)
        except Exception as exc:
            if not self._subscribed.done():
                self._subscribed.set_exception(exc)
            raise
        finally:
            if not self._subscribed.done():
                self._subscribed.cancel()
            self._queue.put_nowait(_END)

    def get(self, timeout: float | None = None) -> ServiceRequest:
        """The next service request; :class:`~aiotmc.ReadTimeout` after ``timeout`` seconds,
        ``EOFError`` once the subscription has ended."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise ReadTimeout(f"no service request within {timeout} s") from None
        if item is _END:
            self._queue.put_nowait(_END)  # stays ended
            raise EOFError("the service-request subscription has ended")
        assert isinstance(item, ServiceRequest)
        return item

    def __iter__(self) -> Iterator[ServiceRequest]:
        while True:
            try:
                yield self.get()
            except EOFError:
                return

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._forwarding.cancel_and_wait()

    def __enter__(self) -> ServiceRequests:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
