"""A minimal in-test Hub (the protocol of aiotmc.gateway.model.Hub), until gwcore's is merged."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiotmc.gateway.control import Refusal, refuse
from aiotmc.gateway.model import CommandRequest, CommandResult, Controller, Event

from .broker import HOST, SITE


class RefuseAll:
    """A controller that runs nothing."""

    async def execute(self, request: CommandRequest) -> CommandResult:
        return refuse(Refusal.NOT_ALLOWED, "no remote control here")


class LocalHub:
    """Fan-out to bounded per-subscriber queues; a full queue drops its oldest event."""

    def __init__(
        self,
        *,
        gateway_id: str = "gw-test",
        site: str = SITE,
        host: str = HOST,
        controller: Controller | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.host = host
        self.controller: Controller = controller or RefuseAll()
        self._subscribers: dict[
            str, tuple[MemoryObjectSendStream[Event], MemoryObjectReceiveStream[Event]]
        ] = {}
        self._dropped: Counter[str] = Counter()

    @asynccontextmanager
    async def subscribe(
        self, name: str, *, maxsize: int = 1000
    ) -> AsyncIterator[ObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](maxsize)
        self._subscribers[name] = (send, receive)
        try:
            async with receive:
                yield receive
        finally:
            del self._subscribers[name]
            send.close()

    async def publish(self, event: Event) -> None:
        for name, (send, receive) in list(self._subscribers.items()):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                receive.receive_nowait()
                self._dropped[name] += 1
                send.send_nowait(event)

    def dropped(self, name: str) -> int:
        return self._dropped[name]
