"""Service requests for transports without an SRQ channel: an opt-in status-byte poller.

A raw socket cannot tell the host that the instrument requests service. With
``aiotmc.open(resource, srq_poll_interval=0.05)`` (or :func:`poll_service_requests`) a
background task reads the status byte every ``interval`` seconds and publishes a
:class:`~aiotmc.ServiceRequest` when the request appears, so ``service_requests()``,
``wait_for_srq()`` and ``wait_operation_complete()`` work the same as on USB488.

Costs and rules (docs/srq.md):

* Each poll is one ``*STB?`` exchange (a serial poll where the transport has one) taken
  under the instrument's lock, like any other exchange: it waits for a ``lock()``
  transaction to end and never splits a ``query()``. A bare ``write()`` of a query
  followed later by a separate ``read()`` is *not* one exchange: a poll in between makes
  the instrument discard the pending answer (Query INTERRUPTED). With polling on, use
  ``query()`` or hold ``inst.lock()`` around such pairs.
* ``*STB?`` reports MSS, a level: an event is published when it rises. A request that
  falls and rises again between two polls is seen as one. Code that clears the status
  (``*ESR?``, ``*CLS``) under the lock may call :meth:`SrqPoller.rearm` so the next poll
  that sees MSS publishes again (the completion helper does).
* Bounded: one poll at a time, each limited by ``timeout``. Stopping the poller cancels
  a poll in flight; the transport's cancellation contract keeps the link in step (a raw
  socket reconnects before its next exchange). Failed polls are counted and logged, and
  polling goes on; it ends when the instrument closes.
* The poller is a task of the event loop (:mod:`aiotmc._background`), not of the caller:
  the instrument may be opened and closed in different tasks and cancel scopes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import anyio

from ._background import BackgroundTask, spawn
from ._types import StatusByte
from .srq import SrqBroadcaster

if TYPE_CHECKING:
    from .transports.base import MessageTransport

__all__ = ["PolledInstrument", "SrqPoller", "poll_service_requests"]

_log = logging.getLogger("aiotmc.srq")
_RQS = int(StatusByte.RQS)


class PolledInstrument(Protocol):
    """What the poller uses of an instrument: :class:`~aiotmc.Instrument` is one.

    A protocol, not ``Instrument`` itself, so that this module sits below the instrument
    (which refers to :class:`SrqPoller`) even for type checkers.
    """

    #: The poller publishing this instrument's service requests, if any.
    srq_poller: SrqPoller | None

    @property
    def resource(self) -> str: ...

    @property
    def transport(self) -> MessageTransport: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def closed(self) -> bool: ...

    async def read_stb(self, *, timeout: float | None) -> StatusByte: ...


class SrqPoller:
    """Reads the status byte of ``instrument`` every ``interval`` s; publishes SRQs.

    ``timeout`` bounds each poll (default: the instrument's timeout, or 10 s if it has
    none). Counters: :attr:`polls`, :attr:`failures` (with :attr:`last_error`).
    Raises ``ValueError`` for a non-positive interval.
    """

    def __init__(
        self, instrument: PolledInstrument, interval: float, *, timeout: float | None = None
    ) -> None:
        if not interval > 0:
            raise ValueError(f"srq_poll_interval must be positive, not {interval!r}")
        self.instrument = instrument
        self.interval = interval
        self.timeout = timeout
        #: Where polled service requests are published.
        self.broadcaster = SrqBroadcaster(instrument.resource)
        self.polls = 0  #: successful polls
        self.failures = 0  #: polls that raised
        self.last_error: Exception | None = None  #: the latest failure
        # A serial poll clears RQS when read (each set bit is a new request); *STB?
        # reports MSS, a level that stays set until the cause is cleared.
        self._serial_poll = instrument.transport.info.capabilities.read_stb
        self._asserted = False
        self._task: BackgroundTask | None = None

    def start(self) -> None:
        """Run :meth:`run` in a background task of the event loop (until :meth:`stop`
        or the instrument closes)."""
        if self._task is None:
            self._task = spawn(
                self.run, name=f"aiotmc srq poll {self.instrument.resource}", on_error=self._fail
            )

    async def stop(self) -> None:
        """Stop polling (cancels a poll in flight); completes under cancellation."""
        task = self._task
        if task is not None:
            await task.stop(timeout=5.0)
        self.broadcaster.close()

    def _fail(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = exc

    def rearm(self) -> None:
        """Forget that a request is asserted: the next poll that sees one publishes it.

        Call after clearing the status (``*ESR?``, ``*CLS``) while holding the lock.
        """
        self._asserted = False

    def _observe(self, status: int) -> None:
        requested = bool(status & _RQS)
        if requested and (self._serial_poll or not self._asserted):
            self.broadcaster.publish(status)
        self._asserted = requested

    async def _poll(self) -> None:
        inst = self.instrument
        timeout = self.timeout
        if timeout is None:
            timeout = inst.timeout if inst.timeout is not None else 10.0
        status = await inst.read_stb(timeout=timeout)  # one exchange under the lock
        self.polls += 1
        self._observe(int(status))

    async def run(self) -> None:
        """Poll until the instrument closes (or the task is cancelled)."""
        inst = self.instrument
        next_poll = time.monotonic()
        failing = False
        try:
            while not inst.closed:
                delay = next_poll - time.monotonic()
                await anyio.sleep(max(0.0, delay))
                next_poll = max(next_poll + self.interval, time.monotonic())
                try:
                    await self._poll()
                except anyio.ClosedResourceError:
                    break
                except Exception as exc:
                    self.failures += 1
                    level = logging.DEBUG if failing else logging.WARNING  # once per streak
                    _log.log(level, "%s: status-byte poll failed: %r", inst.resource, exc)
                    self.last_error = exc
                    failing = True
                else:
                    failing = False
        finally:
            self.broadcaster.close()


@asynccontextmanager
async def poll_service_requests(
    instrument: PolledInstrument, interval: float, *, timeout: float | None = None
) -> AsyncIterator[SrqPoller]:
    """Poll ``instrument``'s status byte (an :class:`~aiotmc.Instrument`) for service
    requests while the block runs.

    ``aiotmc.open(..., srq_poll_interval=...)`` uses this; call it yourself for an
    :class:`~aiotmc.Instrument` you built from a transport. While it runs,
    ``instrument.service_requests()`` and ``wait_for_srq()`` deliver the polled requests
    (a transport's own SRQ channel, if it has one, still takes precedence).

    Raises ``ValueError`` for a non-positive interval and ``RuntimeError`` if the
    instrument is already being polled.
    """
    if instrument.srq_poller is not None:
        raise RuntimeError(f"{instrument.resource} is already polled for service requests")
    poller = SrqPoller(instrument, interval, timeout=timeout)
    instrument.srq_poller = poller
    poller.start()
    try:
        yield poller
    finally:
        instrument.srq_poller = None
        await poller.stop()
