"""The event-loop thread behind :mod:`aiotmc.sync`: one per backend and process, started lazily.

Every blocking call becomes a task of that loop. The calling thread waits on a plain lock;
a ``KeyboardInterrupt`` (Ctrl-C) while it waits cancels the task and waits for it to end,
so the link's own recovery (socket resync, USBTMC abort) runs and nothing is left running
in the background; then the interrupt propagates.

The loop thread is anyio's blocking portal, but calls are handed over with the loop's own
thread-safe scheduling (``call_soon_threadsafe``, ``TrioToken.run_sync_soon``): a third of
the portal's per-call cost, and it works from a thread that runs its own trio loop, where
``trio.from_thread`` refuses.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from typing import Any, Final, Generic, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

__all__ = ["CANCEL_GRACE", "Call", "Portal", "default_backend", "portal_for"]

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds an interrupted call may take to finish its recovery before the interrupt
#: propagates anyway (transports bound their recovery well below this).
CANCEL_GRACE: Final = 30.0
_log = logging.getLogger("aiotmc")


def default_backend() -> str:
    """``AIOTMC_SYNC_BACKEND`` (``asyncio`` or ``trio``), asyncio if unset."""
    backend = os.environ.get("AIOTMC_SYNC_BACKEND", "asyncio") or "asyncio"
    if backend not in ("asyncio", "trio"):
        raise ValueError(f"AIOTMC_SYNC_BACKEND must be 'asyncio' or 'trio', not {backend!r}")
    return backend


class Call(Generic[T]):
    """One awaitable run as a task of the loop thread, awaited (or not) by another thread."""

    __slots__ = (
        "_awaitable",
        "_error",
        "_portal",
        "_value",
        "cancelled",
        "done",
        "finished",
        "scope",
    )

    def __init__(self, portal: Portal, awaitable: Awaitable[T]) -> None:
        self._portal = portal
        self._awaitable = awaitable
        self._value: T | None = None
        self._error: BaseException | None = None
        self.cancelled = False
        #: Set by the loop thread when the task has ended, before ``finished`` is released.
        self.done = False
        self.scope: anyio.CancelScope | None = None
        self.finished = _thread.allocate_lock()
        self.finished.acquire()

    def submit(self) -> None:
        """Schedule the task (may be interrupted: :meth:`cancel` copes either way)."""
        self._portal.schedule(self._start)

    def _start(self) -> None:  # in the loop thread
        if self.cancelled:  # interrupted before it was scheduled
            self._close_awaitable()
            self.done = True
            self.finished.release()
            return
        self._portal.spawn(self._guarded)

    async def _guarded(self) -> None:
        try:
            with anyio.CancelScope() as self.scope:
                if self.cancelled:
                    self.scope.cancel()
                self._value = await self._awaitable
                return
            self._error = anyio.ClosedResourceError("cancelled by KeyboardInterrupt")
        except Exception as exc:
            self._error = exc
        except BaseException as exc:  # the loop is stopping: let it
            self._error = exc
            raise
        finally:
            self._close_awaitable()  # no-op once it ran
            self.done = True
            self.finished.release()

    def _close_awaitable(self) -> None:
        if isinstance(self._awaitable, Coroutine):
            self._awaitable.close()

    def result(self) -> T:
        """Wait for the task; on ``KeyboardInterrupt`` cancel it, wait for it, re-raise."""
        try:
            self.finished.acquire()
        except KeyboardInterrupt:
            self.cancel_and_wait()
            raise
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value  # type: ignore[return-value]

    def cancel_and_wait(self) -> None:
        """Cancel the task and wait (bounded) until it has ended.

        An interrupt may land just after :meth:`result` got ``finished`` (the signal is
        handled at the next bytecode): the task has ended then, and ``finished`` will not
        be released again, so there is nothing to wait for.
        """
        if self.done:
            return
        self._portal.schedule(self._cancel)
        if not self.finished.acquire(timeout=CANCEL_GRACE):
            _log.warning(
                "aiotmc.sync: an interrupted operation is still ending after %s s", CANCEL_GRACE
            )

    def _cancel(self) -> None:  # in the loop thread
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class Portal:
    """One event loop running in a daemon thread; calls into it from any other thread."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            backend, name=f"aiotmc-sync-{backend}"
        )
        self.portal = self._cm.__enter__()
        self.thread_id: int = self.portal.call(threading.get_ident)
        if backend == "asyncio":
            loop = self.portal.call(asyncio.get_running_loop)
            tasks: set[asyncio.Task[None]] = set()

            def spawn(func: Callable[[], Coroutine[Any, Any, None]]) -> None:
                task = loop.create_task(func())
                tasks.add(task)  # a strong reference while it runs
                task.add_done_callback(tasks.discard)

            self.schedule: Callable[[Callable[[], None]], object] = loop.call_soon_threadsafe
            self.spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], None] = spawn
        else:
            import trio

            token = self.portal.call(trio.lowlevel.current_trio_token)
            self.schedule = token.run_sync_soon

            def spawn_trio(func: Callable[[], Coroutine[Any, Any, None]]) -> None:
                trio.lowlevel.spawn_system_task(func)

            self.spawn = spawn_trio

    def _check_thread(self) -> None:
        if threading.get_ident() == self.thread_id:
            raise RuntimeError("aiotmc.sync called from its own event-loop thread: await instead")

    def run(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await func(*args, **kwargs)`` in the loop thread and return its result."""
        self._check_thread()
        call = Call(self, func(*args, **kwargs))
        try:
            call.submit()
        except KeyboardInterrupt:
            call.cancel_and_wait()
            raise
        return call.result()

    def background(self, awaitable: Awaitable[T]) -> Call[T]:
        """Start ``awaitable`` as a loop task and return at once (its :class:`Call`)."""
        self._check_thread()
        call = Call(self, awaitable)
        call.submit()
        return call

    @contextmanager
    def hold(self, cm: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """Enter ``cm`` in a loop task, yield its value here, exit it in the same task."""
        entered: Future[T] = Future()
        leave: list[anyio.Event] = []
        raised: list[BaseException] = []

        async def body() -> None:
            try:
                value = await cm.__aenter__()
            except BaseException as exc:
                entered.set_exception(
                    exc if isinstance(exc, Exception) else anyio.ClosedResourceError("cancelled")
                )
                raise
            leave.append(anyio.Event())
            entered.set_result(value)
            await leave[0].wait()
            error = raised[0] if raised else None
            await cm.__aexit__(
                type(error) if error else None, error, error.__traceback__ if error else None
            )

        call = self.background(body())
        try:
            value = entered.result()
        except KeyboardInterrupt:
            call.cancel_and_wait()
            raise
        try:
            yield value
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            self.call(leave[0].set)
            call.result()

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``func(*args)`` in the loop thread."""

        async def run() -> T:
            return func(*args)

        return self.run(run)

    def stop(self) -> None:
        """Cancel what still runs and end the thread (at exit)."""
        self.portal.call(self.portal.stop, True)
        self._cm.__exit__(None, None, None)


def wait_cancelled(done: threading.Event) -> None:
    """After cancelling a task: wait (bounded) until it has ended."""
    if not done.wait(CANCEL_GRACE):
        _log.warning(
            "aiotmc.sync: an interrupted operation is still ending after %s s", CANCEL_GRACE
        )


_portals: dict[str, Portal] = {}
_portals_lock = threading.Lock()
_at_exit: list[Callable[[], None]] = []


def portal_for(backend: str | None = None) -> Portal:
    """The process's portal for ``backend`` (default from the environment), started lazily."""
    name = backend or default_backend()
    portal = _portals.get(name)
    if portal is not None:
        return portal
    with _portals_lock:
        portal = _portals.get(name)
        if portal is None:
            if not _portals:
                atexit.register(_shutdown)
            portal = _portals[name] = Portal(name)
        return portal


def on_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` at interpreter exit, before the loop threads stop."""
    _at_exit.append(callback)


def _shutdown() -> None:
    for callback in _at_exit:
        try:
            callback()
        except Exception:  # pragma: no cover - best effort at exit
            _log.exception("aiotmc.sync: error while closing at exit")
    with _portals_lock:
        portals = list(_portals.values())
        _portals.clear()
    for portal in portals:
        try:
            portal.stop()
        except Exception:  # pragma: no cover - best effort at exit
            _log.exception("aiotmc.sync: error while stopping the event-loop thread")
