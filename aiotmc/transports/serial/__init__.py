"""Serial ports (``ASRL/dev/ttyUSB0::INSTR``, ``ASRL1::INSTR``): RS-232/USB-serial on POSIX.

:class:`SerialTransport` is a non-blocking tty file descriptor configured with termios and
waited on with anyio (no thread; asyncio and trio); see ``_transport`` for the
resynchronisation rules and ``_settings`` for the options (PyVISA's names and values).
Windows is not supported yet (the module needs termios: ``aiotmc info`` says so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypedDict

import anyio

from ...resources import AsrlInstr, ResourceName
from ..spec import FoundResource, LinkSettings, TransportSpec, closing_link
from ._ports import SerialPort, discover_ports, list_ports
from ._settings import SerialSettings
from ._transport import FdChannel, SerialTransport, open_port

__all__ = [
    "TRANSPORT",
    "FdChannel",
    "SerialOptions",
    "SerialPort",
    "SerialSettings",
    "SerialTransport",
    "discover_ports",
    "list_ports",
    "list_serial_resources",
    "open_port",
    "open_serial",
]


class SerialOptions(TypedDict, total=False):
    """The serial transport's options for ``aiotmc.open`` (PyVISA's names and values)."""

    baud_rate: int
    data_bits: Literal[5, 6, 7, 8]
    parity: str | int
    stop_bits: float
    flow_control: str | int
    settle: float  #: quiet time (s) that ends a resynchronisation (aiotmc; default 0.1)


@asynccontextmanager
async def open_serial(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[SerialTransport]:
    """The registry's opener for ``ASRL`` resources."""
    assert isinstance(resource, AsrlInstr)
    line_options = dict(options)
    settle = line_options.pop("settle", 0.1)
    if not isinstance(settle, int | float) or isinstance(settle, bool) or not 0 <= settle <= 60:
        raise ValueError(f"{resource}: settle must be 0..60 seconds, got {settle!r}")
    try:
        line = SerialSettings.from_options(line_options)
    except ValueError as exc:
        raise ValueError(f"{resource}: {exc}") from None
    transport = await SerialTransport.open(
        resource.device,
        resource=str(resource),
        settings=line,
        terminator=settings.read_termination.encode(settings.encoding),
        reconnect=settings.reconnect,
        settle=float(settle),
    )
    async with closing_link(transport) as opened:
        yield opened


async def list_serial_resources() -> list[FoundResource]:
    """The serial ports found (:func:`discover_ports`: pyserial's ``list_ports`` when
    installed, else sysfs), as ``aiotmc list`` / ``aiotmc.list_resources()`` show them."""
    ports = await anyio.to_thread.run_sync(discover_ports)  # file reads: off the loop
    return [FoundResource(port.resource, port.summary()) for port in ports]


TRANSPORT: Final = TransportSpec(
    kind="asrl",
    summary="serial ports (termios, no thread)",
    example="ASRL/dev/ttyUSB0::INSTR",
    open=open_serial,
    options=SerialOptions,
    list_resources=list_serial_resources,
)
"""The serial transport's registration (see :mod:`aiotmc.registry`)."""
