"""The control operations of a VXI-11 link (one job).

:class:`ControlOperations` adds the operations that are not message transfer, one
core-channel call each: device_readstb, device_trigger, device_clear,
device_remote/device_local, device_docmd (gateway bus commands), device_lock and
device_unlock. Each claims the link first (:meth:`._resync.Resynchronising._enter`). A
layer of the transport for the reason given in :mod:`._core`.
"""

from __future__ import annotations

import math
from typing import Final

from ..._types import BytesLike, RenMode
from ...protocol.vxi11 import (
    WAITLOCK,
    DeviceDocmdParms,
    DeviceDocmdResp,
    DeviceError,
    DeviceGenericParms,
    DeviceLink,
    DeviceLockParms,
    DeviceReadStbResp,
    Proc,
    error_for,
)
from ._resync import Resynchronising
from ._wire import REPLY_MARGIN, _ms

__all__ = ["ControlOperations"]

_REMOTE_MODES: Final = frozenset(
    {RenMode.ASSERT, RenMode.ASSERT_ADDRESS, RenMode.ASSERT_LLO, RenMode.ASSERT_ADDRESS_LLO}
)


class ControlOperations(Resynchronising):
    """Status byte, trigger, clear, remote/local, bus commands and locks."""

    async def _simple(self, proc: Proc, name: str, deadline: float) -> memoryview:
        core = await self._enter(deadline)
        try:
            parms = DeviceGenericParms(self._lid, self._flags, self._lock_ms, self._io_ms(deadline))
            return await core.call(proc, [parms.encode()], wait_until=self._wait_until(deadline))
        finally:
            self._busy = False

    async def _checked(self, proc: Proc, name: str, deadline: float) -> None:
        error = DeviceError.decode(await self._simple(proc, name, deadline)).error
        if error:
            raise error_for(error, name, resource=self._resource)

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """device_readstb."""
        results = await self._simple(Proc.DEVICE_READSTB, "device_readstb", deadline)
        reply = DeviceReadStbResp.decode(results)
        if reply.error:
            raise error_for(reply.error, "device_readstb", resource=self._resource)
        return reply.stb & 0xFF

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """device_trigger."""
        await self._checked(Proc.DEVICE_TRIGGER, "device_trigger", deadline)

    async def clear(self, *, deadline: float = math.inf) -> None:
        """device_clear: the device empties its queues; the link is in step afterwards."""
        await self._checked(Proc.DEVICE_CLEAR, "device_clear", deadline)

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """device_remote for the asserting modes (VXI-11 remote also disables local
        controls, i.e. includes lockout), device_local for the others."""
        if RenMode(mode) in _REMOTE_MODES:
            await self._checked(Proc.DEVICE_REMOTE, "device_remote", deadline)
        else:
            await self._checked(Proc.DEVICE_LOCAL, "device_local", deadline)

    async def docmd(
        self, cmd: int, data_in: BytesLike = b"", *, datasize: int = 1, deadline: float = math.inf
    ) -> bytes:
        """device_docmd: a gateway bus command (VXI-11.2, :class:`~aiotmc.protocol.vxi11.Docmd`)
        on this link (an interface link such as ``gpib0``); returns data_out.

        ``data_in`` is in network order, ``datasize`` the size of one element. A link that
        does not take the command raises :class:`~aiotmc.UnsupportedOperation` (error 8).
        See :mod:`aiotmc.transports.vxi11.gateway` for the commands by name.
        """
        core = await self._enter(deadline)
        try:
            parms = DeviceDocmdParms(
                self._lid,
                self._flags,
                self._io_ms(deadline),
                self._lock_ms,
                cmd,
                True,
                datasize,
                data_in,
            )
            results = await core.call(
                Proc.DEVICE_DOCMD, [parms.encode()], wait_until=self._wait_until(deadline)
            )
        finally:
            self._busy = False
        reply = DeviceDocmdResp.decode(results)
        if reply.error:
            raise error_for(reply.error, "device_docmd", resource=self._resource)
        return bytes(reply.data_out)

    async def lock(self, *, timeout: float | None = None, deadline: float = math.inf) -> None:
        """device_lock: exclusive access for this link across clients (VISA's exclusive lock).

        ``timeout`` (seconds): how long the device waits for another link's lock (WAITLOCK);
        None: the link's ``lock_timeout``. Raises :class:`~aiotmc.ResourceBusyError` when
        another link still holds it. Not the Instrument's in-process task lock.
        """
        wait = self._lock_timeout if timeout is None else timeout
        if wait < 0:
            raise ValueError("timeout must be >= 0")
        core = await self._enter(deadline)
        try:
            flags = WAITLOCK if wait > 0 else 0
            parms = DeviceLockParms(self._lid, flags, _ms(wait))
            until = deadline + wait + REPLY_MARGIN
            results = await core.call(Proc.DEVICE_LOCK, [parms.encode()], wait_until=until)
        finally:
            self._busy = False
        error = DeviceError.decode(results).error
        if error:
            raise error_for(error, "device_lock", resource=self._resource)

    async def unlock(self, *, deadline: float = math.inf) -> None:
        """device_unlock (LocalProtocolError when this link holds no lock)."""
        core = await self._enter(deadline)
        try:
            link = DeviceLink(self._lid).encode()
            results = await core.call(
                Proc.DEVICE_UNLOCK, [link], wait_until=self._wait_until(deadline)
            )
        finally:
            self._busy = False
        error = DeviceError.decode(results).error
        if error:
            raise error_for(error, "device_unlock", resource=self._resource)
