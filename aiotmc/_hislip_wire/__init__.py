"""One HiSLIP connection on a non-blocking socket, shared by the client and the simulator.

* :mod:`.channel`: :class:`Channel`, whole messages in and out, cancellation-safe (its
  waits are the event loop's, :func:`aiotmc._loops.boundary_waiter`);
* :mod:`.tls`: the TLS layer that StartTLS puts between the socket and the framing.
"""

from __future__ import annotations

from .channel import Channel

__all__ = ["Channel"]
