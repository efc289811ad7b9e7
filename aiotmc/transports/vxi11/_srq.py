"""Service requests of a VXI-11 link: the interrupt channel (one job).

:class:`ServiceRequests` adds to :class:`._core.LinkCore` the set-up of the interrupt
channel when a link is created: the shared listener (:mod:`.interrupt`),
create_intr_chan and device_enable_srq, given up (the link stays, without SRQ) when the
device refuses or does not connect back in time. The status byte of each service request
is read by the link's :class:`._status.StatusLink`. A layer of the transport for the
reason given in :mod:`._core`.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Final

import anyio

from ..._exceptions import AiotmcError, ConnectionLostError
from ...protocol.vxi11 import (
    DEVICE_INTR,
    DEVICE_TCP,
    VERSION,
    DeviceEnableSrqParms,
    DeviceError,
    DeviceRemoteFunc,
    ErrorCode,
    Proc,
    error_for,
)
from ._core import LinkCore
from .interrupt import acquire, release
from .rpc import RpcChannel

__all__ = ["ServiceRequests"]

_log = logging.getLogger("aiotmc.transports.vxi11")

_INTR_SETUP_WAIT: Final = 3.0  # seconds for create_intr_chan + device_enable_srq


class ServiceRequests(LinkCore):
    """A VXI-11 link that sets up its interrupt channel."""

    async def _enable_interrupts(self, core: RpcChannel, deadline: float) -> None:
        """create_intr_chan + device_enable_srq; without them the link has no SRQ."""
        local = core.local_address
        try:
            host_addr = int(ipaddress.IPv4Address(local))
        except ValueError:
            _log.info("%s: no interrupt channel over IPv6 (%s)", self._resource, local)
            return
        interrupts = self._interrupts
        try:
            if interrupts is None:
                interrupts = await acquire(
                    local,
                    self._intr_handle,
                    self._srq,
                    resource=self._resource,
                    status=self._status.status,
                )
            # A device connects back to us in create_intr_chan; behind a firewall that can
            # hang until its TCP timeout: give up SRQ after a short while, not the link.
            until = min(self._wait_until(deadline), anyio.current_time() + _INTR_SETUP_WAIT)
            chan = DeviceRemoteFunc(host_addr, interrupts.port, DEVICE_INTR, VERSION, DEVICE_TCP)
            results = await core.call(Proc.CREATE_INTR_CHAN, [chan.encode()], wait_until=until)
            error = DeviceError.decode(results).error
            if error not in (0, ErrorCode.CHANNEL_ALREADY_ESTABLISHED):
                raise error_for(error, "create_intr_chan", resource=self._resource)
            srq = DeviceEnableSrqParms(self._lid, True, self._intr_handle)  # never empty
            results = await core.call(Proc.DEVICE_ENABLE_SRQ, [srq.encode()], wait_until=until)
            error = DeviceError.decode(results).error
            if error:
                raise error_for(error, "device_enable_srq", resource=self._resource)
        except (AiotmcError, OSError) as exc:
            if isinstance(exc, ConnectionLostError):
                raise
            _log.info("%s: no service requests: %s", self._resource, exc)
            if interrupts is not None and self._interrupts is None:
                await release(interrupts, self._intr_handle)
            return
        except BaseException:
            if interrupts is not None and self._interrupts is None:
                await release(interrupts, self._intr_handle)
            raise
        self._interrupts = interrupts
