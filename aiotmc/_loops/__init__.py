"""Event-loop specifics, one module per loop library, and the selector over them.

The hot paths (the TCP receivers, the exchange lock, the per-call checks of
``Instrument``) and the libusb drivers need what anyio does not offer cheaply enough or at
all: a wait without a cancel scope, a hand-over between tasks without an event object, a
thread-safe "run soon" for foreign threads. Everything that depends on the loop library
lives in :mod:`.asyncio_` (asyncio, uvloop) or :mod:`.trio_`; the functions here pick one.
The package is the lowest layer: it imports the standard library, anyio and the loop
library, nothing else of aiotmc. :mod:`.trio_` is imported only while trio runs.

On CPython 3.11 every ``get_running_loop()`` (so every ``asyncio.current_task()``,
``anyio.current_time()`` and anyio backend lookup) makes a ``getpid()`` system call; the
per-call helpers therefore take the loop that the caller looked up once
(:func:`running_loop`; ``None`` under trio).
"""

from __future__ import annotations

import importlib
import socket
import sys
from asyncio import AbstractEventLoop, Future, _get_running_loop
from asyncio import sleep as asyncio_sleep
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel

from . import asyncio_
from ._early import EarlyStart

if TYPE_CHECKING:
    from . import trio_
    from .asyncio_ import AsyncioReceiver
    from .trio_ import TrioReceiver
else:
    trio_ = None  # set by _load_trio_() once trio runs: an import statement per call
    # would cost ~0.6 µs, and the hot paths call into it several times per query

__all__ = [
    "BoundaryWaiter",
    "EarlyStart",
    "ReadableWaiter",
    "Reentry",
    "Spawner",
    "boundary_waiter",
    "cancel_maybe_pending",
    "capture_reentry",
    "capture_spawner",
    "checkpoint_if_cancelled",
    "current_async_library",
    "current_time",
    "give_turn",
    "loop_receiver",
    "readable_waiter",
    "running_loop",
    "running_trio",
    "sleep",
    "wait_turn",
    "wait_turn_early",
]

Reentry = Callable[[Callable[[], object]], None]  #: thread-safe "run this on the loop soon"


