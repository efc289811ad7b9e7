"""Remote instruments over NATS: ``nats://server[:port]/<agent>/<instrument>``.

The instrument is plugged into another host, whose ``aiotmc agent`` serves it; this
transport carries every seam operation to that agent through a NATS server
(:mod:`.remote`) on aiotmc's own anyio NATS client (:mod:`.connection`), so remote
instruments work on asyncio and trio alike. See docs/distributed.md.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Final, TypedDict

from ...resources import NatsInstr, ResourceName
from ..spec import LinkSettings, TransportSpec, closing_link
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
    #: More nodes of the NATS cluster (``"host:port"``), tried when the named one is down.
    servers: Sequence[str]


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
    servers = [server, *(replace(server, host=h, port=p) for h, p in _others(options))]
    link = await RemoteTransport.attach(
        servers, resource, timeout=settings.connect_timeout, policy=settings.reconnect
    )
    async with closing_link(link) as opened:
        yield opened


def _others(options: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``servers=["host:port", ...]``: more nodes of the cluster to try."""
    out = []
    for item in options.get("servers", ()):
        host, _, port = str(item).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"servers: expected 'host:port', got {item!r}")
        out.append((host.strip("[]"), int(port)))
    return out


TRANSPORT: Final = TransportSpec(
    kind="nats",
    summary="an instrument on another host, through its aiotmc agent and a NATS server",
    example="nats://127.0.0.1:4222/bench1/dmm",
    open=open_remote,
    options=NatsOptions,
)
