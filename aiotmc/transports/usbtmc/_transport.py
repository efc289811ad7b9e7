"""The USBTMC / USB488 transport: :class:`UsbtmcTransport` and :meth:`UsbtmcTransport.open`.

The class is assembled from one layer per job: the session's state and guards
(:mod:`._session`), the link's lifecycle and reconnect (:mod:`._link`, with the
interrupt-IN reader in :mod:`._reader`), messages (:mod:`._messages`), control
requests (:mod:`._control`) and vendor-specific messages and control transfers
(:mod:`._vendor`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..._usb.port import UsbPort
from ...protocol.quirks import Quirks, quirks_for
from ._control import UsbtmcControl
from ._messages import UsbtmcMessages
from ._session import ids_from_resource
from ._vendor import UsbtmcVendor

__all__ = ["UsbtmcTransport"]


class UsbtmcTransport(UsbtmcMessages, UsbtmcControl, UsbtmcVendor):
    """A :class:`~aiotmc.transports.base.MessageTransport` over a USBTMC/USB488 interface.

    Construct with :meth:`open` / :func:`open_usbtmc_transport` (the constructor does no
    I/O and starts nothing). Options: ``max_transfer_size`` (bytes per bulk transfer,
    default 1 MiB), ``recovery_timeout`` (bound on one abort/clear recovery, 5 s),
    ``poll_interval`` and ``max_polls`` (CHECK_*_STATUS loops, 50 ms x 100 as Linux),
    ``drain_timeout`` (per bulk-IN drain read, 0.3 s), ``clear_on_open`` (device clear
    after GET_CAPABILITIES, so that a new session never reads what an earlier one left
    on the device; ``aiotmc.open`` sets it), ``reopen`` (a factory that opens the device
    again, for :meth:`reconnect`), ``reconnect`` (a
    :class:`~aiotmc.reconnect.Reconnect` policy: a lost or broken link is reopened
    before the next operation, and in the background after an unplug) and ``pipeline``
    (opt-in, default False: when the port supports it, keep several bulk transfers in
    flight for the rest of a large bulk-IN transfer whose TransferSize the quirks let us
    trust, and for the DEV_DEP_MSG_OUT transfers of a large message. Off by default:
    measured slower than one 1 MiB transfer at a time under QEMU/usbredir, umockdev and
    the in-process fake, where one large URB already keeps the endpoint busy).

    Beyond the MessageTransport seam: :meth:`set_remote`, :meth:`indicator_pulse`,
    :meth:`reconnect`, and for vendor tools :meth:`vendor_write`, :meth:`vendor_read`
    and :meth:`control_transfer`.
    """

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        port: UsbPort,
        *,
        resource: str,
        quirks: Quirks | None = None,
        **options: Any,
    ) -> AsyncIterator[UsbtmcTransport]:
        """Open a transport over an opened ``port``; closes the port on exit.

        ``quirks=None`` looks the device up in :data:`~aiotmc.protocol.quirks.KNOWN_QUIRKS`
        by the VID/PID in ``resource``. Reads GET_CAPABILITIES (a device that refuses it
        is treated as plain USBTMC) and starts the interrupt-IN reader, a task of the
        event loop: the block may be entered in one task and exited in another, and
        exiting completes under cancellation.
        """
        if quirks is None:
            quirks = quirks_for(*ids_from_resource(resource))
        transport = cls(port, resource=resource, quirks=quirks, **options)
        try:
            await transport._start()
            yield transport
        finally:
            await transport.aclose()
