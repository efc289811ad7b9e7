"""The event-loop thread behind :mod:`aiotmc.sync`: one per backend and process, started lazily.

Every blocking call becomes a task of that loop (anyio's blocking portal). The calling
thread waits for the result; a ``KeyboardInterrupt`` (Ctrl-C) while it waits cancels the
task and waits for it to end, so the link's own recovery (socket resync, USBTMC abort)
runs and nothing is left running in the background; then the interrupt propagates.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, Final, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

__all__ = ["CANCEL_GRACE", "Portal", "default_backend", "portal_for"]

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


class _CallState:
    """One call's cancel handle, shared by the calling thread and its loop task."""

    __slots__ = ("cancelled", "done", "scope", "started")

    def __init__(self) -> None:
        self.cancelled = False
        self.started = False
        self.scope: anyio.CancelScope | None = None
        self.done = threading.Event()

    def cancel(self) -> None:  # in the loop thread
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
        self.thread_id = self.portal.call(threading.get_ident)
        self._loop: asyncio.AbstractEventLoop | None = None
        if backend == "asyncio":
            self._loop = self.portal.call(asyncio.get_running_loop)

    def run(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await func(*args, **kwargs)`` in the loop thread and return its result."""
        if threading.get_ident() == self.thread_id:
            raise RuntimeError("aiotmc.sync called from its own event-loop thread: await instead")
        if self._loop is not None:
            return _run_on_asyncio(self._loop, func(*args, **kwargs))
        state = _CallState()

        async def task() -> T:
            state.started = True
            try:
                with anyio.CancelScope() as state.scope:
                    if state.cancelled:
                        state.scope.cancel()
                    return await func(*args, **kwargs)
                raise anyio.get_cancelled_exc_class()()  # cancelled by the caller's interrupt
            finally:
                state.done.set()

        try:
            # inside the try: the interrupt may come while the task is being scheduled
            return self.portal.start_task_soon(task).result()
        except KeyboardInterrupt:
            self.portal.call(state.cancel)
            if state.started:
                wait_cancelled(state.done)
            raise

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``func(*args)`` in the loop thread."""
        return self.portal.call(func, *args)

    def stop(self) -> None:
        """Cancel what still runs and end the thread (at exit)."""
        self.portal.call(self.portal.stop, True)
        self._cm.__exit__(None, None, None)


class _AsyncioCall:
    """One call on the asyncio loop thread without anyio's portal machinery (a third of
    its cost): a task created by a thread-safe callback, a lock released when it ends."""

    __slots__ = ("cancelled", "coro", "finished", "scope", "task")

    def __init__(self, coro: Awaitable[Any]) -> None:
        self.coro = coro
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None
        self.scope: anyio.CancelScope | None = None
        self.finished = _thread.allocate_lock()
        self.finished.acquire()

    def start(self) -> None:  # in the loop thread
        if self.cancelled:  # interrupted before it was scheduled
            self._close_coro()
            self.finished.release()
            return
        self.task = asyncio.get_running_loop().create_task(self._guarded())
        self.task.add_done_callback(self._done)

    async def _guarded(self) -> Any:
        with anyio.CancelScope() as self.scope:
            if self.cancelled:
                self.scope.cancel()
            return await self.coro
        raise asyncio.CancelledError  # cancelled by the caller's interrupt

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._close_coro()  # no-op once it ran; silences "never awaited" if it did not
        self.finished.release()

    def _close_coro(self) -> None:
        if isinstance(self.coro, Coroutine):
            self.coro.close()

    def cancel(self) -> None:  # in the loop thread
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()
        elif self.task is not None:
            self.task.cancel()  # not started yet: cancel before its first step


def _run_on_asyncio(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    call = _AsyncioCall(coro)
    try:
        loop.call_soon_threadsafe(call.start)
        call.finished.acquire()
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(call.cancel)
        if not call.finished.acquire(timeout=CANCEL_GRACE):
            _log.warning(
                "aiotmc.sync: an interrupted operation is still ending after %s s", CANCEL_GRACE
            )
        raise
    task = call.task
    assert task is not None
    return task.result()  # type: ignore[no-any-return]


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
