""":class:`Vxi11Server`: the simulator as a whole. It binds the core, abort and
portmapper listeners (registering with rpcbind if asked), serves the abort and
portmapper channels, runs each device's clock and sends its service requests; the core
channel is its base class, :class:`~._core.CoreChannel`. Also :func:`serve_vxi11` and
:func:`device_names`, for ``aiotmc sim``."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import anyio
from anyio.abc import TaskGroup, UDPSocket

from ...protocol.portmap import PMAPPROC_SET, PMAPPROC_UNSET
from ..device import SimDevice
from ..rpc_server import RpcConnection, Serve
from ._abort import abort_answer
from ._core import CoreChannel
from ._interrupts import Interrupts, deliver_srq
from ._links import MIN_WAIT
from ._portmapper import bind_portmapper, portmapper_answer, rpcbind, serve_udp_portmapper

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECV_SIZE",
    "Vxi11Server",
    "device_names",
    "serve_vxi11",
]

DEFAULT_MAX_RECV_SIZE: Final = 1 << 20  #: maxRecvSize announced by create_link
DEFAULT_MAX_MESSAGE_SIZE: Final = 4 << 20  #: a program message over several device_writes


class Vxi11Server(CoreChannel):
    """Serve simulated devices over VXI-11 (async context manager).

    ``devices``: one device (served as ``inst0``) or a mapping of VXI-11 device names to
    devices. ``port``/``abort_port`` 0 pick free ports; after ``__aenter__`` the bound ones
    are in :attr:`port`, :attr:`abort_port` and :attr:`portmapper_port`.
    """

    def __init__(
        self,
        devices: SimDevice | Mapping[str, SimDevice],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        abort_port: int = 0,
        portmapper_port: int | None = None,
        max_recv_size: int = DEFAULT_MAX_RECV_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_connections: int = 64,
        idle_timeout: float = 3600.0,
        send_timeout: float = 10.0,
        register: bool = False,
    ) -> None:
        if isinstance(devices, SimDevice):
            devices = {"inst0": devices}
        super().__init__(
            devices,
            abort_port=abort_port,
            max_recv_size=max_recv_size,
            max_message_size=max_message_size,
            host=host,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
        )
        self.port = port
        self.portmapper_port = portmapper_port
        self.register = register
        #: True while the core port is registered with the host's portmapper (rpcbind).
        self.registered = False
        self._udp: UDPSocket | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self.srqs_sent = 0  #: device_intr_srq calls sent

    # -- names -----------------------------------------------------------------------------

    def resource(self, device: str = "inst0", *, explicit_port: bool = True) -> str:
        """The VISA resource name of ``device``; ``explicit_port`` uses ``host,port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f",{self.port}" if explicit_port else ""
        return f"TCPIP0::{host}{port}::{device}::INSTR"

    # -- lifecycle -------------------------------------------------------------------------

    async def _bind(self) -> list[tuple[socket.socket, str, Serve]]:
        for name, device in self.devices.items():
            self._unsubscribe.append(device.add_srq_listener(partial(self._on_srq, name)))
        core = await self._listen(self.port)
        self.port = core.getsockname()[1]
        abort = await self._listen(self.abort_port)
        self.abort_port = abort.getsockname()[1]
        served: list[tuple[socket.socket, str, Serve]] = [
            (core, "core", self._serve_core),
            (abort, "abort", self._serve_abort),
        ]
        if self.register:
            self.registered = await rpcbind(PMAPPROC_SET, self.port, self.log)
        if self.portmapper_port is not None:
            pmap, self._udp = await bind_portmapper(self.host, self.portmapper_port, self._listen)
            self.portmapper_port = pmap.getsockname()[1]
            served.append((pmap, "portmapper", self._serve_portmapper))
        return served

    def _start_more(self, task_group: TaskGroup) -> None:
        if self._udp is not None:
            task_group.start_soon(
                serve_udp_portmapper, self._udp, self._portmapper_answer, self.record_call, self.log
            )
        for device in {id(d): d for d in self.devices.values()}.values():
            task_group.start_soon(self._clock, device)

    async def _clock(self, device: SimDevice) -> None:
        """Poll ``device`` when its next deadline comes, so operations complete (and
        service requests fire) on time with no client call in progress."""
        changed = anyio.Event()

        def wake() -> None:
            changed.set()

        remove = device.add_deadline_listener(wake)
        try:
            while True:
                due = device.next_deadline()
                wait = math.inf if due is None else max(MIN_WAIT, due - device.clock())
                with anyio.move_on_after(wait):
                    await changed.wait()
                changed = anyio.Event()
                try:
                    device.poll()
                except Exception:  # a bug in a device model: log it, keep serving
                    self.log.exception("device failed in poll()")
        finally:
            remove()

    async def _close_listeners(self) -> None:
        if self.registered:
            self.registered = False
            with anyio.CancelScope(shield=True):
                await rpcbind(PMAPPROC_UNSET, self.port, self.log)
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        for remove in unsubscribe:
            remove()
        udp, self._udp = self._udp, None
        if udp is not None:
            await udp.aclose()
        await super()._close_listeners()

    # -- portmapper ------------------------------------------------------------------------

    async def _serve_portmapper(self, conn: RpcConnection) -> None:
        await self._loop(conn, 4096, self._portmapper_call)

    async def _portmapper_call(
        self, conn: RpcConnection, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> bytes:
        return self._portmapper_answer(xid, prog, vers, proc, args)

    def _portmapper_answer(
        self, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> bytes:
        return portmapper_answer(
            xid, prog, vers, proc, args, core_port=self.port, abort_port=self.abort_port
        )

    # -- abort channel ---------------------------------------------------------------------

    async def _serve_abort(self, conn: RpcConnection) -> None:
        await self._loop(conn, 4096, self._abort_call)

    async def _abort_call(
        self, conn: RpcConnection, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> bytes:
        return abort_answer(self._links, xid, prog, vers, proc, args)

    # -- service requests ------------------------------------------------------------------

    def _on_srq(self, name: str, status: int) -> None:
        """The device ``name`` requests service: call device_intr_srq on every link that
        enabled it (one-way calls, in the background)."""
        for link in list(self._links.values()):
            if link.name != name or link.srq_handle is None or link.conn is None:
                continue
            interrupts = self._interrupts.get(link.conn)
            if interrupts is not None and self._task_group is not None:
                self._task_group.start_soon(self._deliver_srq, interrupts, link.srq_handle)

    async def _deliver_srq(self, interrupts: Interrupts, handle: bytes) -> None:
        timeout, close = self.send_timeout, self._close_interrupts
        if await deliver_srq(interrupts, handle, timeout=timeout, log=self.log, close=close):
            self.srqs_sent += 1


def device_names(count: int, *, gateway: bool = False, first_address: int = 1) -> list[str]:
    """VXI-11 names for ``count`` devices: ``inst0``, ``inst1``... or, for a gateway,
    ``gpib0,N`` from ``first_address`` (at most 31 addresses: 0..30)."""
    if not gateway:
        return [f"inst{i}" for i in range(count)]
    if first_address < 0 or first_address + count - 1 > 30:
        raise ValueError(f"{count} GPIB devices from address {first_address} do not fit 0..30")
    return [f"gpib0,{first_address + i}" for i in range(count)]


@asynccontextmanager
async def serve_vxi11(
    devices: Sequence[SimDevice] | Mapping[str, SimDevice],
    *,
    gateway: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    portmapper_port: int | None = None,
    register: bool = False,
    max_connections: int = 64,
    idle_timeout: float = 3600.0,
    send_timeout: float = 10.0,
) -> AsyncIterator[tuple[Vxi11Server, list[str]]]:
    """Serve ``devices`` over VXI-11 on one host (for ``aiotmc sim``): yields the server
    and each device's resource name, in order.

    A sequence gets :func:`device_names` (``inst0``...; ``gateway``: ``gpib0,1``... and an
    interface link ``gpib0``); a mapping keeps its names. The names carry the core port
    (``host,port``) unless a portmapper answers for it (``portmapper_port`` or
    ``register``).
    """
    if not isinstance(devices, Mapping):
        devices = dict(zip(device_names(len(devices), gateway=gateway), devices, strict=True))
    async with Vxi11Server(
        devices,
        host=host,
        port=port,
        portmapper_port=portmapper_port,
        register=register,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
    ) as server:
        explicit = portmapper_port is None and not server.registered
        yield server, [server.resource(name, explicit_port=explicit) for name in devices]
