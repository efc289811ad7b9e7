"""Device locks (device_lock, create_link lockDevice): who holds the lock of each
device, and the wait for another link's lock (WAITLOCK, lock_timeout)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio

from ...protocol.vxi11 import WAITLOCK, ErrorCode
from ..rpc_server import RpcConnection
from ._links import Link

__all__ = ["Lock", "access", "locked_out", "unlock"]


@dataclass(eq=False)
class Lock:
    """The lock of one device: the link id holding it, set when it is released."""

    owner: int | None = None
    released: anyio.Event = field(default_factory=anyio.Event)


def locked_out(locks: Mapping[str, Lock], link: Link) -> bool:
    """True when another link holds the lock of ``link``'s device (no await)."""
    lock = locks.get(link.name)
    return lock is not None and lock.owner is not None and lock.owner != link.lid


async def access(
    locks: Mapping[str, Lock],
    link: Link,
    flags: int,
    lock_timeout_ms: int,
    flush: Callable[[RpcConnection], Awaitable[None]],
) -> int:
    """0 when ``link`` may use its device now, else the error code; before waiting for
    the lock, ``flush`` the link's connection."""
    lock = locks.get(link.name)
    if lock is None or lock.owner is None or lock.owner == link.lid:
        return 0
    if not flags & WAITLOCK or lock_timeout_ms == 0:
        return ErrorCode.DEVICE_LOCKED_BY_ANOTHER_LINK
    if link.conn is not None:
        await flush(link.conn)  # answers to earlier calls go out before the wait
    with anyio.move_on_after(lock_timeout_ms / 1000):
        while lock.owner is not None and lock.owner != link.lid:
            await lock.released.wait()
    if lock.owner is None or lock.owner == link.lid:
        return 0
    return ErrorCode.DEVICE_LOCKED_BY_ANOTHER_LINK


def unlock(locks: Mapping[str, Lock], link: Link) -> int:
    """Release the lock ``link`` holds (0), else the error code."""
    lock = locks.get(link.name)
    if lock is None or lock.owner != link.lid:
        return ErrorCode.NO_LOCK_HELD_BY_THIS_LINK
    lock.owner = None
    released, lock.released = lock.released, anyio.Event()
    released.set()
    return 0
