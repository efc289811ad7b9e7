"""Bringing a VXI-11 link back in step: resynchronisation and reconnection (one job).

:class:`Resynchronising` adds :meth:`_enter`, which every operation starts with: it claims
the link and, before the operation, ends what an earlier one left. Calls given up
(cancelled, or no reply in time) are ended by device_abort on the abort channel (opened
on first need), then device_clear empties the device's queues; a read or write that
failed part-way is followed by device_clear alone; a stream out of step (broken, or too
many unanswered calls) is replaced by a new connection and link (:meth:`reconnect`,
under the ``reconnect=`` policy), then device_clear. A layer of the transport for the
reason given in :mod:`._core`.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import anyio

from ..._exceptions import AiotmcError, ConnectError
from ...protocol.vxi11 import (
    DEVICE_ASYNC,
    VERSION,
    DeviceError,
    DeviceGenericParms,
    DeviceLink,
    Proc,
    error_for,
)
from ...reconnect import retry_connect
from ._connect import Connecting
from ._wire import _ABORT_WAIT, _SMALL_RECORD
from .rpc import RpcChannel

__all__ = ["Resynchronising"]

_log = logging.getLogger("aiotmc.transports.vxi11")

_MAX_ABANDONED: Final = 3  # unanswered calls before the link is replaced instead


class Resynchronising(Connecting):
    """A VXI-11 link that brings itself in step before each operation."""

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Replace the connection and the link now."""
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        try:
            await self._replace(deadline)
        finally:
            self._busy = False

    async def _drop(self) -> None:
        core, self._core = self._core, None
        abort, self._abort = self._abort, None
        for channel in (abort, core):
            if channel is not None:
                await channel.aclose()

    async def _replace(self, deadline: float) -> None:
        await self._drop()
        if self._policy is None:
            await self._connect(min(deadline, self._connect_deadline()))
        else:

            async def attempt() -> None:
                await self._connect(min(deadline, self._connect_deadline()))

            await retry_connect(self._policy, attempt, resource=self._resource, deadline=deadline)
        self.reconnects += 1

    async def _enter(self, deadline: float) -> RpcChannel:
        """Claim the link and bring it in step for a new operation."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._busy = True
        try:
            core = self._core
            if core is None or core.broken or core.abandoned > _MAX_ABANDONED:
                await self._replace(deadline)
                # the device's queues outlive the link: an answer to a query sent on the
                # old link may still be there
                assert self._core is not None
                await self._device_clear(self._core, deadline)
            elif core.abandoned:
                await self._send_abort(deadline)
                await self._device_clear(core, deadline)  # late replies are skipped first
            elif self._dirty:
                await self._device_clear(core, deadline)
        except BaseException:
            self._busy = False
            raise
        assert self._core is not None
        return self._core

    async def _device_clear(self, core: RpcChannel, deadline: float) -> None:
        self.clears += 1
        parms = DeviceGenericParms(self._lid, self._flags, self._lock_ms, self._io_ms(deadline))
        results = await core.call(
            Proc.DEVICE_CLEAR, [parms.encode()], wait_until=self._wait_until(deadline)
        )
        error = DeviceError.decode(results).error
        if error:
            raise error_for(error, "device_clear", resource=self._resource)
        self._dirty = False

    async def _send_abort(self, deadline: float) -> None:
        """device_abort on the abort channel, best effort and briefly (opened lazily)."""
        if self._abort_refused or not self._abort_port:
            return
        self.aborts += 1
        with anyio.CancelScope(deadline=min(deadline, anyio.current_time() + _ABORT_WAIT)):
            try:
                if self._abort is None or self._abort.broken:
                    self._abort = await RpcChannel.connect(
                        self._host,
                        self._abort_port,
                        prog=DEVICE_ASYNC,
                        vers=VERSION,
                        max_record=_SMALL_RECORD,
                        deadline=math.inf,
                        what="VXI-11 abort channel",
                        resource=self._resource,
                    )
                link = DeviceLink(self._lid).encode()
                results = await self._abort.call(Proc.DEVICE_ABORT, [link])
                error = DeviceError.decode(results).error
                if error:
                    _log.debug("%s: device_abort answered error %d", self._resource, error)
            except ConnectError as exc:
                _log.info("%s: no abort channel (%s); waiting instead", self._resource, exc)
                self._abort_refused = True
            except (AiotmcError, OSError) as exc:
                _log.info("%s: device_abort failed: %s", self._resource, exc)
                if self._abort is not None:
                    await self._abort.aclose()
                    self._abort = None
