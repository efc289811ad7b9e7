"""``aiotmc.open()``: resource name -> registry -> transport -> :class:`~aiotmc.Instrument`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._timeouts import check_timeout
from .instrument import Instrument
from .protocol import DEFAULT_MAX_MESSAGE_SIZE
from .reconnect import Reconnect, resolve_policy
from .registry import LinkSettings, registry
from .resources import ResourceName
from .transports.base import MessageTransport

__all__ = ["open", "open_transport"]


@asynccontextmanager
async def open_transport(
    resource: str | ResourceName,
    *,
    connect_timeout: float | None = 10.0,
    read_termination: str = "\n",
    encoding: str = "ascii",
    reconnect: Reconnect | bool | None = None,
    **options: Any,
) -> AsyncIterator[MessageTransport]:
    """Open the transport for ``resource`` (closed when the block exits).

    The transport is the one registered for the resource's kind (see
    :mod:`aiotmc.registry`); ``options`` are its own keyword options, checked against
    what it declares (``TypeError`` naming the accepted ones). Built-in options by kind:
    ``SIM``: ``device=`` (a SimDevice to attach instead of the shared one named by the
    resource); ``USB``: ``quirks=`` (extra quirk table entries), ``driver=`` ("auto",
    "thread", "pollfd"), ``pipeline=True`` (several bulk transfers in flight for large
    reads and uploads). ``reconnect``: see :func:`open`.
    """
    policy = resolve_policy(reconnect)
    res, spec = registry.for_resource(resource)
    spec.check_options(res, options)
    settings = LinkSettings(
        connect_timeout=connect_timeout,
        read_termination=read_termination,
        encoding=encoding,
        reconnect=policy,
    )
    async with spec.open(res, settings, options) as transport:
        yield transport


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

    Other keyword options belong to the resource's transport (see :func:`open_transport`);
    an option it does not declare raises ``TypeError`` naming the ones it accepts.

    Raises :class:`~aiotmc.InvalidResourceName` for a malformed name,
    :class:`~aiotmc.UnsupportedOperation` for a transport not built yet,
    :class:`~aiotmc.ConnectError` / :class:`~aiotmc.ConnectTimeout` when the link fails.
    ``ValueError`` for a timeout outside the rule of docs/instrument.md (seconds, 0..1000).
    """
    check_timeout(timeout)  # before any I/O: 5000 is a millisecond habit, not 83 minutes
    check_timeout(connect_timeout, name="connect_timeout")
    async with open_transport(
        resource,
        connect_timeout=connect_timeout,
        read_termination=read_termination,
        encoding=encoding,
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
