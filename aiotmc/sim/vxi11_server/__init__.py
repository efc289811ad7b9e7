"""Serve simulated instruments over VXI-11 (core and abort channels, a tiny portmapper).

:class:`Vxi11Server` serves one or more :class:`~aiotmc.sim.SimDevice` under VXI-11
device names (``inst0`` by default; gateway names such as ``gpib0,5`` work the same way).
Link ids start at 0 (valid, and a case clients get wrong). With ``portmapper_port`` set
(0: any free port) it also answers PMAPPROC_GETPORT itself, over TCP and UDP on the same
port number, for tests that cannot bind port 111 and for discovery.

Server rules (issue 14): per-connection memory grows only with bytes received (records
are reassembled from received bytes, never allocated from a header, and bounded by
``max_record``); a program message split over several device_write calls is bounded by
``max_message_size``; at most ``max_connections`` connections (others are closed at
once); a connection idle for ``idle_timeout`` seconds, or whose client does not take a
reply within ``send_timeout``, is closed; hostile input is logged once per connection and
never reaches the device's error queue.

Implemented: create_link, device_write, device_read (requestSize, TERMCHRSET, END),
device_readstb, device_trigger, device_clear, device_remote, device_local, device_lock
(with WAITLOCK and lock_timeout), device_unlock, destroy_link, device_abort,
create_intr_chan / destroy_intr_chan / device_enable_srq (each service request of a
device calls device_intr_srq, one-way, on every link that enabled it). Gateway mode
(devices named ``gpibN,addr[,secondary]``): ``create_link("gpibN")`` opens an interface
link whose device_docmd carries out the VXI-11.2 bus commands on a simulated bus
(:mod:`aiotmc.sim.gpib_bus`, PASS_CONTROL included: while a device holds control, the
operations on device links answer I/O error 17); device_docmd on a device link answers
"operation not supported".

One job per module, each importing only those listed before it: :mod:`._args` (call
arguments and results on the wire), :mod:`._links` (a link's state and the wait for its
device's response), :mod:`._locks` (device locks), :mod:`._interrupts` (the interrupt
channel, SRQ delivery), :mod:`._gateway` (interface-link calls on the GPIB bus),
:mod:`._abort` (the abort channel), :mod:`._portmapper` (GETPORT, rpcbind registration),
:mod:`._core` (the core channel, :class:`~._core.CoreChannel`), :mod:`._server`
(:class:`Vxi11Server`: binding, lifecycle, device clocks; :func:`serve_vxi11`). Import
from this package.

All but the core channel are plain functions and small classes the server calls. The core
channel is the server's base class rather than an object it holds: its handlers read the
server's settings and fault hooks (``short_writes``, ``split_exact_multiple``,
``max_message_size``...) and call its connection methods (``flush``, ``receive``) on the
benchmarked device_write / device_read path, and tests replace handlers such as
``server._write`` on the instance; a separate object would need a forwarding property for
each of those and an extra lookup per call.
"""

from __future__ import annotations

from ._server import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECV_SIZE,
    Vxi11Server,
    device_names,
    serve_vxi11,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECV_SIZE",
    "Vxi11Server",
    "device_names",
    "serve_vxi11",
]
