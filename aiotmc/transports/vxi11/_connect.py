"""Connecting a VXI-11 link: portmapper, core channel, create_link (one job).

:class:`Connecting` adds the opening of a link: the core channel's port (given, cached,
or asked of the portmapper, asked again when a cached port is refused), the core
channel, create_link (and with it the abort channel's port and the device's
maxRecvSize), then the interrupt channel (:mod:`._srq`). A layer of the transport for
the reason given in :mod:`._core`.
"""

from __future__ import annotations

import math

import anyio

from ..._exceptions import ConnectError
from ...protocol.vxi11 import (
    DEVICE_CORE,
    VERSION,
    CreateLinkParms,
    CreateLinkResp,
    Proc,
    error_for,
)
from ._srq import ServiceRequests
from ._wire import _SMALL_RECORD, MAX_RECV_SIZE_CLAMP
from .portmapper import cached_port, forget_port, lookup_port
from .rpc import RpcChannel

__all__ = ["Connecting"]


class Connecting(ServiceRequests):
    """A VXI-11 link that can open its core channel and create its link."""

    def _connect_deadline(self) -> float:
        timeout = self._connect_timeout
        return math.inf if timeout is None else anyio.current_time() + timeout

    async def _connect(self, deadline: float) -> None:
        """Open the core channel and create the link."""
        port = self._port
        from_cache = False
        if port is None:
            known = cached_port(self._host, DEVICE_CORE, VERSION, pmap_port=self._pmap_port)
            from_cache = known is not None
            port = await lookup_port(
                self._host, DEVICE_CORE, VERSION, deadline=deadline, pmap_port=self._pmap_port
            )
        try:
            core = await RpcChannel.connect(
                self._host,
                port,
                prog=DEVICE_CORE,
                vers=VERSION,
                max_record=_SMALL_RECORD,
                deadline=deadline,
                what="VXI-11 core channel",
                resource=self._resource,
            )
        except ConnectError:
            if not from_cache:
                raise
            forget_port(self._host, DEVICE_CORE, VERSION, pmap_port=self._pmap_port)
            await self._connect(deadline)  # the server moved: ask the portmapper again
            return
        try:
            parms = CreateLinkParms(
                self._client_id, self._lock_at_open, self._lock_ms, self._device
            )
            results = await core.call(
                Proc.CREATE_LINK, [parms.encode()], wait_until=self._wait_until(deadline)
            )
            reply = CreateLinkResp.decode(results)
            if reply.error:
                raise error_for(reply.error, "create_link", resource=self._resource)
        except BaseException:
            await core.aclose()
            raise
        self._core = core
        self._core_port = port
        self._status.port = port  # where the status link connects
        self._lid = reply.lid
        self._abort_port = reply.abort_port
        size = reply.max_recv_size
        self._max_recv = min(size, MAX_RECV_SIZE_CLAMP) if size > 0 else 1024
        core.max_record = max(_SMALL_RECORD, self._request_size + 1024)
        self._dirty = False
        if self._want_srq:
            await self._enable_interrupts(core, deadline)
        self._info = self._make_info()
