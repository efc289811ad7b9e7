"""GPIB through Prologix-compatible adapters (Prologix, AR488) on TCP and on serial ports.

``PRLGX-TCPIP0::host::1234::12::INSTR`` (aiotmc's one-string form) is GPIB address 12
behind the adapter at ``host:1234``; ``PRLGX-ASRL0::/dev/ttyUSB0::12::INSTR`` behind a
GPIB-USB adapter or an AR488 on that serial port. Instruments on one adapter share its
connection and its lock (:mod:`._adapter`); each is a :class:`PrologixTransport`
(:mod:`._transport`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypedDict

import anyio

from ...resources import PrologixAsrlInstr, PrologixInstr, ResourceName
from .._bytestream import ByteChannel
from ..serial import Backend, SerialSettings, line_opener
from ..spec import LinkSettings, TransportSpec, closing_link
from ._adapter import INIT, Connector, PrologixAdapter, escape
from ._transport import PrologixTransport

__all__ = [
    "INIT",
    "TRANSPORT",
    "TRANSPORT_ASRL",
    "PrologixAdapter",
    "PrologixOptions",
    "PrologixSerialOptions",
    "PrologixTransport",
    "escape",
    "open_address",
    "open_on_adapter",
    "open_prologix",
    "open_prologix_serial",
    "serial_connector",
]


class PrologixOptions(TypedDict, total=False):
    """Options of a Prologix GPIB-ETHERNET adapter's instruments."""

    srq_interval: float  #: seconds between ``++srq`` polls while subscribed (0.05)


@asynccontextmanager
async def open_on_adapter(
    *,
    host: str,
    port: int,
    primary: int,
    secondary: int | None,
    resource: str,
    settings: LinkSettings,
    srq_interval: float | None = None,
    connect: Connector | None = None,
) -> AsyncIterator[PrologixTransport]:
    """The instrument at ``primary`` (``secondary``) behind the adapter at ``host:port``
    (a serial adapter: ``connect`` opens its line), shared with the instruments already
    open on that adapter; ``resource`` is the name the link reports."""
    adapter = PrologixAdapter.acquire(
        host,
        port,
        connect_timeout=settings.connect_timeout,
        connect=connect,
        srq_interval=srq_interval,
    )
    transport = PrologixTransport(
        adapter,
        primary=primary,
        secondary=secondary,
        resource=resource,
        terminator=settings.read_termination.encode(settings.encoding),
    )
    async with closing_link(transport) as opened:
        yield opened


@asynccontextmanager
async def open_prologix(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[PrologixTransport]:
    """The registry's opener for ``PRLGX-TCPIP`` resources (connects on first use)."""
    assert isinstance(resource, PrologixInstr)
    async with open_address(
        resource,
        adapter=resource.host,
        port=resource.port,
        serial=False,
        primary=resource.primary,
        secondary=resource.secondary,
        settings=settings,
        options=options,
    ) as link:
        yield link


TRANSPORT: Final = TransportSpec(
    kind="prologix-tcpip",
    summary="GPIB through a Prologix/AR488 GPIB-ETHERNET adapter",
    example="PRLGX-TCPIP0::192.0.2.9::1234::12::INSTR",
    open=open_prologix,
    options=PrologixOptions,
)
"""The Prologix transport's registration (see :mod:`aiotmc.registry`)."""


class PrologixSerialOptions(TypedDict, total=False):
    """Options of a serial Prologix/AR488 adapter (a Prologix GPIB-USB ignores the rate)."""

    baud_rate: int  #: default 115200 (AR488's default)
    srq_interval: float  #: seconds between ``++srq`` polls while subscribed (0.05)
    serial_backend: Backend  #: "auto" (pyserial on Windows, termios elsewhere), "posix", "pyserial"


def serial_connector(device: str, baud_rate: object = 115200, backend: str = "auto") -> Connector:
    """How to open a serial adapter's line with the serial transport's ``backend``
    (``ValueError`` for a bad ``baud_rate`` or backend, ``ImportError`` naming the extra
    when pyserial is asked for and missing)."""
    line = SerialSettings.from_options({"baud_rate": baud_rate})
    open_line = line_opener(backend)

    async def connect(deadline: float) -> tuple[ByteChannel, Callable[[], None]]:
        port = open_line(device, line)
        await anyio.lowlevel.checkpoint()
        return port.channel, port.close

    return connect


@asynccontextmanager
async def open_prologix_serial(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[PrologixTransport]:
    """The registry's opener for ``PRLGX-ASRL`` resources (opens the port on first use)."""
    assert isinstance(resource, PrologixAsrlInstr)
    async with open_address(
        resource,
        adapter=resource.device,
        port=0,
        serial=True,
        primary=resource.primary,
        secondary=resource.secondary,
        settings=settings,
        options=options,
    ) as link:
        yield link


@asynccontextmanager
async def open_address(
    resource: object,
    *,
    adapter: str,
    port: int,
    serial: bool,
    primary: int,
    secondary: int | None,
    settings: LinkSettings,
    options: Mapping[str, Any],
) -> AsyncIterator[PrologixTransport]:
    """The instrument at ``primary`` (``secondary``) behind the adapter at ``adapter``:
    a host with ``port``, or with ``serial`` a serial port's path. ``options`` are an
    ``aiotmc.open`` call's (``srq_interval``; a serial adapter's ``baud_rate`` and
    ``serial_backend``); errors in them name ``resource``."""
    connect = None
    if serial:
        try:
            connect = serial_connector(
                adapter, options.get("baud_rate", 115200), options.get("serial_backend", "auto")
            )
        except ValueError as exc:
            raise ValueError(f"{resource}: {exc}") from None
        except ImportError as exc:  # pyserial asked for, not installed
            raise ImportError(f"{resource}: {exc}") from None
    async with open_on_adapter(
        host=adapter,
        port=port,
        primary=primary,
        secondary=secondary,
        resource=str(resource),
        settings=settings,
        srq_interval=options.get("srq_interval"),
        connect=connect,
    ) as link:
        yield link


TRANSPORT_ASRL: Final = TransportSpec(
    kind="prologix-asrl",
    summary="GPIB through a Prologix GPIB-USB / AR488 adapter on a serial port",
    example="PRLGX-ASRL0::/dev/ttyUSB0::12::INSTR",
    open=open_prologix_serial,
    options=PrologixSerialOptions,
)
"""The serial Prologix transport's registration (see :mod:`aiotmc.registry`)."""
