"""Serve a simulated instrument over HiSLIP (IVI-6.1) on 127.0.0.1, synchronized mode.

:class:`HislipServer` accepts sessions of two connections each (Initialize on the
synchronous channel, AsyncInitialize with the session id on the asynchronous one) and
serves one :class:`~aiotmc.sim.SimDevice`: Data/DataEnd program messages, responses
split to the client's maximum message size and tagged with the MessageID of the message
that asked, Trigger, device clear (AsyncDeviceClear ... DeviceClearAcknowledge on the
synchronous channel), AsyncStatusQuery (MAV also while a sent response has not been
reported delivered), AsyncServiceRequest latched until the next status query (one
requested meanwhile follows the status response if the device still requests service),
AsyncRemoteLocalControl, AsyncMaximumMessageSize, and AsyncLock / AsyncLockInfo: exclusive
and named shared locks between sessions, waited for up to the requested timeout (locks are
bookkeeping only: a session without the lock is not held back).

Synchronized mode (the default): a new message that arrives while an answer is still
pending interrupts it (IEEE 488.2 query interrupted): the answer is dropped, Interrupted and
AsyncInterrupted are sent. Overlapped mode (``overlapped=True`` offers it; the client picks
it at device clear): messages queue and run one after another, each answer tagged with its
message's MessageID, so a client may send many queries before reading any answer.

Lenient by default where pyvisa-py is known to be wrong: RMT-delivered, MessageID gaps,
status-query MessageIDs and messages above our maximum size are counted
(:attr:`HislipServer.counters`), never rejected. ``strict=True`` refuses them with a
HiSLIP Error instead, and the session goes on (docs/hislip.md, "Strict mode").

Bounded per client (issue 14): headers are checked against ``max_message_size`` before
any payload is kept, a program message is limited to ``max_input`` bytes (Error
"message too large", the message is dropped, the device's error queue is untouched),
``max_connections`` connections, ``init_timeout`` to complete Initialize, ``idle_timeout``
on an idle synchronous channel, ``send_timeout`` for a client that does not read.

HiSLIP 2.0 security (``tls=`` a server ``ssl.SSLContext``): AsyncInitializeResponse says
a secure connection is supported, AsyncStartTLS / StartTLS upgrade the two channels,
``require_tls`` demands it (InitializeResponse encryption bit; a program message on a
plain session is a FatalError; AsyncEndTLS is refused), AsyncEndTLS / EndTLS go back to
plaintext otherwise, and ``users={"name": "password"}`` requires SASL client
authentication (SCRAM-SHA-256 or PLAIN; ANONYMOUS is offered only without a user table)
before any program message is accepted.

The package, one job per module, each importing only those listed after it:
:mod:`.server` (:class:`HislipServer`: settings, lifecycle, accepting connections and
the initialization handshake), :mod:`._sync` (the synchronous channel), :mod:`._async`
(the asynchronous channel and service requests), :mod:`._answers` (the answer pump),
:mod:`._security` (TLS and SASL), :mod:`._locks` (locks between sessions),
:mod:`._session` (a session's state, the part of the server its handlers use, sending).
The handlers are plain functions taking the server and the session; the server is typed
by a protocol (:class:`._session.ServerState`), so nothing imports :mod:`.server` back.
Import :class:`HislipServer` from this package.
"""

from __future__ import annotations

from .server import HislipServer

__all__ = ["HislipServer"]