class Spawner(Protocol):
    """Starts ``fn()`` as a task of the captured loop that belongs to no task group."""

    def __call__(
        self,
        fn: Callable[[], Coroutine[Any, Any, None]],
        name: str,
        *,
        context: Context | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """``context``: the task's context variables (default: a copy of the caller's);
        ``on_done``: called once the task has ended, also when it was cancelled before it
        first ran (its ``finally`` blocks then never run)."""


running_loop = _get_running_loop  #: the running asyncio loop, or None (trio, no loop)


def _load_trio_() -> None:
    """Import :mod:`.trio_` into the global ``trio_`` (on first use, when trio runs).

    Not ``from . import trio_``: with the package attribute ``trio_`` already there (None)
    that form returns the attribute instead of importing the submodule."""
    global trio_
    trio_ = importlib.import_module(".trio_", __name__)


def running_trio() -> ModuleType | None:
    """The ``trio`` module when called from inside a trio run, else ``None``."""
    trio = sys.modules.get("trio")
    if trio is None or _get_running_loop() is not None:
        return None
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return None
    return trio


def current_async_library() -> str:
    """``"trio"`` or ``"asyncio"``: the library running the current thread's loop
    (RuntimeError outside any)."""
    try:
        import sniffio
    except ImportError:
        pass
    else:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            pass
    if "trio" in sys.modules:
        import trio

        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    import asyncio

    asyncio.get_running_loop()  # raises RuntimeError outside any loop
    return "asyncio"


# -- per-call checks -----------------------------------------------------------------------


def current_time(loop: AbstractEventLoop | None) -> float:
    """The running loop's clock (the one anyio deadlines use); ``loop`` is
    :func:`running_loop`'s answer (None: trio)."""
    if loop is not None:
        return loop.time()
    if "trio" in sys.modules:
        if trio_ is None:
            _load_trio_()
        try:
            return trio_.current_time()
        except RuntimeError:  # not inside a trio run
            pass
    return anyio.current_time()


def cancel_maybe_pending(loop: AbstractEventLoop | None) -> bool:
    """False only if the current task certainly has no cancellation pending.

    ``loop`` is the running asyncio loop (from :func:`running_loop`); ``None`` (trio)
    always answers True, since trio's own check is already cheap. It never answers "no"
    when anyio would cancel (see :func:`.asyncio_.cancel_maybe_pending`).
    """
    if loop is None:
        return True
    return asyncio_.cancel_maybe_pending(loop)


async def sleep(seconds: float) -> None:
    """``anyio.sleep`` (which awaits ``asyncio.sleep`` on asyncio) without its per-call
    backend lookup there: about 1 µs less for a task that sleeps between reads."""
    if _get_running_loop() is not None:
        if not seconds >= 0:
            raise ValueError("delay must be a non-negative number")
        await asyncio_sleep(seconds)
    else:
        await anyio.sleep(seconds)


async def checkpoint_if_cancelled() -> None:
    """Raise if the caller's cancel scope is cancelled; never lets another task run."""
    if "trio" in sys.modules and _get_running_loop() is None:
        if trio_ is None:
            _load_trio_()
        try:
            await trio_.checkpoint_if_cancelled()
        except RuntimeError:  # not inside a trio run
            pass
        else:
            return
    await anyio.lowlevel.checkpoint_if_cancelled()


# -- the exchange lock's hand-over -------------------------------------------------------


async def wait_turn(line: deque[object], pass_on: Callable[[], None]) -> None:
    """Wait at the end of ``line`` until :func:`give_turn` picks this task.

    ``pass_on`` is called if the turn arrives as the waiter is cancelled (it must give
    the turn to the next one). Cancelling a waiter still in line takes it out.
    """
    if line:  # the waiters ahead tell the loop (no running-loop lookup: a getpid() on 3.11)
        head = line[0]
        if isinstance(head, EarlyStart):
            head = head.waiter
        loop = head.get_loop() if isinstance(head, Future) else None
    else:
        loop = _get_running_loop()
    if loop is not None:
        await asyncio_.wait_turn(line, loop, pass_on)
    else:
        if trio_ is None:
            _load_trio_()
        await trio_.wait_turn(line, pass_on)


def wait_turn_early(
    line: deque[object],
    pass_on: Callable[[], None],
    early: EarlyStart,
    loop: AbstractEventLoop | None,
) -> Awaitable[object]:
    """:func:`wait_turn`, leaving ``early`` in line (``loop``: :func:`running_loop`'s
    answer); a plain function returning the loop's own wait, so that the contended query
    path has one coroutine less.

    Awaited, it answers what ``early``'s armed wait delivered: on asyncio the count of
    bytes its receiver read, on trio None (readable); an exception instance if that wait
    failed (deadline, closed, socket error). The turn is then the caller's all the same.
    Without a start, None.
    """
    if loop is not None:
        return asyncio_.wait_turn(line, loop, pass_on, early)
    if trio_ is None:
        _load_trio_()
    return trio_.wait_turn(line, pass_on, early)


def give_turn(line: deque[object]) -> bool:
    """Give the turn to the oldest waiter of ``line`` still waiting (starting its early
    request if it left one); False when there is none."""
    while line:
        waiter = line.popleft()
        if isinstance(waiter, Future):
            if asyncio_.give_turn(waiter):
                return True
            continue
        if isinstance(waiter, EarlyStart):
            target = waiter.waiter
            if isinstance(target, Future) and target.done():
                continue  # cancelled while in line
            if waiter.start():
                return True  # the answer wakes it
            waiter = target
            if isinstance(waiter, Future):
                return asyncio_.give_turn(waiter)
        if trio_ is None:
            _load_trio_()
        if trio_.give_turn(waiter):
            return True
    return False


# -- the TCP transport's receiver --------------------------------------------------------


def loop_receiver(sock: socket.socket) -> AsyncioReceiver | TrioReceiver | None:
    """The cheapest receiver for the running loop; None when only a portable one fits
    (no asyncio or trio loop, or an asyncio loop without ``add_reader``)."""
    if running_trio() is not None:
        from .trio_ import TrioReceiver

        return TrioReceiver(sock)
    loop = _reader_loop(sock)
    return None if loop is None else asyncio_.AsyncioReceiver(loop, sock)


class ReadableWaiter(Protocol):
    """A server's readiness wait for one socket: ``await wait(sock)`` until it is
    readable (the bytes stay in the socket; cancellable); :meth:`close` before closing
    the socket (a wait in progress then raises ``anyio.ClosedResourceError``)."""

    def __call__(self, sock: socket.socket, /) -> Awaitable[None]: ...

    def close(self) -> None: ...


class _AnyioReadable:
    """``anyio.wait_readable`` for loops without ``add_reader`` (e.g. Windows' proactor)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __call__(self, sock: socket.socket) -> Awaitable[None]:
        return anyio.wait_readable(sock)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            anyio.notify_closing(self._sock)


def readable_waiter(sock: socket.socket) -> ReadableWaiter:
    """The cheapest readiness wait on ``sock`` for the running loop, for servers that
    wait once per message: on asyncio a reader that stays registered between waits, on
    trio trio's own wait, instead of ``anyio.wait_readable``'s per-call lookups (that one
    where neither fits).

    Probes ``sock`` with ``remove_reader``: call before anything registers it.
    """
    if running_trio() is not None:
        _load_trio_()
        return trio_.ReadableWaiter(sock)
    loop = _reader_loop(sock)
    return _AnyioReadable(sock) if loop is None else asyncio_.ReadableWaiter(loop, sock)


def _reader_loop(sock: socket.socket) -> AbstractEventLoop | None:
    """The running asyncio loop if it offers ``add_reader`` (probed on ``sock``, which
    must not be registered yet), else None (no asyncio loop, or e.g. Windows' proactor)."""
    loop = _get_running_loop()
    if loop is None:
        return None
    try:
        loop.remove_reader(sock.fileno())
    except NotImplementedError:
        return None
    return loop


# -- the HiSLIP channel's wait -----------------------------------------------------------


class BoundaryWaiter(Protocol):
    """A message channel's readiness wait on one socket (the HiSLIP channel's).

    ``await wait(deadline, receive)``: True once the socket is readable, False if the
    loop's clock passed ``deadline`` first (``math.inf``: none). ``receive`` says the
    caller is at a message boundary with nothing held: the waiter may then receive the
    first bytes itself, into the buffer it was made with, and report the count (0 at
    end of stream) through ``hold`` before it returns; such bytes are the caller's even
    if the wait is then cancelled (receiving, readiness gone stale costs a failed
    ``recv``, not a wake-up; an error of that ``recv`` is left for the caller's own
    read). Without ``receive`` it reads nothing. Before closing the socket:
    :meth:`close`, then ``anyio.notify_closing``; a wait in progress then raises
    ``anyio.ClosedResourceError`` (on asyncio any later one too).
    """

    def wait(self, deadline: float, receive: bool, /) -> Awaitable[bool]: ...

    def clock(self) -> float:
        """The loop's clock (the one deadlines use), without a running-loop lookup."""
        ...

    def close(self) -> None: ...


def boundary_waiter(
    sock: socket.socket, into: memoryview, hold: Callable[[int], None]
) -> BoundaryWaiter:
    """The :class:`BoundaryWaiter` for the running loop: on asyncio a reader that stays
    registered between waits and receives in its callback, with one lazily re-armed
    timer for the deadlines; on trio the TCP receiver's wait (its watchdog keeps the
    deadlines), or ``wait_readable`` under a scope when not receiving."""
    loop = _get_running_loop()
    if loop is not None:
        return asyncio_.BoundaryWaiter(loop, sock, into, hold)
    if trio_ is None:
        _load_trio_()
    return trio_.BoundaryWaiter(sock, into, hold)


# -- libusb drivers ----------------------------------------------------------------------


def capture_reentry() -> Reentry:
    """Capture the running loop; the result may be called from any thread, never blocks.

    Call on the loop thread. Calls made after the loop has finished are dropped.
    """
    if current_async_library() == "trio":
        _load_trio_()
        return trio_.reentry()
    import asyncio

    return asyncio_.reentry(asyncio.get_running_loop())


def capture_spawner() -> Spawner:
    """Capture the running loop; the result starts background tasks on it that belong to
    no task group (trio system tasks, asyncio tasks kept referenced until they end).

    Call on the loop thread.
    """
    if current_async_library() == "trio":
        _load_trio_()
        return trio_.spawner()
    import asyncio

    return asyncio_.spawner(asyncio.get_running_loop())
