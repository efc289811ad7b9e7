"""The seam every transport implements: a connected, exclusive, message-level link.

An :class:`~aiotmc.Instrument` talks to exactly one :class:`MessageTransport`. The
transport frames messages (by terminator on byte streams, by EOM on USBTMC), executes
device clear / trigger / status-byte reads where the bus has them, and keeps itself
consistent when an operation is cancelled part-way (see docs/cancellation.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._loops import EarlyStart
from .._types import BytesLike, RenMode

if TYPE_CHECKING:
    from ..srq import SrqBroadcaster

__all__ = [
    "BytesLike",
    "Capabilities",
    "EarlyExchange",
    "MessageTransport",
    "RenMode",
    "SupportsBlockProgress",
    "SupportsBlockingIO",
    "SupportsDeviceLock",
    "SupportsEarlyExchange",
    "SupportsIndicatorPulse",
    "SupportsPipelining",
    "SupportsReadTermination",
    "SupportsReconnect",
    "SupportsRemoteLocal",
    "SupportsVendorMessages",
    "TransportInfo",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a transport can do besides sending and receiving messages."""

    srq: bool = False  #: asynchronous service requests (USB488 interrupt-IN, simulator)
    read_stb: bool = False  #: a status-byte read that does not use the message channel
    device_clear: bool = False  #: a bus-level device clear
    trigger: bool = False  #: a bus-level trigger (USB488 TRIGGER, GPIB GET)
    remote_local: bool = False  #: REN / GTL / LLO (:class:`SupportsRemoteLocal`)
    indicator_pulse: bool = False  #: blink the device's indicator (:class:`SupportsIndicatorPulse`)
    vendor_messages: bool = False  #: vendor-specific messages (:class:`SupportsVendorMessages`)
    locking: bool = False  #: locks across clients (:class:`SupportsDeviceLock`)
    eom: bool = False  #: the bus marks the end of each message (USBTMC EOM)
    pipelining: bool = False  #: queries in flight together (:class:`SupportsPipelining`)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportInfo:
    """Static facts about an open link."""

    resource: str  #: canonical resource name
    kind: str  #: "tcp", "usbtmc", "sim", ...
    capabilities: Capabilities
    details: Mapping[str, str] = field(default_factory=dict)  #: e.g. vendor/product ids


@runtime_checkable
class MessageTransport(Protocol):
    """A connected link to one instrument.

    Not safe for concurrent use: the :class:`~aiotmc.Instrument` serializes whole exchanges,
    and a transport raises ``anyio.BusyResourceError`` if two tasks use it at once.

    Cancellation contract: an operation cancelled part-way leaves the transport either
    consistent (the next exchange gets its own answer) or marked so that its next use
    resynchronises (reconnect, USBTMC abort/clear) or raises
    :class:`~aiotmc.SessionBrokenError`. Never a crossed answer.

    Deadlines: every operation takes ``deadline``, an absolute ``anyio.current_time()``
    value (``math.inf``: none). When it passes while the operation waits, the transport
    recovers as for a cancellation and raises :class:`~aiotmc.WriteTimeout` (sending) or
    :class:`~aiotmc.ReadTimeout` (receiving). Transports open a cancel scope only around
    real waits: an anyio scope with a deadline costs more than a whole loopback round
    trip's worth of Python on the hot path.
    """

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        ...

    @property
    def srq(self) -> SrqBroadcaster | None:
        """The service-request fan-out if the transport has an SRQ channel, else ``None``."""
        ...

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """Send the concatenation of ``parts`` (never copied together) as one message.

        ``end=False`` sends without END/EOM (more of the same message follows). The caller
        includes the write terminator in ``parts`` where the bus needs one.
        """
        ...

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Receive one whole response message, terminator included if the device sent one.

        Raises :class:`~aiotmc.RemoteProtocolError` if it exceeds ``max_size`` (the rest of
        the message is discarded, the link stays usable).
        """
        ...

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message`` and receive the one response message it asks for.

        The same as :meth:`send_message` then :meth:`receive_message`, errors and
        cancellation included; transports fuse the two where that saves time (the query
        hot path).
        """
        ...

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a response message holding one IEEE 488.2 block; return the payload.

        The payload is read straight into ``into`` (or a new buffer) with exact-size reads;
        the trailing terminator is consumed. Definite (``#<n><len>``) and indefinite (``#0``)
        blocks are accepted. A message that is not a block, or a block larger than
        ``max_size`` or than ``into``, raises :class:`~aiotmc.RemoteProtocolError` /
        :class:`~aiotmc.LocalProtocolError` after the message has been consumed.
        """
        ...

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """Read the status byte over the bus (raises UnsupportedOperation if impossible)."""
        ...

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear: abort pending I/O, empty the device's buffers, resynchronise framing."""
        ...

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """Bus-level trigger (raises UnsupportedOperation if impossible)."""
        ...

    async def aclose(self) -> None:
        """Close the link; idempotent; completes even when cancelled."""
        ...


# -- optional abilities ----------------------------------------------------------------------
# A transport implements one of these Protocols when its bus has the ability; the matching
# Capabilities flag says whether the connected device has it. Instrument checks both and
# raises UnsupportedOperation otherwise.


@runtime_checkable
class SupportsRemoteLocal(Protocol):
    """Remote / local / local lockout (USB488 REN_CONTROL, GO_TO_LOCAL, LOCAL_LOCKOUT;
    GPIB REN, GTL, LLO; VXI-11 device_remote, device_local, lockout)."""

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """Apply the remote-enable operation ``mode``."""
        ...


@runtime_checkable
class SupportsIndicatorPulse(Protocol):
    """Blink the device's activity indicator (USBTMC INDICATOR_PULSE)."""

    async def indicator_pulse(self, *, deadline: float = math.inf) -> None:
        """Blink the indicator once."""
        ...


@runtime_checkable
class SupportsReconnect(Protocol):
    """Replace a dropped link with a new one (see docs/reliability.md)."""

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Open the link again; the transport object (and its SRQ fan-out) stays."""
        ...


@runtime_checkable
class SupportsReadTermination(Protocol):
    """Byte-stream transports that frame responses on a terminator."""

    def set_read_termination(self, terminator: bytes) -> None:
        """Frame the next responses on ``terminator``."""
        ...


@runtime_checkable
class SupportsBlockProgress(Protocol):
    """Transports that report a block's payload as it arrives (``aiotmc read-block``'s
    progress display): while ``block_progress`` is set, ``receive_block`` calls it with
    (payload bytes received so far, payload size), from the event loop's thread."""

    block_progress: Callable[[int, int], None] | None


