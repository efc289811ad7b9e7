"""VXI-11 (``TCPIP0::host[,port][::inst0][::INSTR]``): an async ONC-RPC client, anyio only.

See docs/vxi11.md. :class:`Vxi11Transport` is the link; :data:`TRANSPORT` registers it for
``tcpip-instr`` resources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypedDict

from ...resources import ResourceName, TcpipInstr
from ..spec import FoundResource, LinkSettings, TransportSpec, closing_link
from .discovery import discover
from .transport import DEFAULT_REQUEST_SIZE, REPLY_MARGIN, Vxi11Transport

__all__ = [
    "DEFAULT_REQUEST_SIZE",
    "REPLY_MARGIN",
    "TRANSPORT",
    "Vxi11ListOptions",
    "Vxi11Options",
    "Vxi11Transport",
]


class Vxi11Options(TypedDict, total=False):
    """Options of ``TCPIP::host::INSTR`` (VXI-11) resources."""

    port: int  #: the core channel's TCP port: skips the portmapper (also ``host,port``)
    portmapper_port: int  #: where the portmapper listens (111)
    lock_timeout: float  #: seconds the device waits for another link's lock (0: fail at once)
    request_size: int  #: device_read requestSize in bytes (1 MiB)
    term_char: str | None  #: end reads at this character too (TERMCHRSET); None: END only
    lock: bool  #: open with the device locked for this link (create_link lockDevice)
    pipeline: bool  #: queries send device_write and device_read together (one round trip; True)
    srq: bool  #: set up the interrupt channel for service requests (True)


class Vxi11ListOptions(TypedDict, total=False):
    """Options of ``aiotmc.list_resources()`` / ``aiotmc.discover()`` for VXI-11: nothing
    is asked unless hosts or a broadcast address are named."""

    vxi11_hosts: Sequence[str] | str  #: hosts, IPv4 addresses, CIDR subnets (or "a,b,c")
    vxi11_broadcast: str | None  #: also one GETPORT to this broadcast address (opt-in)
    vxi11_timeout: float  #: seconds to wait for answers (1.0)
    vxi11_portmapper_port: int  #: the portmappers' UDP port (111)


async def _list_vxi11(
    *,
    vxi11_hosts: Sequence[str] | str = (),
    vxi11_broadcast: str | None = None,
    vxi11_timeout: float = 1.0,
    vxi11_portmapper_port: int = 111,
) -> list[FoundResource]:
    if isinstance(vxi11_hosts, str):
        vxi11_hosts = [h.strip() for h in vxi11_hosts.split(",") if h.strip()]
    return await discover(
        vxi11_hosts,
        port=vxi11_portmapper_port,
        timeout=vxi11_timeout,
        broadcast=vxi11_broadcast,
    )


@asynccontextmanager
async def _open_vxi11(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[Vxi11Transport]:
    assert isinstance(resource, TcpipInstr)
    term = options.get("term_char")
    if term is not None:
        encoded = term.encode(settings.encoding)
        if len(encoded) != 1:
            raise ValueError(f"term_char must be one byte, got {term!r}")
    transport = await Vxi11Transport.connect(
        resource.host,
        device=resource.lan_device_name,
        port=options.get("port", resource.port),
        pmap_port=options.get("portmapper_port", 111),
        resource=str(resource),
        lock_timeout=options.get("lock_timeout", 0.0),
        request_size=options.get("request_size", DEFAULT_REQUEST_SIZE),
        term_char=None if term is None else encoded[0],
        lock_at_open=options.get("lock", False),
        pipeline=options.get("pipeline", True),
        srq=options.get("srq", True),
        connect_timeout=settings.connect_timeout,
        reconnect=settings.reconnect,
    )
    async with closing_link(transport) as opened:
        yield opened


TRANSPORT: Final = TransportSpec(
    kind="tcpip-instr",
    summary="VXI-11 (ONC-RPC) LAN instruments and gateways",
    example="TCPIP0::192.0.2.7::inst0::INSTR",
    open=_open_vxi11,
    options=Vxi11Options,
    list_resources=_list_vxi11,
    list_options=Vxi11ListOptions,
)
"""The VXI-11 transport's registration (see :mod:`aiotmc.registry`)."""
