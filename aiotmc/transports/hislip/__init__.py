"""HiSLIP (IVI-6.1) transport: ``TCPIP0::host::hislip0[,port]::INSTR``.

See docs/hislip.md for what exists and what does not yet.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypedDict

from ...protocol.hislip import DEFAULT_MAX_MESSAGE_SIZE
from ...resources import ResourceName, TcpipHislip
from ..lan_discovery import list_lan_resources
from ..spec import LinkSettings, TransportSpec, closing_link
from ._link import HislipTransport
from ._security import security_from_options

__all__ = ["TRANSPORT", "HislipOptions", "HislipTransport", "open_hislip"]


class HislipOptions(TypedDict, total=False):
    """Keyword options of a HiSLIP resource."""

    max_hislip_message_size: int  #: largest HiSLIP message the server may send us (1 MiB)
    overlapped: bool  #: overlapped mode if the server offers it (default: synchronized)
    tls: bool  #: True: require encryption; False: refuse it; absent: when needed
    tls_ca_file: str  #: CA bundle (PEM) that signed the instrument's certificate
    tls_fingerprint: str  #: pin the certificate's SHA-256 (hex); alone, skips the CA check
    tls_insecure: bool  #: encrypt without verifying the certificate (explicit opt-out)
    tls_context: ssl.SSLContext  #: your own client context (overrides the three above)
    tls_server_name: str  #: name to verify the certificate against (default: the host)
    username: str  #: SASL user name (implies TLS)
    password: str  #: SASL password (never logged nor shown)
    sasl_mechanism: str  #: force SCRAM-SHA-256, PLAIN or ANONYMOUS (default: best offered)


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
        security=security_from_options(options),
        reconnect=settings.reconnect,
    )
    async with closing_link(link) as opened:
        yield opened


TRANSPORT: Final = TransportSpec(
    kind="hislip",
    summary="HiSLIP 2.0 over TCP (synchronized and overlapped mode, TLS and SASL)",
    example="TCPIP0::192.0.2.7::hislip0::INSTR",
    open=open_hislip,
    options=HislipOptions,
    list_resources=list_lan_resources,
)
"""The HiSLIP transport's registration (see :mod:`aiotmc.registry`)."""
