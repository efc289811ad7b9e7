"""A minimal Hub for the alert tests (the gateway's own lives in aiotmc.gateway.hub):
per-subscriber bounded queues, drop-oldest, everything published is also recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiotmc.gateway.model import Event


class MiniHub:
    gateway_id = "gw"
    site = "lab"
    host = "bench"
    controller: Any = None

    def __init__(self) -> None:
        self.published: list[Event] = []
        self._subscribers: dict[
            str, tuple[MemoryObjectSendStream[Event], MemoryObjectReceiveStream[Event]]
        ] = {}
        self._dropped: dict[str, int] = {}

    @asynccontextmanager
    async def subscribe(
        self, name: str, *, maxsize: int = 1000
    ) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](maxsize)
        self._subscribers[name] = (send, receive)
        self._dropped.setdefault(name, 0)
        try:
            yield receive
        finally:
            del self._subscribers[name]
            send.close()
            receive.close()

    async def publish(self, event: Event) -> None:
        self.published.append(event)
        for name, (send, receive) in list(self._subscribers.items()):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                receive.receive_nowait()  # drop the oldest for this subscriber alone
                self._dropped[name] += 1
                send.send_nowait(event)
        await anyio.lowlevel.checkpoint()

    def dropped(self, name: str) -> int:
        return self._dropped.get(name, 0)
