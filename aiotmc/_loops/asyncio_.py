"""asyncio (and uvloop) specifics, in one place (see :mod:`aiotmc._loops`).

* :func:`cancel_maybe_pending`: reads anyio's private table of task states, as anyio's own
  ``checkpoint_if_cancelled`` does, to skip a checkpoint when no cancellation can be
  pending (``tests/test_fastpath.py`` fails clearly if anyio changes that table);
* :class:`AsyncioReceiver`: ``recv_into`` with a deadline, the reader callback doing the
  read (the TCP transport's waits); :class:`BoundaryWaiter`: the HiSLIP channel's wait,
  the callback reading only at a message boundary;
* :func:`wait_turn` / :func:`give_turn`: the exchange lock's hand-over, on a bare future;
* :func:`reentry` / :func:`spawner`: thread-safe "run soon" and background tasks for the
  libusb drivers.

Imports the standard library and anyio only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import sys
from asyncio import AbstractEventLoop, current_task
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from contextvars import Context
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._early import EarlyStart

__all__ = [
    "AsyncioReceiver",
    "BoundaryWaiter",
    "ReadableWaiter",
    "anyio_task_states",
    "cancel_maybe_pending",
    "give_turn",
    "reentry",
    "spawner",
    "wait_turn",
]

logger = logging.getLogger("aiotmc._loops")

_task_states: Mapping[Any, Any] | None = None  # anyio's task -> TaskState table, once found
_task_states_usable = True  # False once the table turned out not to have the expected shape


# -- cancellation ------------------------------------------------------------------------


def cancel_maybe_pending(loop: AbstractEventLoop) -> bool:
    """False only if the current task certainly has no cancellation pending.

    Walks the task's anyio cancel scopes exactly as anyio's ``checkpoint_if_cancelled``
    does. If anyio's private table is not where it used to be, or not of the expected
    shape, the answer is always "maybe" (True) and the caller runs the public check.
    """
    states = _task_states
    if states is None:
        states = _find_task_states()
        if states is None:
            return True
    task = current_task(loop)  # with the loop given: no getpid()
    state = states.get(task)
    if state is None:
        return False  # a task anyio does not manage has no anyio cancel scope
    try:
        scope = state.cancel_scope
        while scope is not None:
            if scope.cancel_called:
                return True
            if scope.shield:
                return False
            scope = scope._parent_scope
    except AttributeError:  # anyio changed shape: use the public check from now on
        _forget_task_states()
        return True
    return False


def anyio_task_states() -> Mapping[Any, Any] | None:
    """anyio's private ``task -> TaskState`` table that :func:`cancel_maybe_pending`
    reads, or None if it is not there (or was found to have another shape)."""
    return _task_states if _task_states is not None else _find_task_states()


def _find_task_states() -> Mapping[Any, Any] | None:
    global _task_states
    if not _task_states_usable:
        return None
    module = sys.modules.get("anyio._backends._asyncio")
    states = getattr(module, "_task_states", None)
    if not isinstance(states, Mapping):
        return None
    _task_states = states
    return states


def _forget_task_states() -> None:
    global _task_states, _task_states_usable
    _task_states = None
    _task_states_usable = False


# -- the exchange lock's hand-over -------------------------------------------------------


async def wait_turn(
    line: deque[object],
    loop: AbstractEventLoop,
    pass_on: Callable[[], None],
    early: EarlyStart | None = None,
) -> object:
    """Queue a future at the end of ``line`` and wait until :func:`give_turn` resolves it
    (or, after ``early`` was started, its armed receiver: see
    :func:`aiotmc._loops.wait_turn` for the answer).

    A waiter cancelled while queued leaves the line; one cancelled after its turn was
    given (its wake-up already scheduled), or after ``early`` was started, calls
    ``pass_on`` (that one after ``early.abandon()``), so the turn is not lost.
    """
    waiter: asyncio.Future[object] = loop.create_future()
    entry: object = waiter
    if early is not None:
        early.waiter = waiter
        entry = early
    line.append(entry)
    try:
        return await waiter
    except Exception as exc:  # only an armed receiver fails the future: the turn is ours
        if early is not None and early.started:
            return exc
        raise
    except BaseException:
        if early is not None and early.started:
            early.abandon()
            pass_on()
        elif waiter.done() and not waiter.cancelled():
            pass_on()  # the turn arrived as we were cancelled: pass it on
        else:
            try:
                line.remove(entry)
            except ValueError:  # already taken out (and skipped) by give_turn
                pass
        raise


def give_turn(waiter: asyncio.Future[None]) -> bool:
    """Wake ``waiter`` (a future from :func:`wait_turn`); False if it was cancelled."""
    if waiter.done():
        return False
    waiter.set_result(None)
    return True


# -- libusb drivers: callbacks from other threads, background tasks ----------------------


def reentry(loop: AbstractEventLoop) -> Callable[[Callable[[], object]], None]:
    """``loop.call_soon_threadsafe``, callable from any thread, never blocking; calls made
    after the loop closed are dropped."""

    def asyncio_reentry(fn: Callable[[], object]) -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed
            logger.debug("event loop closed; dropped %r", fn)

    return asyncio_reentry


def spawner(loop: AbstractEventLoop) -> Callable[..., None]:
    """Start background tasks on ``loop`` (strong references kept until they end)."""
    tasks: set[asyncio.Task[None]] = set()

    def spawn(
        fn: Callable[[], Coroutine[Any, Any, None]],
        name: str,
        *,
        context: Context | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        task = loop.create_task(fn(), name=name, context=context)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if on_done is not None:
            task.add_done_callback(lambda _: on_done())

    return spawn


# -- a reader that stays registered between waits ---------------------------------------


class _StickyReader:
    """A socket's reader callback on ``loop`` that stays registered between waits.

    A wait registers it when it is not (:meth:`_register`); when it runs with nobody
    waiting (bytes arrived in between) the subclass's ``_on_readable`` unregisters it
    (:meth:`_unregister`), so a readable socket nobody reads never spins the loop; and it
    is unregistered before the socket closes.
    """

    __slots__ = ("_fd", "_loop", "_registered")

    def __init__(self, loop: AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._fd = sock.fileno()
        self._registered = False

    def _register(self) -> None:
        if not self._registered:
            self._loop.add_reader(self._fd, self._on_readable)
            self._registered = True

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        raise NotImplementedError


# -- the simulators' readiness wait ------------------------------------------------------


class ReadableWaiter(_StickyReader):
    """``wait(sock)`` until one socket is readable, on ``loop``; the reader stays
    registered between waits.

    What ``anyio.wait_readable`` does, without its per-call backend and task lookups, and
    without registering and removing the reader at every wait: a simulator answering a
    lockstep client waits once per message, and those were two ``epoll_ctl`` calls per
    message (three on uvloop), about 15 % of its CPU. When the callback runs with nobody
    waiting (bytes arrived in between) it unregisters, as :class:`AsyncioReceiver` does,
    so a readable socket nobody reads never spins the loop. One waiter at a time;
    cancellation leaves the bytes in the socket; :meth:`close` must run before the
    socket is closed (a wait in progress then raises ``anyio.ClosedResourceError``, as a
    wait on a closed socket does).
    """

    __slots__ = ("_closed", "_waiter")

    def __init__(self, loop: AbstractEventLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    async def __call__(self, sock: socket.socket) -> None:
        if self._closed or sock.fileno() < 0:
            raise anyio.ClosedResourceError
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter = waiter
        self._register()
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._unregister()
        elif not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Unregister (idempotent); a wait in progress raises ``ClosedResourceError``."""
        self._closed = True
        self._unregister()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(anyio.ClosedResourceError())


