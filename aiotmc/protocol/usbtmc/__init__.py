"""USBTMC 1.0 host side, sans-IO: bulk framing, bTags, class requests, capabilities.

Theory of operation (h11 style). :class:`UsbtmcConnection` never does I/O and never
looks at a clock. The transport asks it for bytes and control requests and feeds back
what the device sent:

* ``send_message(data, end=...)`` returns the DEV_DEP_MSG_OUT transfers to write, one per
  ``max_transfer_size`` chunk (EOM only on the last, zero padding to 4 bytes); never one
  header per packet.
* ``request_response(max_bytes)`` returns the REQUEST_DEV_DEP_MSG_IN to write. Then, until
  :class:`EndOfMessage`: ``next_event()``; on :data:`NEED_DATA` read
  ``next_read_size()`` bytes from bulk-IN and ``receive_bulk_in(data)``; on
  :class:`ResponseData` use ``data``; on :class:`NeedRequest` call ``request_response``
  again (the response continues in another transfer).
* Class requests are data: methods return :class:`~aiotmc.protocol.events.ControlRequest`
  values, module functions parse the replies.

A read ends a USB transfer when it is short (fewer bytes than asked, possibly zero).
The connection sizes reads so that a well-behaved device always ends a transfer inside
one read, and copes with the quirks in :class:`~aiotmc.protocol.quirks.Quirks`.

Every state change happens through the table in :mod:`._state`. A receive error moves the
connection to the sticky ``ERROR`` state; the transport then runs the abort (or clear)
sequence and calls :meth:`UsbtmcConnection.reset`.

Errors: :class:`~aiotmc.LocalProtocolError` when the caller breaks the rules,
:class:`~aiotmc.RemoteProtocolError` when the device does. Anything else is a bug.

One job per module (h11 style): :mod:`._wire` (bulk headers, codes, constants),
:mod:`._events` (what ``next_event`` returns), :mod:`._requests` (class control requests),
:mod:`._parsers` (their replies, capabilities), :mod:`._state` (the state table),
:mod:`._connection` (:class:`UsbtmcConnection`). Import from this package.
"""

from __future__ import annotations

from ..framing import NEED_DATA
from ._connection import UsbtmcConnection
from ._events import EndOfMessage, Event, NeedRequest, ResponseData
from ._parsers import (
    CheckAbortReply,
    CheckClearReply,
    InitiateAbortReply,
    UsbtmcCapabilities,
    parse_capabilities,
    parse_check_abort_bulk_in,
    parse_check_abort_bulk_out,
    parse_check_clear_status,
    parse_initiate_abort,
    parse_status,
)
from ._requests import (
    check_abort_bulk_in_status_request,
    check_abort_bulk_out_status_request,
    check_clear_status_request,
    clear_feature_endpoint_halt_request,
    endpoint_request,
    get_capabilities_request,
    indicator_pulse_request,
    initiate_abort_bulk_in_request,
    initiate_abort_bulk_out_request,
    initiate_clear_request,
    interface_request,
)
from ._state import UsbtmcState
from ._wire import (
    ATTR_EOM,
    ATTR_TERM_CHAR,
    DEFAULT_MAX_TRANSFER_SIZE,
    HEADER_SIZE,
    REQUEST_TYPE_ENDPOINT,
    REQUEST_TYPE_INTERFACE,
    BulkHeader,
    MsgID,
    UsbtmcRequest,
    UsbtmcStatus,
    pack_header,
    unpack_header,
)

__all__ = [
    "ATTR_EOM",
    "ATTR_TERM_CHAR",
    "DEFAULT_MAX_TRANSFER_SIZE",
    "HEADER_SIZE",
    "NEED_DATA",
    "REQUEST_TYPE_ENDPOINT",
    "REQUEST_TYPE_INTERFACE",
    "BulkHeader",
    "CheckAbortReply",
    "CheckClearReply",
    "EndOfMessage",
    "Event",
    "InitiateAbortReply",
    "MsgID",
    "NeedRequest",
    "ResponseData",
    "UsbtmcCapabilities",
    "UsbtmcConnection",
    "UsbtmcRequest",
    "UsbtmcState",
    "UsbtmcStatus",
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
    "pack_header",
    "parse_capabilities",
    "parse_check_abort_bulk_in",
    "parse_check_abort_bulk_out",
    "parse_check_clear_status",
    "parse_initiate_abort",
    "parse_status",
    "unpack_header",
]
