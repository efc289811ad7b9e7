"""Socket readiness waits that cost as little as possible per wait.

On asyncio, ``anyio.wait_readable`` registers the fd with the selector, builds a future and
a cancel scope, and unregisters again: two ``epoll_ctl`` calls and ~15 us of Python per
wait, which is most of a loopback query round trip. :class:`AsyncioReadable` keeps the
socket registered while it is being waited on repeatedly and implements the deadline with
one ``loop.call_at`` timer. On trio (or an asyncio loop without ``add_reader``, such as
Windows' proactor) the anyio path is used.
"""

from __future__ import annotations

import asyncio
import math
import socket

import anyio

__all__ = ["AnyioReadable", "AsyncioReadable", "readable_waiter"]


class AnyioReadable:
    """Portable readiness wait: ``anyio.wait_readable`` with a cancel scope per deadline."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def wait(self, deadline: float) -> bool:
        """Wait until readable; False if ``deadline`` (anyio clock) passed first."""
        if deadline == math.inf:
            await anyio.wait_readable(self._sock)
            return True
        with anyio.CancelScope(deadline=deadline) as scope:
            await anyio.wait_readable(self._sock)
        return not scope.cancelled_caught

    def close(self) -> None:
        """Tell waiters the socket is about to close."""
        try:
            anyio.notify_closing(self._sock)
        except Exception:
            pass


class AsyncioReadable:
    """Readiness wait on an asyncio loop, the fd kept registered between waits.

    The reader callback resolves the pending waiter; when it fires with no waiter (data
    arrived while nobody waited) it unregisters, so a readable socket never spins the loop.
    """

    __slots__ = ("_fd", "_loop", "_registered", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._fd = sock.fileno()
        self._waiter: asyncio.Future[bool] | None = None
        self._registered = False

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._loop.remove_reader(self._fd)
            self._registered = False
        elif not waiter.done():
            waiter.set_result(True)

    @staticmethod
    def _expire(waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(False)

    async def wait(self, deadline: float) -> bool:
        """Wait until readable; False if ``deadline`` (the loop's clock) passed first.

        Cancellation of the awaiting task cancels the future and propagates as usual.
        """
        loop = self._loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        if not self._registered:
            loop.add_reader(self._fd, self._on_readable)
            self._registered = True
        timer = None if deadline == math.inf else loop.call_at(deadline, self._expire, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        """Unregister before the socket closes."""
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(anyio.ClosedResourceError())


def readable_waiter(sock: socket.socket) -> AsyncioReadable | AnyioReadable:
    """The cheapest readiness waiter for the running event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio (or another anyio backend)
        return AnyioReadable(sock)
    try:
        loop.remove_reader(sock.fileno())  # probes add/remove_reader support
    except NotImplementedError:  # e.g. the proactor loop on Windows
        return AnyioReadable(sock)
    return AsyncioReadable(loop, sock)
