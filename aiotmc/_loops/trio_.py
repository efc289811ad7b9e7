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
from typing import TYPE_CHECKING, Any, cast

import anyio
import trio

if TYPE_CHECKING:
    from ._early import EarlyStart

__all__ = [
    "BoundaryWaiter",
    "ReadableWaiter",
    "TrioReceiver",
    "checkpoint_if_cancelled",
    "current_time",
    "epoll_manager",
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


async def wait_turn(
    line: deque[object], pass_on: Callable[[], None], early: EarlyStart | None = None
) -> object:
    """Queue the current task at the end of ``line`` and sleep until :func:`give_turn`
    (or, after ``early`` was started, until trio's I/O manager finds the answer readable:
    see :func:`aiotmc._loops.wait_turn` for the answer).

    A task cancelled while queued leaves the line; once its turn is given it is no longer
    cancellable here (trio delivers the cancellation at its next checkpoint), so the turn
    is never lost. One cancelled after ``early`` was started calls ``early.abandon()``,
    then ``pass_on``.
    """
    task = trio.lowlevel.current_task()
    entry: object = task
    if early is not None:
        early.waiter = task
        entry = early
    line.append(entry)

    def abort(_: object) -> trio.lowlevel.Abort:
        if early is not None and early.started:
            early.abandon()
            pass_on()
        else:
            line.remove(entry)  # still queued: a task given its turn is not asleep any more
        return trio.lowlevel.Abort.SUCCEEDED

    try:
        return await trio.lowlevel.wait_task_rescheduled(abort)
    except Exception as exc:  # only an armed wait fails (closed fd): the turn is ours
        if early is not None and early.started:
            return exc
        raise


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


def epoll_manager() -> Any:
    """The running trio run's epoll I/O manager, or None where it is not there or not of
    the shape :meth:`TrioReceiver.arm` relies on.

    Private trio state, read (as trio's own ``wait_readable`` does) to let one task's
    readiness wait wake another: a ``_registered`` mapping of fd to waiters with a
    ``read_task``, and ``_update_registrations(fd)``. Without it the exchange lock hands
    over by waking the next task, as before. ``tests/test_loops.py`` fails clearly when
    an installed trio changes that shape.
    """
    try:
        io = trio._core._run.GLOBAL_RUN_CONTEXT.runner.io_manager
    except AttributeError:
        return None
    registered = getattr(io, "_registered", None)
    factory = getattr(registered, "default_factory", None)
    if (
        factory is None
        or not callable(getattr(io, "_update_registrations", None))
        or not all(hasattr(factory, name) for name in ("read_task", "current_flags"))
    ):
        return None
    return io


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
        "_armed",
        "_closed",
        "_deadline",
        "_expired",
        "_io",
        "_scope",
        "_sock",
        "_wait",
        "_waiting",
    )

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._io = epoll_manager()  # for arm(); None: hand-over by I/O is not possible
        self._armed: trio.lowlevel.Task | None = None  # the task an armed wait wakes
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
            number = self._start_wait(deadline)
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                raise self._closed_wait_error(number) from None
            except trio.BusyResourceError:
                raise anyio.BusyResourceError("reading from") from None
            finally:
                self._waiting = 0
            try:
                return sock.recv_into(view)
            except BlockingIOError:
                pass

    def _start_wait(self, deadline: float) -> int:
        """Number the wait that starts now and give the watchdog its deadline (moved
        only for an earlier one)."""
        self._deadline = deadline
        if deadline < self._scope.deadline:
            self._scope.deadline = deadline
        self._wait = self._waiting = self._wait + 1
        return self._wait

    def _closed_wait_error(self, number: int) -> Exception:
        """What a wait ended by ``notify_closing`` raises: TimeoutError when it was the
        watchdog (its deadline passed), else ``anyio.ClosedResourceError``."""
        return TimeoutError() if self._expired == number else anyio.ClosedResourceError()

    # Hand-over by I/O (aiotmc._loops.EarlyStart): another task's wait, armed for it.

    def arm(self, waiter: object, view: memoryview, deadline: float) -> bool:
        """Make ``waiter`` (a task asleep in :func:`wait_turn`) the one trio's I/O manager
        wakes when the socket is readable, as if it were in ``wait_readable`` itself;
        the deadline as for :meth:`recv_into`. False where trio's epoll manager is not
        there or not of the shape this relies on (see :func:`epoll_manager`)."""
        io = self._io
        if io is None or self._waiting or not isinstance(waiter, trio.lowlevel.Task):
            return False
        fd = self._sock.fileno()
        waiters = io._registered[fd]
        if waiters.read_task is not None:
            return False
        waiters.read_task = waiter
        self._armed = waiter
        self._start_wait(deadline)
        io._update_registrations(fd)  # on failure it wakes the waiter with the error
        return True

    def received(self, woken: object, view: memoryview) -> int:
        """In the woken task: ``recv_into(view)`` now (-1: nothing there after all, wait
        with :meth:`recv_into`); ``woken`` is what its wait returned (None: readable; an
        exception: the wait failed, raised as :meth:`recv_into` raises it)."""
        self._armed = None
        self._waiting = 0
        if woken is not None:
            if isinstance(woken, trio.ClosedResourceError):
                raise self._closed_wait_error(self._wait) from None
            assert isinstance(woken, BaseException)
            raise woken
        try:
            return self._sock.recv_into(view)
        except BlockingIOError:
            return -1

    def disarm(self) -> None:
        """End an armed wait whose task was cancelled (the bytes stay unread)."""
        task, self._armed = self._armed, None
        self._waiting = 0
        fd = self._sock.fileno()
        io = self._io
        if task is None or io is None or fd < 0:
            return
        waiters = io._registered.get(fd)
        if waiters is not None and waiters.read_task is task:
            waiters.read_task = None
            io._update_registrations(fd)

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
