"""aiotmc exceptions as VISA status codes (``VI_ERROR_TMO`` for a timeout...)."""

from __future__ import annotations

import anyio
from pyvisa.constants import StatusCode

import aiotmc

__all__ = ["status_for"]

#: Most specific first: the first class the exception is an instance of wins.
_CODES: tuple[tuple[type[BaseException], StatusCode], ...] = (
    (TimeoutError, StatusCode.error_timeout),  # ReadTimeout, WriteTimeout, ConnectTimeout
    (aiotmc.InvalidResourceName, StatusCode.error_invalid_resource_name),
    (aiotmc.ResourceNotFoundError, StatusCode.error_resource_not_found),
    (aiotmc.ResourceBusyError, StatusCode.error_resource_busy),
    (aiotmc.PermissionDeniedError, StatusCode.error_resource_busy),
    (aiotmc.ConnectError, StatusCode.error_resource_not_found),
    (aiotmc.ConnectionLostError, StatusCode.error_connection_lost),
    (aiotmc.SessionBrokenError, StatusCode.error_connection_lost),
    (aiotmc.UnsupportedOperation, StatusCode.error_nonsupported_operation),
    (aiotmc.LocalProtocolError, StatusCode.error_invalid_parameter),
    (aiotmc.RemoteProtocolError, StatusCode.error_io),
    (aiotmc.TransportError, StatusCode.error_io),
    (anyio.ClosedResourceError, StatusCode.error_invalid_object),
    (ValueError, StatusCode.error_invalid_parameter),
    (TypeError, StatusCode.error_invalid_parameter),
)


def status_for(exc: BaseException) -> StatusCode:
    """The VISA status code that says what ``exc`` says (``VI_ERROR_SYSTEM_ERROR`` if none)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return StatusCode.error_system_error
