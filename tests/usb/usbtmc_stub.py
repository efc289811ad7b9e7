"""A minimal instrument for the USB port tests, behind the one USBTMC framing (stdlib only).

The USB side is :class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction`, as for every emulated
device; :class:`StubInstrument` is only the message-level behaviour, small enough that
the tests know every answer (and it runs under the system Python in the umockdev
process). Commands: ``*IDN?``, ``BLOCK? <n>`` (an IEEE 488.2 block of ``n`` bytes
00 01 .. FF 00 ..), ``DELAY <s>`` (answer latency), ``*STB?``; anything else ending in
``?`` answers ``0``, anything else is accepted silently. :meth:`StubInstrument.request_service`
raises an SRQ (``call model.request_service [64]`` on the umockdev control channel).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiotmc._types import BytesLike
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.sim.usbtmc_device import UsbtmcFunction

__all__ = ["StubInstrument", "create"]


class StubInstrument:
    """Answers one query at a time; a :class:`~aiotmc.sim.usbtmc_device.DeviceModel`."""

    def __init__(
        self, identity: str = "Aiotmc,Stub USBTMC,MY123,1.0", *, clock: Callable[[], float]
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.stb = 0
        self.delay = 0.0
        self._answer: bytes | None = None
        self._ready_at = 0.0
        self._listeners: list[Callable[[int], object]] = []

    def write(self, message: BytesLike) -> None:
        self._answer = None  # a new program message discards an unread answer
        head, _, arg = bytes(message[:64]).strip().decode("ascii", "replace").partition(" ")
        head = head.upper()
        if head == "*IDN?":
            answer = f"{self.identity}\n".encode()
        elif head == "BLOCK?":
            size = int(arg)
            answer = block_header(size) + (bytes(range(256)) * (size // 256 + 1))[:size] + b"\n"
        elif head == "DELAY":
            self.delay = float(arg)
            return
        elif head == "*STB?":
            answer = f"{self.stb}\n".encode()
        elif head.endswith("?"):
            answer = b"0\n"
        else:
            return
        self._answer = answer
        self._ready_at = self.clock() + self.delay

    def read(self) -> bytes | None:
        if self._answer is None or self.clock() < self._ready_at:
            return None
        answer, self._answer = self._answer, None
        return answer

    def next_deadline(self) -> float | None:
        if self._answer is not None and self._ready_at > self.clock():
            return self._ready_at
        return None

    def poll(self) -> None:
        return None

    def trigger(self) -> None:
        return None

    def device_clear(self) -> None:
        self._answer = None

    @property
    def status_byte(self) -> int:
        return self.stb

    def add_srq_listener(self, callback: Callable[[int], object]) -> Callable[[], object]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def request_service(self, stb: int = 0x40) -> None:
        """Set the status byte and request service (an SRQ notification on interrupt-IN)."""
        self.stb = stb
        for listener in list(self._listeners):
            listener(stb)


def create(config: dict[str, Any]) -> UsbtmcFunction:
    """Factory for ``python3 -m testbeds.umockdev --devices '[{"factory":
    "tests.usb.usbtmc_stub:create", "config": {...}}]'``: ``config`` holds
    :class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction` keywords (``serial``, ``pid``...)."""
    options = {"manufacturer": "Aiotmc", "product": "Stub USBTMC", "serial": "MY123", **config}
    identity = f"{options['manufacturer']},{options['product']},{options['serial']},1.0"
    return UsbtmcFunction(StubInstrument(identity, clock=time.monotonic), **options)