class _TimedReader(_StickyReader):
    """A :class:`_StickyReader` whose waits have a deadline, kept by one timer that is
    re-armed lazily: it is moved only for an earlier deadline, and when it fires for a
    wait whose deadline is later it moves on to that one. :meth:`_expire` ends a wait
    whose deadline has passed."""

    __slots__ = ("_deadline", "_sock", "_timer", "_timer_at", "_waiter")

    def __init__(self, loop: AbstractEventLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        self._sock = sock
        self._waiter: asyncio.Future[Any] | None = None
        self._deadline = math.inf  # of the wait in progress
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer, when)
        self._timer_at = when

    def _on_timer(self, when: float) -> None:
        self._timer = None
        self._timer_at = math.inf
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._deadline <= when:
            self._expire(waiter)
        else:  # a later wait's deadline: move on to it
            self._arm(self._deadline)

    def _start_wait(self, waiter: asyncio.Future[Any], deadline: float) -> None:
        """Make ``waiter`` the wait in progress: registered, the timer moved only for an
        earlier deadline."""
        self._waiter = waiter
        self._deadline = deadline
        if not self._registered:
            self._register()
        if deadline < self._timer_at:
            self._arm(deadline)

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        """Cancel the timer; a wait in progress raises ``anyio.ClosedResourceError``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(anyio.ClosedResourceError())


# -- the TCP transport's receiver --------------------------------------------------------


class AsyncioReceiver(_TimedReader):
    """Reader callback does the ``recv_into``; the fd stays registered between waits.

    When the callback runs with nobody waiting (data arrived in between), it unregisters,
    so a readable socket nobody reads never spins the loop; the next wait registers again.
    """

    __slots__ = ("_view",)

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        self._view: memoryview | None = None

    async def recv_into(self, view: memoryview, deadline: float, try_first: bool = True) -> int:
        """See :class:`Receiver`."""
        if try_first:
            try:
                return self._sock.recv_into(view)
            except BlockingIOError:
                pass
        loop = self._loop
        waiter: asyncio.Future[int] = loop.create_future()
        self._view = view
        self._start_wait(waiter, deadline)
        try:
            return await waiter
        finally:
            self._waiter = None
            self._view = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._unregister()
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

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        waiter.set_exception(TimeoutError())

    # Hand-over by I/O (aiotmc._loops.EarlyStart): another caller's wait, armed for it.

    def arm(self, waiter: object, view: memoryview, deadline: float) -> bool:
        """Make ``waiter`` (a future from :func:`wait_turn`) this receiver's wait: the
        reader callback receives into ``view`` and resolves it with the count, or with
        the failure (``TimeoutError`` at ``deadline``, ``OSError``, closed)."""
        if self._waiter is not None or not isinstance(waiter, asyncio.Future):
            return False
        self._view = view
        self._start_wait(waiter, deadline)
        return True

    def received(self, woken: object, view: memoryview) -> int:
        """In the woken waiter: the count its armed wait received (``woken``), or that
        wait's failure raised as :meth:`recv_into` raises it."""
        self.disarm()
        if isinstance(woken, BaseException):
            raise woken
        assert isinstance(woken, int)
        return woken

    def disarm(self) -> None:
        """End an armed wait (its waiter was woken, or cancelled: bytes stay unread)."""
        self._waiter = None
        self._view = None

    def close(self) -> None:
        """Unregister and cancel the timer; a waiter gets ``anyio.ClosedResourceError``."""
        self._unregister()
        self._stop()


