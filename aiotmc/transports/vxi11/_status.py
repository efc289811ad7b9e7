"""The status byte of a service request, read on a link of its own (one job).

:class:`StatusLink` is the second link (core channel and create_link) a transport opens on
first need to read the status byte after a service request with device_readstb, so that
the link in use is not disturbed. Its channel and link id are its own state, so it is an
object of its own rather than a layer of the transport; the transport hands
:meth:`StatusLink.status` to the interrupt listener (:mod:`.interrupt`) and closes it
with the link.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import anyio

from ..._exceptions import AiotmcError
from ...protocol.vxi11 import (
    DEVICE_CORE,
    VERSION,
    CreateLinkParms,
    CreateLinkResp,
    DeviceGenericParms,
    DeviceReadStbResp,
    Proc,
    error_for,
)
from ._wire import _SMALL_RECORD, _ms
from .rpc import RpcChannel

__all__ = ["StatusLink"]

_log = logging.getLogger("aiotmc.transports.vxi11")

_SRQ_STATUS_WAIT: Final = 2.0  # seconds for the status byte of a service request


class StatusLink:
    """A second link to the device that reads status bytes (opened on first need)."""

    def __init__(self, host: str, device: str, client_id: int, resource: str) -> None:
        self._host = host
        self._device = device
        self._client_id = client_id
        self._resource = resource
        self.port = 0  #: the core channel's TCP port (set by the transport at each connect)
        self._status_link: tuple[RpcChannel, int] | None = None

    async def status(self) -> int | None:
        """The status byte after a service request, read by device_readstb on a second
        link of its own (opened on first need), so the link in use is not disturbed."""
        try:
            with anyio.fail_after(_SRQ_STATUS_WAIT):
                if self._status_link is None or self._status_link[0].broken:
                    await self.aclose()
                    channel = await RpcChannel.connect(
                        self._host,
                        self.port,
                        prog=DEVICE_CORE,
                        vers=VERSION,
                        max_record=_SMALL_RECORD,
                        deadline=math.inf,
                        what="VXI-11 core channel (status link)",
                        resource=self._resource,
                    )
                    self._status_link = (channel, -1)
                    parms = CreateLinkParms(self._client_id, False, 0, self._device)
                    reply = CreateLinkResp.decode(
                        await channel.call(Proc.CREATE_LINK, [parms.encode()])
                    )
                    if reply.error:
                        raise error_for(reply.error, "create_link", resource=self._resource)
                    self._status_link = (channel, reply.lid)
                channel, lid = self._status_link
                poll = DeviceGenericParms(lid, 0, 0, _ms(_SRQ_STATUS_WAIT))
                stb = DeviceReadStbResp.decode(
                    await channel.call(Proc.DEVICE_READSTB, [poll.encode()])
                )
                if stb.error:
                    raise error_for(stb.error, "device_readstb", resource=self._resource)
                return stb.stb & 0xFF
        except (AiotmcError, OSError, TimeoutError) as exc:
            _log.info("%s: no status byte for a service request: %s", self._resource, exc)
            await self.aclose()
            return None

    async def aclose(self) -> None:
        """Close the status link, if open (it is opened again on next need)."""
        link, self._status_link = self._status_link, None
        if link is not None:
            await link[0].aclose()
