"""The bridge's bounded publish queue and its overflow policy.

Three lanes, taken in this order:

1. *state* (retained status and discovery configs), keyed by topic: a newer message
   replaces a waiting older one, so the lane holds at most one per topic and never drops;
2. *control* (alerts and command replies), at most ``control_size``; when full, the
   oldest is dropped and counted;
3. *readings*, at most ``size``; when full, the **oldest** reading is dropped and counted
   (live monitoring wants the newest values; storage does not depend on MQTT: it is fed
   from the durable spool).

A message taken but not delivered (the broker went away) goes back to the front.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, NamedTuple

import anyio

__all__ = ["Outgoing", "PublishQueue"]


class Outgoing(NamedTuple):
    """One message to publish (``properties``: paho MQTT 5 properties, or None).

    A named tuple: one is made per reading, and a tuple is made in a third of the time of
    a frozen dataclass."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Any = None
    lane: str = "readings"


class PublishQueue:
    """Bounded, drop-oldest publish queue (see the module docstring)."""

    def __init__(self, size: int, *, control_size: int = 1000) -> None:
        self.size = size
        self.control_size = control_size
        #: Messages dropped because their lane was full, since start.
        self.dropped = 0
        self._state: OrderedDict[str, Outgoing] = OrderedDict()
        self._control: deque[Outgoing] = deque()
        self._readings: deque[Outgoing] = deque()
        self._ready: anyio.Event | None = None  # created in the loop, by get()

    def __len__(self) -> int:
        return len(self._state) + len(self._control) + len(self._readings)

    @property
    def depth(self) -> int:
        """Messages waiting (for metrics)."""
        return len(self)

    def put(self, message: Outgoing) -> None:
        """Queue ``message`` without waiting; may drop the oldest of its lane."""
        if message.lane == "state":
            self._state.pop(message.topic, None)
            self._state[message.topic] = message
        elif message.lane == "control":
            self._bounded(self._control, self.control_size, message)
        else:
            self._bounded(self._readings, self.size, message)
        self._wake()

    def _bounded(self, lane: deque[Outgoing], size: int, message: Outgoing) -> None:
        if len(lane) >= size:
            lane.popleft()
            self.dropped += 1
        lane.append(message)

    def put_back(self, message: Outgoing) -> None:
        """Return an undelivered message to the front of its lane (a newer state message
        for the same topic wins)."""
        if message.lane == "state":
            if message.topic not in self._state:
                self._state[message.topic] = message
                self._state.move_to_end(message.topic, last=False)
        else:
            lane = self._control if message.lane == "control" else self._readings
            lane.appendleft(message)
            if len(lane) > (self.control_size if lane is self._control else self.size):
                lane.pop()  # the newest: the one put back is older and goes first
                self.dropped += 1
        self._wake()

    def _wake(self) -> None:
        if self._ready is not None:
            self._ready.set()
            self._ready = None

    def get_nowait(self) -> Outgoing | None:
        if self._state:
            return self._state.popitem(last=False)[1]
        if self._control:
            return self._control.popleft()
        if self._readings:
            return self._readings.popleft()
        return None

    async def get(self) -> Outgoing:
        """The next message, waiting for one."""
        while True:
            message = self.get_nowait()
            if message is not None:
                return message
            self._ready = anyio.Event()
            await self._ready.wait()
