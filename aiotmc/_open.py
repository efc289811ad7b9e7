"""``aiotmc.open()``: resource name -> transport -> :class:`~aiotmc.Instrument`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._exceptions import UnsupportedOperation
from .instrument import Instrument
from .protocol import DEFAULT_MAX_MESSAGE_SIZE
from .reconnect import Reconnect, resolve_policy
from .resources import ResourceName, SimInstr, TcpipSocket, UsbInstr, parse_resource
from .transports.base import MessageTransport

__all__ = ["open", "open_transport"]

_OPTIONS: dict[str, frozenset[str]] = {
    "sim": frozenset({"device"}),
    "usb": frozenset({"quirks", "driver", "pipeline"}),
}


@asynccontextmanager
async def open_transport(
    resource: str | ResourceName,
    *,
    connect_timeout: float | None = 10.0,
    read_termination: str = "\n",
    reconnect: Reconnect | bool | None = None,
    **options: Any,
) -> AsyncIterator[MessageTransport]:
    """Open the transport for ``resource`` (closed when the block exits).

    Options by kind: ``SIM``: ``device=`` (a SimDevice to attach instead of the shared one
    named by the resource); ``USB``: ``quirks=`` (extra quirk table entries), ``driver=``
    ("auto", "thread", "pollfd"), ``pipeline=True`` (several bulk transfers in flight for
    large reads and uploads). ``reconnect``: see :func:`open`.
    """
    policy = resolve_policy(reconnect)
    res = parse_resource(resource) if isinstance(resource, str) else resource
    allowed = _OPTIONS.get(res.kind, frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{res}: unexpected option(s) {', '.join(unknown)} for a {res.kind} resource"
            + (f" (accepted: {', '.join(sorted(allowed))})" if allowed else "")
        )
    if isinstance(res, TcpipSocket):
        from .transports.tcp import SocketTransport

        tcp = await SocketTransport.connect(
            res.host,
            res.port,
            resource=str(res),
            terminator=read_termination.encode("ascii"),
            connect_timeout=connect_timeout,
            reconnect=policy,
        )
        try:
            yield tcp
        finally:
            with anyio.CancelScope(shield=True):
                await tcp.aclose()
    elif isinstance(res, SimInstr):
        from .transports.sim import open_sim_transport, shared_device

        device = options.pop("device", None) or shared_device(res.model, res.name)
        async with open_sim_transport(device, resource=str(res)) as sim:
            yield sim
    elif isinstance(res, UsbInstr):
        from .transports.usbtmc import open_usb_resource

        async with open_usb_resource(
            res, connect_timeout=connect_timeout, reconnect=policy, **options
        ) as usb:
            yield usb
    else:
        raise UnsupportedOperation(
            f"{res}: the {res.kind} transport is not implemented yet "
            "(supported: TCPIP::host::port::SOCKET, USB::...::INSTR, SIM::model)"
        )


@asynccontextmanager
async def open(
    resource: str | ResourceName,
    *,
    timeout: float | None = 10.0,
    connect_timeout: float | None = 10.0,
    read_termination: str = "\n",
    write_termination: str = "\n",
    encoding: str = "ascii",
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    srq_poll_interval: float | None = None,
    reconnect: Reconnect | bool | None = None,
    **options: Any,
) -> AsyncIterator[Instrument]:
    """Open an instrument: ``async with aiotmc.open("TCPIP0::host::5025::SOCKET") as inst:``.

    ``srq_poll_interval`` (seconds) opts in to service requests on transports without an
    SRQ channel (raw sockets): a background task polls the status byte at that interval
    under the instrument's lock (see :mod:`aiotmc.srq_poll`). Ignored where the transport
    has its own SRQ channel; ``ValueError`` if it is not positive.

    ``reconnect`` opts in to automatic reconnection (``True``, or a
    :class:`~aiotmc.reconnect.Reconnect` policy with attempts and backoff): after the
    link drops, the operation that was on the wire fails with ConnectionLostError (it is
    never replayed) and the next one reconnects first, a bounded number of times; a
    replugged USB device is reopened by its resource name. ``SIM::`` links never drop.
    See docs/reliability.md.

    Raises :class:`~aiotmc.InvalidResourceName` for a malformed name,
    :class:`~aiotmc.UnsupportedOperation` for a transport not built yet,
    :class:`~aiotmc.ConnectError` / :class:`~aiotmc.ConnectTimeout` when the link fails.
    """
    async with open_transport(
        resource,
        connect_timeout=connect_timeout,
        read_termination=read_termination,
        reconnect=reconnect,
        **options,
    ) as transport:
        instrument = Instrument(
            transport,
            timeout=timeout,
            read_termination=read_termination,
            write_termination=write_termination,
            encoding=encoding,
            max_message_size=max_message_size,
        )
        try:
            if srq_poll_interval is not None and transport.srq is None:
                from .srq_poll import poll_service_requests

                async with poll_service_requests(instrument, srq_poll_interval):
                    yield instrument
            else:
                yield instrument
        finally:
            await instrument.aclose()
