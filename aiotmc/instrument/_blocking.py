"""The blocking fast path of :class:`~aiotmc.Instrument`, for :mod:`aiotmc.sync`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .._log import io_log, show
from .._timeouts import check_timeout
from .._types import DEFAULT, Default
from ..transports.base import BytesLike, SupportsBlockingIO
from ._base import DEBUG, InstrumentBase

__all__ = ["BlockingMethods"]


class BlockingMethods(InstrumentBase):
    """Called from a thread other than the event loop's. Each returns None (write: False)
    when the path does not apply (transport without SupportsBlockingIO, tasks waiting for
    the lock, link not in step, query delay): the caller then awaits the async method,
    whose result is the same. A lock held by another thread or task is waited for in the
    calling thread, in line with other threads (:meth:`FifoLock.acquire_in_thread`): no
    hop to the loop under contention between threads."""

    def _blocking_claim(
        self, timeout: float | Default | None
    ) -> tuple[SupportsBlockingIO, float] | None:
        """The transport and a ``time.monotonic()`` deadline, or None when the path does
        not apply; the caller then takes the lock with ``acquire_in_thread`` right before
        its ``try`` (an interrupt while it waits leaves the lock as it was)."""
        io = self._blocking_io
        if io is None or self._closed or self._lock.contended:
            return None
        limit = self._timeout if timeout is DEFAULT else check_timeout(timeout)
        return io, math.inf if limit is None else time.monotonic() + limit

    def _query_blocking(
        self,
        command: str,
        *,
        timeout: float | Default | None = DEFAULT,
        wake: Callable[[Callable[[], None]], object],
    ) -> str | None:
        """:meth:`query` in the calling thread; ``wake`` schedules a call in the event
        loop's thread (``call_soon_threadsafe``), to hand the lock to waiting tasks."""
        if self.query_delay:
            return None
        claim = self._blocking_claim(timeout)
        if claim is None:
            return None
        io, deadline = claim
        data = self._encode(command)
        self._lock.acquire_in_thread(wake)
        try:
            raw = io.exchange_blocking(data, max_size=self.max_message_size, deadline=deadline)
        except Exception as exc:
            if io_log.isEnabledFor(DEBUG):
                io_log.debug("%s write %s", self.resource, show(data))
            self._failed(f"query {command!r}", exc)
            raise
        finally:
            self._lock.release_from_thread(wake)
        if raw is None:
            return None
        if io_log.isEnabledFor(DEBUG):
            io_log.debug("%s write %s", self.resource, show(data))
            io_log.debug("%s read %s", self.resource, show(raw))
        return self._decode(raw)

    def _write_raw_blocking(
        self,
        data: BytesLike,
        *,
        end: bool = True,
        timeout: float | Default | None = DEFAULT,
        wake: Callable[[Callable[[], None]], object],
    ) -> bool:
        """:meth:`write_raw` in the calling thread (see :meth:`_query_blocking`)."""
        claim = self._blocking_claim(timeout)
        if claim is None:
            return False
        io, deadline = claim
        self._lock.acquire_in_thread(wake)
        try:
            done = io.send_blocking(data, end=end, deadline=deadline)
        except Exception as exc:
            self._failed("write", exc)
            raise
        finally:
            self._lock.release_from_thread(wake)
        if done and io_log.isEnabledFor(DEBUG):
            io_log.debug("%s write %s%s", self.resource, show(data), "" if end else " (no END)")
        return done

    def _read_raw_blocking(
        self,
        *,
        max_size: int | None = None,
        timeout: float | Default | None = DEFAULT,
        wake: Callable[[Callable[[], None]], object],
    ) -> bytes | None:
        """:meth:`read_raw` in the calling thread (see :meth:`_query_blocking`)."""
        claim = self._blocking_claim(timeout)
        if claim is None:
            return None
        io, deadline = claim
        self._lock.acquire_in_thread(wake)
        try:
            raw = io.receive_blocking(max_size=max_size or self.max_message_size, deadline=deadline)
        except Exception as exc:
            self._failed("read", exc)
            raise
        finally:
            self._lock.release_from_thread(wake)
        if raw is not None and io_log.isEnabledFor(DEBUG):
            io_log.debug("%s read %s", self.resource, show(raw))
        return raw
