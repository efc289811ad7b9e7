"""Raw-socket SCPI over TCP (``TCPIP0::host::port::SOCKET``, port 5025 by convention).

:class:`SocketTransport` is the link (:mod:`.transport`, which describes its layers);
:func:`connect_socket` opens a TCP connection (:mod:`._connect`; the VXI-11, HiSLIP and
Prologix clients use it too); :data:`TRANSPORT` registers the transport for
``tcpip-socket`` resources (this module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from ...resources import ResourceName, TcpipSocket
from ..spec import LinkSettings, TransportSpec, closing_link
from ._connect import DEFAULT_PORT, connect_socket
from .transport import SocketTransport

__all__ = ["DEFAULT_PORT", "SocketTransport", "connect_socket"]


# -- registration ---------------------------------------------------------------------------


@asynccontextmanager
async def _open_tcp(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[SocketTransport]:
    assert isinstance(resource, TcpipSocket)
    tcp = await SocketTransport.connect(
        resource.host,
        resource.port,
        resource=str(resource),
        terminator=settings.read_termination.encode(settings.encoding),
        connect_timeout=settings.connect_timeout,
        reconnect=settings.reconnect,
    )
    async with closing_link(tcp) as opened:
        yield opened


TRANSPORT: Final = TransportSpec(
    kind="tcpip-socket",
    summary="SCPI over a raw TCP socket",
    example="TCPIP0::192.0.2.7::5025::SOCKET",
    open=_open_tcp,
)
"""The raw-socket transport's registration (see :mod:`aiotmc.registry`)."""
