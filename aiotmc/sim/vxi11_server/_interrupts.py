"""The interrupt channel: what create_intr_chan asks for (:class:`Interrupts`), and
the delivery of a service request over it (one-way device_intr_srq calls)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketStream, TaskGroup

from ...protocol.oncrpc import encode_call, record_mark
from ...protocol.vxi11 import (
    DEVICE_INTR,
    DEVICE_TCP,
    VERSION,
    DeviceError,
    DeviceRemoteFunc,
    DeviceSrqParms,
    ErrorCode,
    Proc,
)
from ..rpc_server import RpcConnection

__all__ = ["Interrupts", "close_interrupts", "create_intr_chan", "deliver_srq"]


@dataclass(eq=False)
class Interrupts:
    """The interrupt channel a core connection asked for (create_intr_chan)."""

    host: str
    port: int
    stream: SocketStream | None = None  # connected on the first service request
    xid: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)


def create_intr_chan(
    channels: dict[RpcConnection, Interrupts], conn: RpcConnection, parms: DeviceRemoteFunc
) -> bytes:
    """create_intr_chan on ``conn``: its channel goes into ``channels``."""
    if conn in channels:
        return DeviceError(ErrorCode.CHANNEL_ALREADY_ESTABLISHED).encode()
    if (parms.prog_num, parms.prog_vers) != (DEVICE_INTR, VERSION):
        return DeviceError(ErrorCode.PARAMETER_ERROR).encode()
    if parms.prog_family != DEVICE_TCP:  # DEVICE_UDP: not served
        return DeviceError(ErrorCode.OPERATION_NOT_SUPPORTED).encode()
    host = str(ipaddress.IPv4Address(parms.host_addr))
    channels[conn] = Interrupts(host, parms.host_port)
    return DeviceError(0).encode()


def close_interrupts(interrupts: Interrupts, task_group: TaskGroup | None) -> None:
    """Close the channel's connection, if any, in the background (``task_group``)."""
    stream, interrupts.stream = interrupts.stream, None
    if stream is not None and task_group is not None:
        task_group.start_soon(stream.aclose)


async def deliver_srq(
    interrupts: Interrupts,
    handle: bytes,
    *,
    timeout: float,
    log: logging.Logger,
    close: Callable[[Interrupts], None],
) -> bool:
    """Call device_intr_srq (one-way) with ``handle``, connecting first if need be: True
    once sent; on failure (logged) ``close`` the channel and False."""
    async with interrupts.lock:
        try:
            with anyio.fail_after(timeout):
                if interrupts.stream is None:
                    interrupts.stream = await anyio.connect_tcp(interrupts.host, interrupts.port)
                interrupts.xid = (interrupts.xid + 1) & 0xFFFFFFFF
                call = encode_call(
                    interrupts.xid,
                    DEVICE_INTR,
                    VERSION,
                    Proc.DEVICE_INTR_SRQ,
                    DeviceSrqParms(handle).encode(),
                )
                await interrupts.stream.send(record_mark(len(call)) + call)
            return True
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            where = f"{interrupts.host}:{interrupts.port}"
            log.info("device_intr_srq to %s failed: %s", where, exc)
            close(interrupts)
            return False
