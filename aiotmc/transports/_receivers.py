"""``recv_into`` on a non-blocking socket with a deadline, as cheaply as each loop allows.

A loopback ``*IDN?`` round trip is ~25 us with a blocking socket; everything an event loop
does per wait lands on top of that, so the wait is where a fast client is won or lost.
Every receiver first tries ``recv_into`` (data already there: no wait at all); only when
the socket is empty does it wait, and then:

* :class:`AsyncioReceiver` (asyncio, uvloop): the fd stays registered with the loop while
  it is waited on, and the reader callback itself does the ``recv_into`` into the waiting
  caller's buffer, as asyncio's own ``BufferedProtocol`` transports do. A level-triggered
  event that is already stale when it runs (the bytes were taken by an earlier call) then
  costs one failed ``recv`` instead of a task wake-up. Deadlines use one lazily re-armed
  loop timer per socket instead of a timer per wait.
* :class:`TrioReceiver` (trio): ``trio.lowlevel.wait_readable`` with no cancel scope per
  wait; deadlines are kept by one lazily re-armed watchdog task per socket.
* :class:`AnyioReceiver`: the portable fallback (e.g. Windows' proactor loop).

A deadline that passes raises :class:`TimeoutError`; ``recv_into`` errors propagate as
:class:`OSError`. Cancellation propagates as usual; bytes received for a wait that was
cancelled after they arrived are lost, so callers must treat a cancelled receive as
leaving the connection out of step (the TCP transport then reconnects).
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Protocol

import anyio

from .._fastpath import running_trio

__all__ = ["AnyioReceiver", "AsyncioReceiver", "Receiver", "TrioReceiver", "receiver_for"]


class Receiver(Protocol):
    """What the TCP transport needs from a receiver."""

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """Receive into ``view``: bytes received (0 at EOF); TimeoutError at ``deadline``.

        ``try_first=False`` skips the first ``recv`` attempt when the caller knows the
        socket was just found empty or the answer cannot be there yet.
        """
        ...

    def close(self) -> None:
        """Release the loop's resources before the socket closes (wakes a waiter)."""
        ...


