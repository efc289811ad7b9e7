"""What every simulator server shares: it serves in a task group held from ``__aenter__``
to ``__aexit__`` (``async with Server(device) as server:`` in tests, the CLI and user
code), and it releases what it opened however that ends."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """Base of the simulator servers: subclasses open their listeners or ports in
    :meth:`_open`, start their serving tasks in :meth:`_start`, and release everything
    in :meth:`_close` (shielded, also after a failed start; safe to call twice);
    :meth:`_stopping` runs first on exit."""

    _task_group: TaskGroup | None = None  #: the serving tasks' group while running

    async def _open(self) -> None:
        """Open what the server serves on (listening sockets, a pty...)."""

    def _start(self, task_group: TaskGroup) -> None:
        """Start the serving tasks in ``task_group``."""
        raise NotImplementedError

    def _stopping(self) -> None:
        """First thing on exit, before the serving tasks are cancelled (e.g. stop
        listening to the device)."""

    async def _close(self) -> None:
        """Release what :meth:`_open` took (runs shielded from cancellation)."""

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError(f"this {type(self).__name__} is already running")
        try:
            await self._open()
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise
        self._task_group = task_group
        self._start(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._stopping()
        task_group = self._task_group  # kept until its tasks are done: they start more
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                return await task_group.__aexit__(exc_type, exc, tb)
            return None
        finally:
            self._task_group = None
            with anyio.CancelScope(shield=True):
                await self._close()
