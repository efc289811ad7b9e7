"""USBTMC class control requests (and the standard CLEAR_FEATURE(ENDPOINT_HALT)) as data.

Each function returns the :class:`~aiotmc.protocol.events.ControlRequest` to run; the
replies are decoded by the functions in :mod:`._parsers`.
"""

from __future__ import annotations

from ..events import ControlRequest
from ._wire import REQUEST_TYPE_ENDPOINT, REQUEST_TYPE_INTERFACE, UsbtmcRequest

__all__ = [
    "check_abort_bulk_in_status_request",
    "check_abort_bulk_out_status_request",
    "check_clear_status_request",
    "clear_feature_endpoint_halt_request",
    "endpoint_request",
    "get_capabilities_request",
    "indicator_pulse_request",
    "initiate_abort_bulk_in_request",
    "initiate_abort_bulk_out_request",
    "initiate_clear_request",
    "interface_request",
]


def interface_request(request: int, interface: int, length: int, value: int = 0) -> ControlRequest:
    """A class request to ``interface`` that reads ``length`` bytes (USBTMC and USB488)."""
    return ControlRequest(
        request_type=REQUEST_TYPE_INTERFACE,
        request=request,
        value=value,
        index=interface,
        length=length,
    )


def endpoint_request(request: int, endpoint: int, length: int, value: int = 0) -> ControlRequest:
    """A class request to ``endpoint`` that reads ``length`` bytes (the abort requests)."""
    return ControlRequest(
        request_type=REQUEST_TYPE_ENDPOINT,
        request=request,
        value=value,
        index=endpoint,
        length=length,
    )


def initiate_abort_bulk_out_request(tag: int, endpoint: int) -> ControlRequest:
    """INITIATE_ABORT_BULK_OUT for the transfer with ``tag`` on ``endpoint``."""
    return endpoint_request(UsbtmcRequest.INITIATE_ABORT_BULK_OUT, endpoint, 2, tag)


def check_abort_bulk_out_status_request(endpoint: int) -> ControlRequest:
    """CHECK_ABORT_BULK_OUT_STATUS."""
    return endpoint_request(UsbtmcRequest.CHECK_ABORT_BULK_OUT_STATUS, endpoint, 8)


def initiate_abort_bulk_in_request(tag: int, endpoint: int) -> ControlRequest:
    """INITIATE_ABORT_BULK_IN for the response requested with ``tag``."""
    return endpoint_request(UsbtmcRequest.INITIATE_ABORT_BULK_IN, endpoint, 2, tag)


def check_abort_bulk_in_status_request(endpoint: int) -> ControlRequest:
    """CHECK_ABORT_BULK_IN_STATUS."""
    return endpoint_request(UsbtmcRequest.CHECK_ABORT_BULK_IN_STATUS, endpoint, 8)


def initiate_clear_request(interface: int) -> ControlRequest:
    """INITIATE_CLEAR."""
    return interface_request(UsbtmcRequest.INITIATE_CLEAR, interface, 1)


def check_clear_status_request(interface: int) -> ControlRequest:
    """CHECK_CLEAR_STATUS."""
    return interface_request(UsbtmcRequest.CHECK_CLEAR_STATUS, interface, 2)


def get_capabilities_request(interface: int) -> ControlRequest:
    """GET_CAPABILITIES (0x18 bytes)."""
    return interface_request(UsbtmcRequest.GET_CAPABILITIES, interface, 0x18)


def indicator_pulse_request(interface: int) -> ControlRequest:
    """INDICATOR_PULSE (blink the device's activity light)."""
    return interface_request(UsbtmcRequest.INDICATOR_PULSE, interface, 1)


def clear_feature_endpoint_halt_request(endpoint: int) -> ControlRequest:
    """Standard CLEAR_FEATURE(ENDPOINT_HALT) for ``endpoint`` (ports offer ``clear_halt``)."""
    return ControlRequest(request_type=0x02, request=0x01, value=0, index=endpoint, length=0)
