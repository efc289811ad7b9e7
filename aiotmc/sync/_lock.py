"""``SyncInstrument.lock()``: one loop task holds the instrument's lock and runs the calls
that the locking thread makes inside the block, so they pass (the async lock belongs to a task)."""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import anyio

from ..instrument import Instrument
from ._portal import Portal, wait_cancelled

__all__ = ["LockSession"]

T = TypeVar("T")


class _Job(Generic[T]):
    """One call run by the session task; cancellable from the calling thread."""

    def __init__(self, func: Callable[[], Awaitable[T]]) -> None:
        self.func = func
        self.future: Future[T] = Future()
        self.done = threading.Event()
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False

    async def run(self) -> None:
        try:
            with anyio.CancelScope() as self.scope:
                if self.cancelled:
                    self.scope.cancel()
                try:
                    result = await self.func()
                except Exception as exc:
                    self.future.set_exception(exc)
                else:
                    self.future.set_result(result)
        finally:
            if not self.future.done():
                self.future.set_exception(anyio.ClosedResourceError("aiotmc.sync loop stopped"))
            self.done.set()

    def cancel(self) -> None:  # in the loop thread
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class LockSession:
    """Holds ``inst.lock()`` in one loop task until :meth:`close`."""

    def __init__(self, portal: Portal, instrument: Instrument) -> None:
        self.owner = threading.get_ident()
        self._portal = portal
        self._instrument = instrument
        self._send, self._receive = anyio.create_memory_object_stream[_Job[Any]](math.inf)
        self._locked: Future[None] = Future()
        self._serving = portal.background(self._serve())
        try:
            self._locked.result()  # the lock is taken, or the task's error
        except KeyboardInterrupt:
            self._serving.cancel_and_wait()
            raise

    async def _serve(self) -> None:
        try:
            async with self._instrument.lock():
                self._locked.set_result(None)
                async with self._receive:
                    async for job in self._receive:
                        await job.run()
        except BaseException as exc:
            if not self._locked.done():
                self._locked.set_exception(
                    exc if isinstance(exc, Exception) else anyio.ClosedResourceError("cancelled")
                )
            raise

    def run(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``await func()`` inside the held lock."""
        job = _Job(func)
        try:
            self._portal.call(self._send.send_nowait, job)
        except KeyboardInterrupt:
            self._portal.call(job.cancel)
            raise
        try:
            return job.future.result()
        except KeyboardInterrupt:
            self._portal.call(job.cancel)
            wait_cancelled(job.done)
            raise

    def close(self) -> None:
        """Release the lock (after the calls sent so far)."""
        self._portal.call(self._send.close)
        self._serving.result()
