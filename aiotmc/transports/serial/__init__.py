"""Serial ports (``ASRL/dev/ttyUSB0::INSTR``, ``ASRL1::INSTR`` = ``COM1`` on Windows).

:class:`SerialTransport` frames messages over a port: on POSIX a non-blocking tty file
descriptor configured with termios and waited on with anyio (``_posix``: no thread;
asyncio and trio); on Windows, or anywhere with ``serial_backend="pyserial"``, pyserial's
blocking calls in anyio worker threads (``_pyserial``; the ``serial`` extra). See
``_transport`` for the resynchronisation rules and ``_settings`` for the options
(PyVISA's names and values).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypedDict

import anyio

from ...resources import AsrlInstr, ResourceName
from ..spec import FoundResource, LinkSettings, TransportSpec, closing_link
from ._ports import SerialPort, discover_ports, list_ports
from ._pyserial import unavailable as _pyserial_unavailable
from ._settings import SerialSettings
from ._transport import Backend, Port, SerialTransport, choose_backend, port_opener

if sys.platform != "win32":  # termios and fcntl: POSIX only
    from ._posix import FdChannel, open_port

__all__ = [
    "TRANSPORT",
    "Backend",
    "FdChannel",
    "Port",
    "SerialOptions",
    "SerialPort",
    "SerialSettings",
    "SerialTransport",
    "discover_ports",
    "line_opener",
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
    serial_backend: Backend  #: "auto" (pyserial on Windows, termios elsewhere), "posix", "pyserial"


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
    backend = line_options.pop("serial_backend", "auto")
    try:
        if choose_backend(backend) == "pyserial" and (why := _pyserial_unavailable()):
            raise ImportError(f"{resource}: {why}")
    except ValueError as exc:
        raise ValueError(f"{resource}: {exc}") from None
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
        backend=backend,
    )
    async with closing_link(transport) as opened:
        yield opened


def line_opener(backend: str) -> Callable[[str, SerialSettings], Port]:
    """What opens a port with ``backend`` (``"auto"``, ``"posix"``, ``"pyserial"``), for
    links that run their own framing on the line (a Prologix/AR488 adapter): ValueError
    for an unknown or impossible backend, ImportError with the install hint when pyserial
    is asked for and missing."""
    if choose_backend(backend) == "pyserial" and (why := _pyserial_unavailable()):
        raise ImportError(why)
    return port_opener(backend)


async def list_serial_resources() -> list[FoundResource]:
    """The serial ports found (:func:`discover_ports`: pyserial's ``list_ports`` when
    installed, else sysfs), as ``aiotmc list`` / ``aiotmc.list_resources()`` show them."""
    ports = await anyio.to_thread.run_sync(discover_ports)  # file reads: off the loop
    return [FoundResource(port.resource, port.summary()) for port in ports]


def _unavailable() -> str | None:
    """On Windows the serial transport needs pyserial (the ``serial`` extra)."""
    return _pyserial_unavailable() if sys.platform == "win32" else None


TRANSPORT: Final = TransportSpec(
    kind="asrl",
    summary=(
        "serial ports (pyserial in worker threads)"
        if sys.platform == "win32"
        else "serial ports (termios, no thread; pyserial optional)"
    ),
    example="ASRL/dev/ttyUSB0::INSTR",
    open=open_serial,
    options=SerialOptions,
    list_resources=list_serial_resources,
    unavailable=_unavailable,
)
"""The serial transport's registration (see :mod:`aiotmc.registry`)."""
