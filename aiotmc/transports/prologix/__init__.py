"""GPIB through Prologix-compatible GPIB-ETHERNET adapters (Prologix, AR488 on ESP32...).

``PRLGX-TCPIP0::host::1234::12::INSTR`` (aiotmc's one-string form) is GPIB address 12
behind the adapter at ``host:1234``. Instruments on one adapter share its connection and
its lock (:mod:`._adapter`); each is a :class:`PrologixTransport` (:mod:`._transport`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio

from ...resources import PrologixInstr, ResourceName
from ..spec import LinkSettings, TransportSpec
from ._adapter import INIT, PrologixAdapter, escape
from ._transport import PrologixTransport

__all__ = ["INIT", "TRANSPORT", "PrologixAdapter", "PrologixTransport", "escape", "open_prologix"]


@asynccontextmanager
async def open_prologix(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[PrologixTransport]:
    """The registry's opener for ``PRLGX-TCPIP`` resources (connects on first use)."""
    assert isinstance(resource, PrologixInstr)
    adapter = PrologixAdapter.acquire(
        resource.host, resource.port, connect_timeout=settings.connect_timeout
    )
    transport = PrologixTransport(
        adapter,
        primary=resource.primary,
        secondary=resource.secondary,
        resource=str(resource),
        terminator=settings.read_termination.encode(settings.encoding),
    )
    try:
        yield transport
    finally:
        with anyio.CancelScope(shield=True):
            await transport.aclose()


TRANSPORT: Final = TransportSpec(
    kind="prologix-tcpip",
    summary="GPIB through a Prologix/AR488 GPIB-ETHERNET adapter",
    example="PRLGX-TCPIP0::192.0.2.9::1234::12::INSTR",
    open=open_prologix,
)
"""The Prologix transport's registration (see :mod:`aiotmc.registry`)."""
