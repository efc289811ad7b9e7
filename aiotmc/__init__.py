"""aiotmc: async (asyncio and trio) access to test and measurement instruments.

>>> async with aiotmc.open("TCPIP0::127.0.0.1::5025::SOCKET") as inst:  # doctest: +SKIP
...     print(await inst.query("*IDN?"))

Public names are imported lazily (PEP 562) so that ``aiotmc.protocol`` and the
simulator models stay importable without anyio (the USB emulator process relies on it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exceptions import (
    AiotmcError,
    AiotmcTimeout,
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    GatewayError,
    InstrumentError,
    InvalidResourceName,
    LocalProtocolError,
    LockLostError,
    PermissionDeniedError,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    ResourceBusyError,
    ResourceNotFoundError,
    SessionBrokenError,
    SinkUnavailableError,
    TransportError,
    UnsupportedOperation,
    UsbStallError,
    UsbTransferError,
    WriteTimeout,
)
from ._lazy import lazy_exports
from ._types import DEFAULT, EventStatus, RenMode, ServiceRequest, StatusByte
from ._version import __version__

if TYPE_CHECKING:
    from ._log import log_to_screen
    from ._open import open, open_transport
    from .acquisition import Measurement, PeriodicAcquisition, Row, Sample, acquire, periodic
    from .discovery import discover, list_resources
    from .export import write_csv
    from .group import InstrumentGroup, Result, Results, open_many
    from .instrument import Instrument
    from .operation import OperationTiming
    from .reconnect import Reconnect
    from .resources import ResourceName, parse_resource
    from .srq import SrqBroadcaster
    from .srq_poll import SrqPoller, poll_service_requests

_LAZY: dict[str, str] = {
    "open": "._open",
    "open_transport": "._open",
    "Instrument": ".instrument",
    "list_resources": ".discovery",
    "discover": ".discovery",
    "ResourceName": ".resources",
    "parse_resource": ".resources",
    "SrqBroadcaster": ".srq",
    "InstrumentGroup": ".group",
    "Result": ".group",
    "Results": ".group",
    "open_many": ".group",
    "Measurement": ".acquisition",
    "OperationTiming": ".operation",
    "PeriodicAcquisition": ".acquisition",
    "Row": ".acquisition",
    "Sample": ".acquisition",
    "acquire": ".acquisition",
    "periodic": ".acquisition",
    "write_csv": ".export",
    "SrqPoller": ".srq_poll",
    "poll_service_requests": ".srq_poll",
    "Reconnect": ".reconnect",
    "log_to_screen": "._log",
}

__all__ = [
    "DEFAULT",
    "AiotmcError",
    "AiotmcTimeout",
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLostError",
    "EventStatus",
    "GatewayError",
    "Instrument",
    "InstrumentError",
    "InstrumentGroup",
    "InvalidResourceName",
    "LocalProtocolError",
    "LockLostError",
    "Measurement",
    "OperationTiming",
    "PeriodicAcquisition",
    "PermissionDeniedError",
    "ProtocolError",
    "ReadTimeout",
    "Reconnect",
    "RemoteProtocolError",
    "RenMode",
    "ResourceBusyError",
    "ResourceName",
    "ResourceNotFoundError",
    "Result",
    "Results",
    "Row",
    "Sample",
    "ServiceRequest",
    "SessionBrokenError",
    "SinkUnavailableError",
    "SrqBroadcaster",
    "SrqPoller",
    "StatusByte",
    "TransportError",
    "UnsupportedOperation",
    "UsbStallError",
    "UsbTransferError",
    "WriteTimeout",
    "__version__",
    "acquire",
    "discover",
    "list_resources",
    "log_to_screen",
    "open",
    "open_many",
    "open_transport",
    "parse_resource",
    "periodic",
    "poll_service_requests",
    "write_csv",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
