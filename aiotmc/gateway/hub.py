"""The hub: fan-out of the gateway's events to its parts, bounded, dropping the oldest.

Every subscriber (the MQTT bridge, the rule engine, a web client...) gets its own anyio
memory stream of ``maxsize`` events. :meth:`GatewayHub.publish` never waits: when a
subscriber's queue is full, its oldest event is dropped (for it alone) and counted, so a
stuck consumer sees the newest data when it recovers and never stalls acquisition.
Storage does not go through here: it is fed by the spool, which never drops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import GatewayError
from .model import (
    CommandRequest,
    CommandResult,
    Controller,
    Event,
    GatewayStats,
    InstrumentState,
    InstrumentStats,
    Reading,
    StatusEvent,
)

if TYPE_CHECKING:
    from ..instrument import Instrument

__all__ = ["DenyAllController", "GatewayHub"]


class DenyAllController:
    """The controller when ``[control]``/``[[roles]]`` is not configured: refuses all."""

    async def execute(self, request: CommandRequest) -> CommandResult:
        await checkpoint()
        return CommandResult(False, "remote control is not configured on this gateway")


class _Source(Protocol):
    """What the hub needs from an instrument source (:mod:`aiotmc.gateway.sources`)."""

    name: str

    def stats(self) -> InstrumentStats: ...

    @property
    def current(self) -> Instrument | None: ...


class _SpoolStats(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def dropped(self) -> int: ...

    def backlog(self) -> dict[str, int]: ...

    def errors(self) -> dict[str, int]: ...


class _Subscriber:
    __slots__ = ("dropped", "receive", "send")

    def __init__(
        self, send: MemoryObjectSendStream[Event], receive: MemoryObjectReceiveStream[Event]
    ) -> None:
        self.send = send
        self.receive = receive
        self.dropped = 0


class GatewayHub:
    """The :class:`~aiotmc.gateway.Hub` of a running gateway."""

    def __init__(
        self, *, gateway_id: str, site: str, host: str, controller: Controller | None = None
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.host = host
        self.controller: Controller = controller or DenyAllController()
        self._subscribers: dict[str, _Subscriber] = {}
        self._dropped_before: dict[str, int] = {}
        self._sources: dict[str, _Source] = {}
        self._spool: _SpoolStats | None = None
        #: The last reading of every ``site/host/instrument/channel`` (for new clients).
        self.latest: dict[str, Reading] = {}
        #: Every instrument's last known state.
        self.states: dict[str, InstrumentState] = {}

    # -- wiring (by the gateway) ------------------------------------------------------------

    def add_source(self, source: _Source) -> None:
        self._sources[source.name] = source

    def set_spool(self, spool: _SpoolStats) -> None:
        self._spool = spool

    # -- the Hub protocol -------------------------------------------------------------------

    def subscribe(
        self, name: str, *, maxsize: int = 1000
    ) -> AbstractAsyncContextManager[ObjectReceiveStream[Event]]:
        """A queue of every event published from now on (``name``: unique, for metrics)."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        return self._subscription(name, maxsize)

    @asynccontextmanager
    async def _subscription(
        self, name: str, maxsize: int
    ) -> AsyncIterator[ObjectReceiveStream[Event]]:
        if name in self._subscribers:
            raise GatewayError(f"a hub subscriber named {name!r} exists already")
        send, receive = anyio.create_memory_object_stream[Event](maxsize)
        subscriber = _Subscriber(send, receive)
        self._subscribers[name] = subscriber
        try:
            yield receive
        finally:
            del self._subscribers[name]
            self._dropped_before[name] = self._dropped_before.get(name, 0) + subscriber.dropped
            send.close()
            receive.close()

    def publish_nowait(self, event: Event) -> None:
        """Give ``event`` to every subscriber now (dropping its oldest when full)."""
        if isinstance(event, Reading):
            self.latest[event.path] = event
        elif isinstance(event, StatusEvent):
            self.states[event.instrument] = event.state
        for subscriber in self._subscribers.values():
            try:
                subscriber.send.send_nowait(event)
            except anyio.WouldBlock:
                try:
                    subscriber.receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    pass
                subscriber.dropped += 1
                try:
                    subscriber.send.send_nowait(event)
                except anyio.WouldBlock:  # pragma: no cover - we just made room
                    subscriber.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the subscriber is leaving

    async def publish(self, event: Event) -> None:
        self.publish_nowait(event)
        await checkpoint()

    def dropped(self, name: str) -> int:
        """Events dropped for subscriber ``name`` since the gateway started."""
        current = self._subscribers.get(name)
        return self._dropped_before.get(name, 0) + (current.dropped if current else 0)

    def queue_depth(self, name: str) -> int:
        """Events waiting in subscriber ``name``'s queue now."""
        current = self._subscribers.get(name)
        return 0 if current is None else current.send.statistics().current_buffer_used

    def stats(self) -> GatewayStats:
        names = set(self._subscribers) | set(self._dropped_before)
        spool = self._spool
        return GatewayStats(
            instruments={name: source.stats() for name, source in self._sources.items()},
            queue_depths={name: self.queue_depth(name) for name in self._subscribers},
            queue_dropped={name: self.dropped(name) for name in names},
            spool_size=spool.size if spool else 0,
            spool_dropped=spool.dropped if spool else 0,
            sink_backlog=spool.backlog() if spool else {},
            sink_errors=spool.errors() if spool else {},
        )

    def instrument(self, name: str) -> AbstractAsyncContextManager[Instrument]:
        source = self._sources.get(name)
        if source is None:
            raise GatewayError(f"no instrument named {name!r} on this gateway")
        return self._locked(source)

    @asynccontextmanager
    async def _locked(self, source: _Source) -> AsyncIterator[Instrument]:
        instrument = source.current
        if instrument is None or instrument.closed:
            raise GatewayError(f"instrument {source.name!r} is offline")
        async with instrument.lock():
            yield instrument
