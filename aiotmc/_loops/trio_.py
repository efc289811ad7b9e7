"""trio specifics, in one place (see :mod:`aiotmc._loops`).

* :class:`TrioReceiver`: ``wait_readable`` with deadlines kept by a watchdog task (the
  TCP transport's waits); :class:`BoundaryWaiter`: the HiSLIP channel's wait, on it;
* :func:`checkpoint_if_cancelled` and :func:`current_time`: trio's own, cheaper than
  anyio's dispatch;
* :func:`wait_turn` / :func:`give_turn`: the exchange lock's hand-over, a parked task;
* :func:`reentry` / :func:`spawner`: thread-safe "run soon" and system tasks for the
  libusb drivers.

Imports the standard library, anyio and trio only; imported only once trio is running.
"""

from __future__ import annotations

import logging
import math
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, cast

import anyio
import trio

__all__ = [
    "BoundaryWaiter",
    "ReadableWaiter",
    "TrioReceiver",
    "checkpoint_if_cancelled",
    "current_time",
    "give_turn",
    "reentry",
    "spawner",
    "wait_turn",
]

logger = logging.getLogger("aiotmc._loops")


async def checkpoint_if_cancelled() -> None:
    """trio's own check (RuntimeError outside a trio run)."""
    await trio.lowlevel.checkpoint_if_cancelled()


def current_time() -> float:
    """trio's clock (RuntimeError outside a trio run)."""
    return trio.current_time()


# -- the simulators' readiness wait ------------------------------------------------------


async def _wait_readable(sock: socket.socket) -> None:
    if sock.fileno() < 0:
        raise anyio.ClosedResourceError
    try:
        await trio.lowlevel.wait_readable(sock)
    except trio.ClosedResourceError:
        raise anyio.ClosedResourceError from None
    except trio.BusyResourceError:
        raise anyio.BusyResourceError("reading from") from None


class ReadableWaiter:
    """``wait(sock)``: trio's own readiness wait, with anyio's exceptions (see the asyncio
    one); trio keeps its registrations itself, so nothing stays here between waits."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __call__(self, sock: socket.socket) -> Coroutine[Any, Any, None]:
        return _wait_readable(sock)

    def close(self) -> None:
        """A wait in progress raises ``anyio.ClosedResourceError`` (idempotent)."""
        if self._sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self._sock)


# -- the exchange lock's hand-over -------------------------------------------------------


async def wait_turn(line: deque[object]) -> None:
    """Queue the current task at the end of ``line`` and sleep until :func:`give_turn`.

    A task cancelled while queued leaves the line; once its turn is given it is no longer
    cancellable here (trio delivers the cancellation at its next checkpoint), so the turn
    is never lost.
    """
    task = trio.lowlevel.current_task()
    line.append(task)

    def abort(_: object) -> trio.lowlevel.Abort:
        line.remove(task)  # still queued: a task given its turn is not asleep any more
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


def give_turn(waiter: object) -> bool:
    """Wake ``waiter`` (a task asleep in :func:`wait_turn`); always True."""
    trio.lowlevel.reschedule(cast("trio.lowlevel.Task", waiter))
    return True


# -- libusb drivers: callbacks from other threads, system tasks --------------------------


def reentry() -> Callable[[Callable[[], object]], None]:
    """``TrioToken.run_sync_soon`` for the running trio run, callable from any thread,
    never blocking; calls made after the run finished are dropped."""
    token = trio.lowlevel.current_trio_token()

    def trio_reentry(fn: Callable[[], object]) -> None:
        try:
            token.run_sync_soon(fn)
        except trio.RunFinishedError:
            logger.debug("trio run finished; dropped %r", fn)

    return trio_reentry


def spawner() -> Callable[..., None]:
    """Start system tasks of the running trio run (their body always runs: a cancelled
    system task is cancelled at its first checkpoint, so ``finally`` blocks run)."""

    def spawn(
        fn: Callable[[], Coroutine[Any, Any, None]],
        name: str,
        *,
        context: Context | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        async def run() -> None:
            try:
                await fn()
            finally:
                if on_done is not None:
                    on_done()

        trio.lowlevel.spawn_system_task(run, name=name, context=context)

    return spawn


# -- the TCP transport's receiver --------------------------------------------------------


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
        "_wait",
        "_waiting",
    )

    def __init__(self, sock: socket.socket) -> None:
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
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                if self._expired == number:
                    raise TimeoutError from None
                raise anyio.ClosedResourceError from None
            except trio.BusyResourceError:
                raise anyio.BusyResourceError("reading from") from None
            finally:
                self._waiting = 0
            try:
                return sock.recv_into(view)
            except BlockingIOError:
                pass

    async def _watchdog(self) -> None:
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
            trio.lowlevel.notify_closing(self._sock)
        except Exception:
            pass


# -- the HiSLIP channel's wait -----------------------------------------------------------


class BoundaryWaiter:
    """``wait(deadline, receive)`` until one socket is readable: False if ``deadline``
    passed first (see :class:`aiotmc._loops.BoundaryWaiter`).

    With ``receive`` and a finite deadline: a :class:`TrioReceiver` wait, without a
    cancel scope (one costs ~7 us), the deadline kept by its watchdog, receiving into
    ``into`` (the count handed to ``hold``) with no checkpoint between the wait and the
    ``recv``, so nothing is lost. Else ``wait_readable``, under a scope only for a finite
    deadline (nothing is read).
    """

    __slots__ = ("_hold", "_into", "_receiver", "_sock")

    def __init__(self, sock: socket.socket, into: memoryview, hold: Callable[[int], None]) -> None:
        self._sock = sock
        self._into = into
        self._hold = hold
        self._receiver: TrioReceiver | None = None  # made at the first receiving wait

    def clock(self) -> float:
        """trio's clock."""
        return trio.current_time()

    async def wait(self, deadline: float, receive: bool) -> bool:
        if receive and deadline != math.inf:
            receiver = self._receiver
            if receiver is None:
                receiver = self._receiver = TrioReceiver(self._sock)
            try:
                self._hold(await receiver.recv_into(self._into, deadline, False))
            except TimeoutError:
                return False
            except OSError:
                pass  # the caller's own read reports it
            return True
        try:
            if deadline == math.inf:
                await trio.lowlevel.wait_readable(self._sock)
                return True
            with trio.move_on_at(deadline) as scope:
                await trio.lowlevel.wait_readable(self._sock)
            return not scope.cancelled_caught
        except trio.ClosedResourceError:
            raise anyio.ClosedResourceError from None

    def close(self) -> None:
        """Stop the receiver's watchdog and wake its waiter (idempotent)."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            try:
                receiver.close()
            except Exception:  # outside the trio run
                pass