# -- the HiSLIP channel's wait -----------------------------------------------------------


class BoundaryWaiter(_TimedReader):
    """``wait(deadline, receive)`` until one socket is readable, on ``loop``: False if
    ``deadline`` passed first (see :class:`aiotmc._loops.BoundaryWaiter`).

    The reader stays registered between waits (see :class:`_StickyReader`). With
    ``receive`` its callback receives into ``into`` itself and hands the count to
    ``hold``: stale readiness costs a failed ``recv``, not a task wake-up, and the bytes
    are the caller's even if the wait is then cancelled. Else it only wakes the waiter.
    """

    __slots__ = ("_closed", "_hold", "_into", "_receive")

    def __init__(
        self,
        loop: AbstractEventLoop,
        sock: socket.socket,
        into: memoryview,
        hold: Callable[[int], None],
    ) -> None:
        super().__init__(loop, sock)
        self._into = into
        self._hold = hold
        self._closed = False
        self._receive = False  # of the wait in progress

    def clock(self) -> float:
        """The loop's clock, without a running-loop lookup."""
        return self._loop.time()

    async def wait(self, deadline: float, receive: bool) -> bool:
        if self._closed:
            raise anyio.ClosedResourceError
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._receive = receive
        self._start_wait(waiter, deadline)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._unregister()
            return
        if waiter.done():
            return
        if self._receive:
            try:
                n = self._sock.recv_into(self._into)
            except (BlockingIOError, InterruptedError):
                return  # stale: keep waiting
            except OSError:
                pass  # the caller's own read reports it
            else:
                self._hold(n)
        waiter.set_result(True)

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        waiter.set_result(False)

    def close(self) -> None:
        """Unregister and cancel the timer; a wait in progress, or any later one, raises
        ``anyio.ClosedResourceError`` (idempotent; also once the loop is closed)."""
        self._closed = True
        try:
            self._unregister()
        except (RuntimeError, ValueError, OSError):  # loop or socket already closed
            pass
        self._stop()