class AnyioReceiver:
    """Portable: ``anyio.wait_readable`` in a cancel scope per wait."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """See :class:`Receiver`."""
        sock = self._sock
        while True:
            if try_first:
                try:
                    return sock.recv_into(view)
                except BlockingIOError:
                    pass
            try_first = True
            if deadline == math.inf:
                await anyio.wait_readable(sock)
                continue
            with anyio.CancelScope(deadline=deadline) as scope:
                await anyio.wait_readable(sock)
            if scope.cancelled_caught:
                raise TimeoutError

    def close(self) -> None:
        """Wake a waiter with ClosedResourceError."""
        try:
            anyio.notify_closing(self._sock)
        except Exception:
            pass


class TrioReceiver:
    """``trio.lowlevel.wait_readable`` with deadlines kept by one watchdog task per socket.

    A trio cancel scope per wait costs about as much as the rest of a loopback round trip,
    so waits carry no scope: a system task sleeps until the earliest deadline it was
    given and is only moved when a wait needs an *earlier* one (a later deadline is picked
    up when the earlier one passes). When the deadline of the wait in progress has passed,
    it wakes the waiter with ``notify_closing``: a timed-out wait leaves the socket out of
    step anyway, and the caller must close it (the TCP transport does).
    """

    __slots__ = (
        "_closed",
        "_deadline",
        "_expired",
        "_scope",
        "_sock",
        "_trio",
        "_wait",
        "_waiting",
    )

    def __init__(self, sock: socket.socket) -> None:
        import trio

        self._trio = trio
        self._sock = sock
        self._deadline = math.inf  # of the wait in progress
        self._waiting = 0  # number of the wait in progress (0: none)
        self._wait = 0  # waits so far
        self._expired = 0  # number of the last wait the watchdog woke up
        self._closed = False
        self._scope = trio.CancelScope()  # the watchdog's sleep; its deadline is the alarm
        trio.lowlevel.spawn_system_task(self._watchdog, name=f"aiotmc watchdog fd {sock.fileno()}")

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """See :class:`Receiver`."""
        sock = self._sock
        if try_first:
            try:
                return sock.recv_into(view)
            except BlockingIOError:
                pass
        while True:
            self._deadline = deadline
            if deadline < self._scope.deadline:
                self._scope.deadline = deadline
            self._wait = number = self._wait + 1
            self._waiting = number
            try:
                await self._trio.lowlevel.wait_readable(sock)
            except self._trio.ClosedResourceError:
                if self._expired == number:
                    raise TimeoutError from None
                raise anyio.ClosedResourceError from None
            except self._trio.BusyResourceError:
                raise anyio.BusyResourceError("reading from") from None
            finally:
                self._waiting = 0
            try:
                return sock.recv_into(view)
            except BlockingIOError:
                pass

    async def _watchdog(self) -> None:
        trio = self._trio
        try:
            while not self._closed:
                with self._scope:
                    await trio.sleep_forever()
                if self._closed:
                    return
                self._scope = trio.CancelScope()
                if not self._waiting:
                    continue  # the next wait arms its own deadline
                if self._deadline <= trio.current_time():
                    # Wakes the waiter (if it was not woken by data in the same instant).
                    self._expired = self._waiting
                    trio.lowlevel.notify_closing(self._sock)
                else:
                    self._scope.deadline = self._deadline
        except trio.Cancelled:  # the run is ending
            return

    def close(self) -> None:
        """Stop the watchdog; a waiter gets ``anyio.ClosedResourceError``."""
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        try:
            self._trio.lowlevel.notify_closing(self._sock)
        except Exception:
            pass


class AsyncioReceiver:
    """Reader callback does the ``recv_into``; the fd stays registered between waits.

    When the callback runs with nobody waiting (data arrived in between), it unregisters,
    so a readable socket nobody reads never spins the loop; the next wait registers again.
    """

    __slots__ = (
        "_deadline",
        "_fd",
        "_loop",
        "_registered",
        "_sock",
        "_timer",
        "_timer_at",
        "_view",
        "_waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._registered = False
        self._waiter: asyncio.Future[int] | None = None
        self._view: memoryview | None = None
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """See :class:`Receiver`."""
        if try_first:
            try:
                return self._sock.recv_into(view)
            except BlockingIOError:
                pass
        loop = self._loop
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiter = waiter
        self._view = view
        self._deadline = deadline
        if not self._registered:
            loop.add_reader(self._fd, self._on_readable)
            self._registered = True
        if deadline < self._timer_at:
            self._arm(deadline)
        try:
            return await waiter
        finally:
            self._waiter = None
            self._view = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._loop.remove_reader(self._fd)
            self._registered = False
            return
        if waiter.done():  # cancelled, or timed out: leave the bytes in the socket
            return
        assert self._view is not None
        try:
            n = self._sock.recv_into(self._view)
        except BlockingIOError:  # stale readiness: keep waiting
            return
        except OSError as exc:
            waiter.set_exception(exc)
            return
        waiter.set_result(n)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer, when)
        self._timer_at = when

    def _on_timer(self, when: float) -> None:
        """The timer is re-armed lazily: waits whose deadline is later only move it on."""
        self._timer = None
        self._timer_at = math.inf
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._deadline <= when:
            waiter.set_exception(TimeoutError())
        else:
            self._arm(self._deadline)

    def close(self) -> None:
        """Unregister and cancel the timer; a waiter gets ``anyio.ClosedResourceError``."""
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(anyio.ClosedResourceError())


def receiver_for(sock: socket.socket) -> Receiver:
    """The cheapest receiver for the event loop running now."""
    if running_trio() is not None:
        return TrioReceiver(sock)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # neither asyncio nor trio
        return AnyioReceiver(sock)
    try:
        loop.remove_reader(sock.fileno())  # probes add/remove_reader support
    except NotImplementedError:  # e.g. the proactor loop on Windows
        return AnyioReceiver(sock)
    return AsyncioReceiver(loop, sock)
