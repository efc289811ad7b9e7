"""HiSLIP (IVI-6.1) transport: ``TCPIP0::host::hislip0[,port]::INSTR``.

See docs/hislip.md for what exists and what does not yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypedDict

from ...protocol.hislip import DEFAULT_MAX_MESSAGE_SIZE
from ...resources import ResourceName, TcpipHislip
from ..spec import LinkSettings, TransportSpec, closing_link
from ._link import HislipTransport

__all__ = ["TRANSPORT", "HislipOptions", "HislipTransport", "open_hislip"]


class HislipOptions(TypedDict, total=False):
    """Keyword options of a HiSLIP resource."""

    max_hislip_message_size: int  #: largest HiSLIP message the server may send us (1 MiB)
    overlapped: bool  #: overlapped mode if the server offers it (default: synchronized)


@asynccontextmanager
async def open_hislip(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[HislipTransport]:
    """Open a HiSLIP session (both channels); close it when the block ends."""
    assert isinstance(resource, TcpipHislip)
    link = await HislipTransport.connect(
        resource.host,
        resource.port,
        resource.session_name,
        resource=str(resource),
        connect_timeout=settings.connect_timeout,
        max_message_size=int(options.get("max_hislip_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
        overlapped=bool(options.get("overlapped", False)),
    )
    async with closing_link(link) as opened:
        yield opened


TRANSPORT: Final = TransportSpec(
    kind="hislip",
    summary="HiSLIP 1.1 over TCP (synchronized and overlapped mode)",
    example="TCPIP0::192.0.2.7::hislip0::INSTR",
    open=open_hislip,
    options=HislipOptions,
)
"""The HiSLIP transport's registration (see :mod:`aiotmc.registry`)."""
