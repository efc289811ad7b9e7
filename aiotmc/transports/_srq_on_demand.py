"""A service-request broadcaster that tells its transport when someone subscribes.

For buses where service requests must be polled or waited for (a Prologix adapter's
``++srq``, linux-gpib's ``ibwait``): the transport starts that work only when a
subscription opens, and its loop ends when :attr:`~aiotmc.srq.SrqBroadcaster.subscriber_count`
falls to zero.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from anyio.streams.memory import MemoryObjectReceiveStream

from .._types import ServiceRequest
from ..srq import SrqBroadcaster

__all__ = ["OnDemandRequests"]


class OnDemandRequests(SrqBroadcaster):
    """Service requests; each new subscription calls ``wanted()`` (on the loop thread)."""

    def __init__(self, source: str, wanted: Callable[[], None]) -> None:
        super().__init__(source)
        self._wanted = wanted

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int = 64
    ) -> AsyncIterator[MemoryObjectReceiveStream[ServiceRequest]]:
        """Like :meth:`SrqBroadcaster.subscribe`; the transport starts watching."""
        async with super().subscribe(buffer=buffer) as stream:
            self._wanted()
            yield stream
