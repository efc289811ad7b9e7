"""Remote instruments over NATS: ``nats://server[:port]/<agent>/<instrument>``.

The instrument is plugged into another host, whose ``aiotmc agent`` serves it; this
transport carries every seam operation to that agent through a NATS server
(:mod:`.remote`) on aiotmc's own anyio NATS client (:mod:`.connection`), so remote
instruments work on asyncio and trio alike. See docs/distributed.md.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypedDict

import anyio

from ...resources import NatsInstr, ResourceName
from ..spec import LinkSettings, TransportSpec
from .connection import NatsConnection, NatsServer, Subscription
from .remote import RemoteTransport

__all__ = [
    "TRANSPORT",
    "NatsConnection",
    "NatsOptions",
    "NatsServer",
    "RemoteTransport",
    "Subscription",
    "open_remote",
]


class NatsOptions(TypedDict, total=False):
    """Login to the NATS server (never part of the resource name, never logged)."""

    user: str
    password: str
    token: str
    #: TLS: a CA file (PEM) to verify the server, or a ready ``ssl.SSLContext``.
    tls_ca: str
    tls: ssl.SSLContext


@asynccontextmanager
async def open_remote(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[RemoteTransport]:
    """The registry's opener: connect to the server, ask the agent, yield the link."""
    assert isinstance(resource, NatsInstr)
    tls: ssl.SSLContext | None = options.get("tls")
    if tls is None and options.get("tls_ca"):
        tls = ssl.create_default_context(cafile=options["tls_ca"])
    server = NatsServer(
        resource.host,
        resource.port,
        user=options.get("user"),
        password=options.get("password"),
        token=options.get("token"),
        tls=tls,
    )
    nc = await NatsConnection.connect(
        server, timeout=settings.connect_timeout, name=f"aiotmc {resource}"
    )
    try:
        link = await RemoteTransport.attach(nc, resource, timeout=settings.connect_timeout)
        try:
            yield link
        finally:
            with anyio.CancelScope(shield=True):
                await link.aclose()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.aclose()


TRANSPORT: Final = TransportSpec(
    kind="nats",
    summary="an instrument on another host, through its aiotmc agent and a NATS server",
    example="nats://127.0.0.1:4222/bench1/dmm",
    open=open_remote,
    options=NatsOptions,
)
