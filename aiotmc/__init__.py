"""aiotmc: async (asyncio and trio) access to test and measurement instruments.

>>> async with aiotmc.open("TCPIP0::127.0.0.1::5025::SOCKET") as inst:  # doctest: +SKIP
...     print(await inst.query("*IDN?"))

Public names are imported lazily (PEP 562) so that ``aiotmc.protocol`` and the
simulator models stay importable without anyio (the USB emulator process relies on it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    AiotmcError,
    AiotmcTimeout,
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    InstrumentError,
    InvalidResourceName,
    LocalProtocolError,
    PermissionDeniedError,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceBusyError,
    ResourceNotFoundError,
    SessionBrokenError,
    TransportError,
    UnsupportedOperation,
    UsbStallError,
    UsbTransferError,
    WriteTimeout,
)
from ._types import DEFAULT, EventStatus, ServiceRequest, StatusByte
from ._version import __version__

if TYPE_CHECKING:
    from ._open import open, open_transport
    from .instrument import Instrument
    from .resources import ResourceName, parse_resource
    from .srq import SrqBroadcaster

_LAZY: dict[str, str] = {
    "open": "._open",
    "open_transport": "._open",
    "Instrument": ".instrument",
    "ResourceName": ".resources",
    "parse_resource": ".resources",
    "SrqBroadcaster": ".srq",
}

__all__ = [
    "DEFAULT",
    "AiotmcError",
    "AiotmcTimeout",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLostError",
    "EventStatus",
    "Instrument",
    "InstrumentError",
    "InvalidResourceName",
    "LocalProtocolError",
    "PermissionDeniedError",
    "ProtocolError",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResourceBusyError",
    "ResourceName",
    "ResourceNotFoundError",
    "ServiceRequest",
    "SessionBrokenError",
    "SrqBroadcaster",
    "StatusByte",
    "TransportError",
    "UnsupportedOperation",
    "UsbStallError",
    "UsbTransferError",
    "WriteTimeout",
    "__version__",
    "open",
    "open_transport",
    "parse_resource",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiotmc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
