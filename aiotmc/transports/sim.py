"""In-process link to a simulated instrument (``SIM::<model>[::<name>]``), message level.

The fastest way to run code against a :class:`~aiotmc.sim.device.SimDevice`: no sockets,
no USB, but the same device model, latency and service requests as the other attachments.
A small clock task advances the device (pending operations, delayed answers) and delivers
its service requests to :attr:`srq` the moment they happen. It is a task of the event loop
(:mod:`aiotmc._background`), not of the caller: the link may be opened and closed in
different tasks and cancel scopes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypedDict

import anyio
from anyio.lowlevel import checkpoint

from .._background import BackgroundTask, spawn
from .._exceptions import (
    ReadTimeout,
    RemoteProtocolError,
    ResourceNotFoundError,
    SessionBrokenError,
)
from ..protocol.ieee4882 import decode_block
from ..resources import ResourceName, SimInstr
from ..srq import SrqBroadcaster
from ._block_into import deliver_block
from .base import BytesLike, Capabilities, TransportInfo
from .spec import LinkSettings, TransportSpec

if TYPE_CHECKING:
    from ..sim.device import SimDevice

__all__ = ["SimTransport", "open_sim_transport"]

_CAPABILITIES: Final = Capabilities(srq=True, read_stb=True, device_clear=True, trigger=True)


class SimTransport:
    """A :class:`~aiotmc.transports.base.MessageTransport` straight into a SimDevice."""

    def __init__(self, device: SimDevice, *, resource: str) -> None:
        self.device = device
        self._info = TransportInfo(resource=resource, kind="sim", capabilities=_CAPABILITIES)
        self._srq = SrqBroadcaster(resource)
        self._changed = anyio.Event()
        self._busy = False
        self._closed = False
        self._clock: BackgroundTask | None = None
        self._failure: Exception | None = None  # why the clock task failed
        self._unsubscribe = device.add_srq_listener(self._srq.publish)
        #: The device-clock time the clock task sleeps until (inf: until kicked).
        self._clock_until = math.inf

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster:
        """Service requests raised by the device."""
        return self._srq

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Hand one program message to the device."""
        self._begin()
        try:
            await checkpoint()
            device = self.device
            device.write(b"".join(parts))
            # wake the clock only for work due before it wakes anyway: an answer ready at
            # once needs no clock (one task wake-up per query less)
            due = device.next_deadline()
            if due is not None and due < self._clock_until:
                self._kick()
        finally:
            self._busy = False

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Wait until the device has a response ready (honours its latency)."""
        self._begin()
        try:
            message = await _within(deadline, self._next_response, self._info.resource)
        finally:
            self._busy = False
        if len(message) > max_size:
            raise RemoteProtocolError(
                f"response of {len(message)} bytes exceeds max_size={max_size}"
            )
        return message

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and receive its response (send, then receive)."""
        await self.send_message((message,), deadline=deadline)
        return await self.receive_message(max_size=max_size, deadline=deadline)

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a block response and copy its payload into ``into`` (or a new buffer)."""
        message = await self.receive_message(max_size=max_size + 32, deadline=deadline)
        payload = decode_block(message, max_size=max_size)
        return deliver_block(payload, into)

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Serial poll: the status byte with RQS (cleared by the poll, as USB488 does)."""
        await checkpoint()
        return self.device.serial_poll()

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear."""
        await checkpoint()
        self.device.device_clear()
        self._kick()

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Bus trigger."""
        await checkpoint()
        self.device.trigger()
        self._kick()

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Nothing to replace in process: check the link is open, let others run."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        await checkpoint()

    def start_clock(self) -> None:
        """Run :meth:`run_clock` in a background task of the event loop until closed
        (:func:`open_sim_transport` does). If it fails, every later operation raises
        SessionBrokenError."""
        if self._clock is None and not self._closed:
            self._clock = spawn(
                self.run_clock, name=f"aiotmc sim clock {self._info.resource}", on_error=self._fail
            )

    async def aclose(self) -> None:
        """Detach from the device and stop the clock; idempotent, completes under
        cancellation and from any task."""
        if not self._closed:
            self._closed = True
            self._unsubscribe()
            self._srq.close()
            self._kick()
            clock, self._clock = self._clock, None
            if clock is not None:
                await clock.stop()
        await checkpoint()

    # -- internals ---------------------------------------------------------------------------

    def _begin(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        self._check_clock()
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._busy = True

    def _fail(self, exc: Exception) -> None:
        self._failure = exc
        self._kick()

    def _check_clock(self) -> None:
        if self._failure is not None:
            raise SessionBrokenError(
                f"the simulator clock failed ({self._failure!r}); reopen the instrument",
                resource=self._info.resource,
            )

    def _kick(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_until(self, deadline: float | None) -> None:
        """Sleep until the device clock reaches ``deadline`` or something changes."""
        changed = self._changed
        delay = math.inf if deadline is None else max(0.0, deadline - self.device.clock())
        with anyio.move_on_after(delay):
            await changed.wait()

    async def _next_response(self) -> bytes:
        device = self.device
        while True:
            if self._closed:  # closed by another task while this one waited
                raise anyio.ClosedResourceError
            self._check_clock()
            message = device.read()
            if message is not None:
                await checkpoint()
                return message
            await self._wait_until(device.next_deadline())

    async def run_clock(self) -> None:
        """Advance the device whenever it has time-based work (runs until closed)."""
        device = self.device
        while not self._closed:
            device.poll()
            deadline = device.next_deadline()
            if deadline is not None and deadline <= device.clock():
                deadline = None  # poll() just did everything due: wait for new work
            self._clock_until = math.inf if deadline is None else deadline
            await self._wait_until(deadline)


async def _within(deadline: float, wait: Callable[[], Awaitable[bytes]], resource: str) -> bytes:
    if deadline == math.inf:
        return await wait()
    with anyio.CancelScope(deadline=deadline) as scope:
        return await wait()
    assert scope.cancelled_caught
    raise ReadTimeout(f"{resource}: no answer before the deadline")


@asynccontextmanager
async def open_sim_transport(device: SimDevice, *, resource: str) -> AsyncIterator[SimTransport]:
    """Attach to ``device`` with a clock task running beside the caller (a task of the
    event loop: the block may be exited in another task or cancel scope)."""
    transport = SimTransport(device, resource=resource)
    transport.start_clock()
    try:
        yield transport
    finally:
        await transport.aclose()


_SHARED: dict[tuple[str, str], SimDevice] = {}


def shared_device(model: str, name: str | None = None) -> SimDevice:
    """The process-wide simulated instrument ``SIM::model::name`` (created on first use).

    Every ``aiotmc.open("SIM::dmm")`` in one process talks to the same device, the way
    every connection to a bench instrument reaches the same box.
    """
    from ..sim.devices import create_device

    key = (model.lower(), (name or model).lower())
    device = _SHARED.get(key)
    if device is None:
        try:
            device = create_device(key[0])
        except ValueError as exc:
            raise ResourceNotFoundError(f"SIM::{model}: {exc}") from None
        _SHARED[key] = device
    return device


# -- registration ---------------------------------------------------------------------------


class SimOptions(TypedDict, total=False):
    """Options of ``SIM::`` resources."""

    device: SimDevice  #: attach to this device instead of the shared one the name gives


@asynccontextmanager
async def _open_sim(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[SimTransport]:
    assert isinstance(resource, SimInstr)
    device = options.get("device") or shared_device(resource.model, resource.name)
    async with open_sim_transport(device, resource=str(resource)) as sim:
        yield sim


TRANSPORT: Final = TransportSpec(
    kind="sim",
    summary="simulated instrument, in-process (aiotmc extension)",
    example="SIM::dmm",
    open=_open_sim,
    options=SimOptions,
)
"""The in-process simulator's registration (see :mod:`aiotmc.registry`)."""
