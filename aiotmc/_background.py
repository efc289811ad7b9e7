"""Background tasks owned by the event loop, not by the caller's task or cancel scopes.

A link's background work (the USB interrupt-IN reader, a background reconnect, the
simulator clock, the SRQ poller) must not live in a task group held open across a
``yield`` that user code controls: closing the instrument from another task, or inside a
cancel scope that did not exist when it was opened, would then corrupt the caller's
scopes. :func:`spawn` starts such work as a task of the loop itself (asyncio:
``loop.create_task`` with a strong reference kept here; trio: a system task), running in
an anyio :class:`~anyio.CancelScope` that :meth:`BackgroundTask.cancel` cancels from any
task of the same loop; :meth:`BackgroundTask.stop` cancels it and waits (shielded,
bounded) for it to end.

Errors: a body that raises is logged and its exception kept in
:attr:`BackgroundTask.error` (and handed to ``on_error``), never raised into the loop
(a trio system task that raises would crash the run). The owner turns it into a typed
error for the user's next operation. Cancellation by the loop at shutdown propagates.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["BackgroundTask", "running", "spawn"]

logger = logging.getLogger("aiotmc.background")

_TASKS: set[BackgroundTask] = set()  # running tasks, for :func:`running`
_ASYNCIO_TASKS: set[asyncio.Task[None]] = set()  # strong references (the loop keeps weak ones)


class BackgroundTask:
    """Handle on a task started by :func:`spawn`; usable from any task of its loop."""

    __slots__ = ("_done", "_fn", "_on_error", "_scope", "error", "name")

    def __init__(
        self,
        fn: Callable[[], Awaitable[None]],
        name: str,
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        self._fn = fn
        self._on_error = on_error
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self.name = name
        #: The exception that ended the body (None: it returned or was cancelled).
        self.error: Exception | None = None

    @property
    def done(self) -> bool:
        """True once the body has ended (returned, raised or was cancelled)."""
        return self._done.is_set()

    def cancel(self) -> None:
        """Cancel the body (from any task of the loop; before it started, too)."""
        self._scope.cancel()

    async def wait(self) -> None:
        """Wait until the body has ended (not shielded: the caller's cancellation applies)."""
        await self._done.wait()

    async def stop(self, *, timeout: float = 1.0) -> bool:
        """Cancel and wait up to ``timeout`` s for the end, shielded from the caller's
        cancellation. True if the body ended."""
        self.cancel()
        if not self._done.is_set():
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await self._done.wait()
        return self._done.is_set()

    async def _run(self) -> None:
        try:
            with self._scope:
                await self._fn()
        except Exception as exc:
            self.error = exc
            logger.error("background task %s failed", self.name, exc_info=exc)
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:
                    logger.exception("error handler of background task %s failed", self.name)
        finally:
            self._finish()

    def _finish(self, _task: object = None) -> None:
        self._done.set()
        _TASKS.discard(self)


def spawn(
    fn: Callable[[], Awaitable[None]],
    *,
    name: str,
    on_error: Callable[[Exception], None] | None = None,
) -> BackgroundTask:
    """Start ``fn()`` as a task of the running event loop; return its handle.

    Call from the loop's thread. The task inherits a copy of the caller's context
    variables. ``on_error`` is called (synchronously, in the task) with an exception
    that ended the body.
    """
    task = BackgroundTask(fn, name, on_error)
    context = contextvars.copy_context()
    if _on_trio():
        import trio

        trio.lowlevel.spawn_system_task(task._run, name=name, context=context)
    else:
        handle = asyncio.get_running_loop().create_task(task._run(), name=name, context=context)
        _ASYNCIO_TASKS.add(handle)
        handle.add_done_callback(_ASYNCIO_TASKS.discard)
        handle.add_done_callback(task._finish)  # also when cancelled before it first ran
    _TASKS.add(task)
    return task


def _on_trio() -> bool:
    if "trio" not in sys.modules:
        return False
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def running() -> int:
    """How many background tasks are running (all loops of the process); for tests."""
    return len(_TASKS)
