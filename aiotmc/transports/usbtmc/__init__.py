"""USBTMC / USB488 transport: a MessageTransport over any UsbPort.

:class:`UsbtmcTransport` drives the sans-IO :class:`~aiotmc.protocol.usbtmc.UsbtmcConnection`
over a :class:`~aiotmc._usb.port.UsbPort` (libusb, or the in-process
:class:`~aiotmc.sim.fake_port.FakeUsbPort`). Open it with :func:`open_usbtmc_transport`
(or :meth:`UsbtmcTransport.open`) over a port you opened, or with
:func:`open_usb_resource` by resource name: that reads GET_CAPABILITIES and starts the
interrupt-IN reader, which publishes service requests to :attr:`UsbtmcTransport.srq` and
hands READ_STATUS_BYTE answers to the waiting :meth:`~UsbtmcTransport.read_stb` by bTag,
so the two never race. The reader (and a background reconnect) are tasks of the event
loop, not of the caller: the transport may be closed from any task and cancel scope.

Cancellation and errors (``anyio.fail_after``/``move_on_after`` around any call): an
operation that stops part-way runs, shielded and bounded by ``recovery_timeout``, the
USBTMC recovery for the bTag in flight: bulk-IN abort (INITIATE_ABORT_BULK_IN, drain to a
short packet, CHECK_ABORT_BULK_IN_STATUS until not PENDING, retrying with the bTag the
device names), bulk-OUT abort (INITIATE/CHECK_ABORT_BULK_OUT + CLEAR_FEATURE(HALT)), and
device clear (INITIATE_CLEAR/CHECK_CLEAR_STATUS) when an abort fails or a message was
left half sent. If that fails too, the transport is broken: every later call raises
:class:`~aiotmc.SessionBrokenError` ("reopen the instrument"). The next exchange after a
successful recovery gets its own answer.

One job per module: ``_session`` (state, guards, recovery glue), ``_link`` (start,
reconnect, close), ``_reader`` (interrupt-IN), ``_messages`` (message and block I/O,
TRIGGER), ``_control`` (status byte, clear, remote/local, pulse), ``_vendor`` (vendor-specific
messages, class/vendor control transfers), ``_recovery`` (aborts and device
clear), ``_block_sink`` (a block's payload into the caller's buffer), ``_transport`` (the
class and ``open``), ``_opening`` (opening over a port or by resource name).
"""

from ._link import SupportsReset
from ._opening import TRANSPORT, UsbOptions, open_usb_resource, open_usbtmc_transport
from ._session import PortOpener
from ._transport import UsbtmcTransport
from ._vendor import MAX_CONTROL_LENGTH

__all__ = [
    "MAX_CONTROL_LENGTH",
    "TRANSPORT",
    "PortOpener",
    "SupportsReset",
    "UsbOptions",
    "UsbtmcTransport",
    "open_usb_resource",
    "open_usbtmc_transport",
]