@runtime_checkable
class SupportsBlockingIO(Protocol):
    """Transports that can do an operation in the calling thread (``aiotmc.sync``'s fast
    path, no hop to the event loop's thread).

    Called only by a thread other than the event loop's that holds the instrument's lock.
    Each returns None (``send_blocking``: False) when the link is not in a state for it
    (stale, busy, closed); the caller then takes the event-loop path. ``deadline`` is a
    ``time.monotonic()`` value (``math.inf``: none). A failure or an interruption (Ctrl-C)
    part-way leaves the link as a cancellation would (resynchronised before its next use).
    """

    def exchange_blocking(self, message: bytes, *, max_size: int, deadline: float) -> bytes | None:
        """Send ``message``, receive its response (terminator included)."""
        ...

    def send_blocking(self, data: BytesLike, *, end: bool = True, deadline: float) -> bool:
        """Send ``data`` as one message (or its start, ``end=False``)."""
        ...

    def receive_blocking(self, *, max_size: int, deadline: float) -> bytes | None:
        """Receive one message (terminator included)."""
        ...


@runtime_checkable
class SupportsVendorMessages(Protocol):
    """USBTMC vendor-specific messages and class/vendor control transfers."""

    async def vendor_write(self, data: BytesLike, *, deadline: float = math.inf) -> None:
        """Send ``data`` as one VENDOR_SPECIFIC_OUT transfer."""
        ...

    async def vendor_read(self, max_size: int, *, deadline: float = math.inf) -> bytes:
        """REQUEST_VENDOR_SPECIFIC_IN: at most ``max_size`` bytes of the device's answer."""
        ...

    async def control_transfer(
        self,
        request_type: int,
        request: int,
        value: int = 0,
        index: int = 0,
        data_or_length: BytesLike | int = 0,
        *,
        deadline: float = math.inf,
    ) -> bytes:
        """A class or vendor control transfer; the data read (``b""`` for host-to-device)."""
        ...


@runtime_checkable
class SupportsDeviceLock(Protocol):
    """Exclusive access across clients (VXI-11 device_lock, HiSLIP AsyncLock): VISA's
    exclusive lock, distinct from the in-process lock of :meth:`Instrument.lock`."""

    async def lock(self, *, timeout: float = 0.0, deadline: float = math.inf) -> bool | None:
        """Take the lock, waiting up to ``timeout`` seconds for another client's; False
        (or :class:`~aiotmc.ResourceBusyError`) when it was not granted."""
        ...

    async def unlock(self, *, deadline: float = math.inf) -> None:
        """Release the lock this link holds."""
        ...


class EarlyExchange(EarlyStart):
    """An exchange that the caller releasing the instrument's lock may start for the
    caller waiting next (hand-over by I/O, :class:`aiotmc._loops.EarlyStart`): it sends
    the waiter's message and arms the link to wake the waiter with its answer."""

    __slots__ = ()

    def answer(self, woken: object) -> bytes | None:
        """In the waiter, once the lock is its own (``woken``: what the lock's wait
        returned), first: the response if the wake-up brought all of it, without a
        coroutine (the contended query's common case); else None, and :meth:`finish`
        gets it. A failed wait raises here, as ``exchange`` would."""
        return None

    async def finish(self, woken: object) -> bytes:
        """After :meth:`answer` gave None: the response, terminator included, as
        :meth:`~MessageTransport.exchange` returns it; when the exchange was not
        started, that exchange itself."""
        raise NotImplementedError


@runtime_checkable
class SupportsEarlyExchange(Protocol):
    """Transports whose exchange a releasing caller can start for a waiting one (the
    raw-socket transport): contended queries then cost one wake-up each."""

    def early_exchange(self, message: bytes, *, max_size: int, deadline: float) -> EarlyExchange:
        """The request a caller about to wait for the lock leaves in line."""
        ...


@runtime_checkable
class SupportsPipelining(Protocol):
    """Several queries in flight on one link, answers matched (HiSLIP overlapped mode)."""

    async def pipeline(
        self, queries: Sequence[bytes], *, max_size: int, deadline: float = math.inf
    ) -> list[bytes]:
        """Send every query at once, then collect their answers in order."""
        ...

    async def exchange_overlapped(
        self, message: bytes, *, max_size: int, deadline: float = math.inf
    ) -> bytes:
        """``exchange`` that several tasks may call at once, each query in flight with
        the others (every other operation raises ``BusyResourceError`` meanwhile)."""
        ...
