"""The FIFO gate that serializes exchanges on one simulated device across connections
and servers (anyio; no checkpoint when uncontended)."""

from __future__ import annotations

from collections import deque
from weakref import WeakKeyDictionary

import anyio

from .device import SimDevice

__all__ = ["Gate", "device_locks"]


class Gate:
    """A FIFO lock handed from holder to next waiter; no checkpoint when uncontended."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        if not self.held:
            self.held = True
            return
        event = anyio.Event()
        self.waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release()  # it was handed to us as we were cancelled: pass it on
            else:
                self.waiters.remove(event)
            raise

    def release(self) -> None:
        if self.waiters:
            self.waiters.popleft().set()  # stays held: ownership moves to that waiter
        else:
            self.held = False


class DeviceLocks:
    """One gate per device, shared by every live server serving it (refcounted)."""

    def __init__(self) -> None:
        self._gates: WeakKeyDictionary[SimDevice, tuple[Gate, int]] = WeakKeyDictionary()

    def acquire(self, device: SimDevice) -> Gate:
        gate, users = self._gates.get(device) or (Gate(), 0)
        self._gates[device] = (gate, users + 1)
        return gate

    def release(self, device: SimDevice) -> None:
        entry = self._gates.get(device)
        if entry is None:
            return
        gate, users = entry
        if users <= 1:
            del self._gates[device]
        else:
            self._gates[device] = (gate, users - 1)


device_locks = DeviceLocks()
