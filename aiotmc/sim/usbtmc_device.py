"""The device side of USBTMC/USB488: a :class:`~aiotmc.sim.usb_function.UsbFunction`.

:class:`UsbtmcFunction` puts a message-level instrument model (a
:class:`~aiotmc.sim.device.SimDevice` or anything with the same small API, see
:class:`DeviceModel`) behind real USB descriptors and USBTMC framing: it parses
DEV_DEP_MSG_OUT transfers (split over any number of URBs), answers
REQUEST_DEV_DEP_MSG_IN with DEV_DEP_MSG_IN transfers (short packet or ZLP at the end),
handles the class requests (abort, clear, capabilities, READ_STATUS_BYTE, REN/GTL/LLO,
INDICATOR_PULSE), the TRIGGER message, string descriptors, and sends SRQ notifications on
interrupt-IN when the model requests service.

The wire format (endpoints, descriptors, alignment, cutting a response into transfers)
is :mod:`aiotmc.sim.usbtmc_framing`; this module is the function's behaviour on top of it.
Stdlib only and sans-IO: it also runs under the system Python inside a umockdev process.
Bus adapters (:class:`~aiotmc.sim.fake_port.FakeUsbPort`, the umockdev adapter) call it one
transaction at a time; time comes from ``clock`` and :meth:`UsbtmcFunction.next_deadline`.

Fault injection: public attributes (``response_delay``, ``drop_responses``,
``abort_pending_polls``, ``fail_abort``, ``fail_clear``, ``wrong_abort_tag_once``,
``corrupt_next_response``, ``max_in_transfer``) and methods
(:meth:`~UsbtmcFunction.stall_bulk_in` and :meth:`~UsbtmcFunction.stall_bulk_out`, at
once or at a chosen byte, once or repeatedly; :meth:`~UsbtmcFunction.inject_srq`,
:meth:`~UsbtmcFunction.disconnect`, :meth:`~UsbtmcFunction.replug`,
:meth:`~UsbtmcFunction.reset`). All attributes are plain JSON values, so the umockdev
control channel can set them (``set corrupt_next_response "wrong_tag"``) and call the
methods (``call stall_bulk_in [0]``). ``quirks=`` makes the device misbehave like the
instruments in :data:`~aiotmc.protocol.quirks.KNOWN_QUIRKS`, one named behaviour at a time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from .._exceptions import LocalProtocolError, RemoteProtocolError
from .._types import BytesLike
from ..protocol.events import ControlRequest
from ..protocol.quirks import NO_QUIRKS, Quirks
from ..protocol.usb488 import Usb488Request, srq_notification, status_byte_notification
from ..protocol.usbtmc import (
    HEADER_SIZE,
    MsgID,
    UsbtmcCapabilities,
    UsbtmcRequest,
    UsbtmcStatus,
    pack_header,
    unpack_header,
)
from .usb_function import STALL, Stall
from .usbtmc_framing import (
    BULK_IN,
    BULK_OUT,
    EOM,
    INTERRUPT_IN,
    TERM_CHAR,
    ResponseCursor,
    alignment_padding,
    string_descriptor,
    usbtmc_descriptors,
)

__all__ = [
    "BULK_IN",
    "BULK_OUT",
    "INTERRUPT_IN",
    "VENDOR_REGISTER",
    "DeviceModel",
    "UsbtmcFunction",
]

_log = logging.getLogger("aiotmc.sim.usbtmc")


_SUCCESS: Final = UsbtmcStatus.SUCCESS
_PENDING: Final = UsbtmcStatus.PENDING
_FAILED: Final = UsbtmcStatus.FAILED
_NOT_IN_PROGRESS: Final = UsbtmcStatus.TRANSFER_NOT_IN_PROGRESS

#: Values of :attr:`UsbtmcFunction.corrupt_next_response`: how the next DEV_DEP_MSG_IN
#: transfer breaks the protocol.
CORRUPTIONS: Final = (
    "wrong_tag",  # bTag of another request
    "wrong_msgid",  # MsgID 1 (DEV_DEP_MSG_OUT) instead of 2
    "bad_tag_inverse",  # bTagInverse does not match bTag
    "truncated_header",  # a 7-byte transfer: the header is cut short
    "short_transfer",  # TransferSize announces 100 bytes more than the transfer holds
    "oversized_transfer",  # TransferSize larger than the host asked for
)


class DeviceModel(Protocol):
    """What :class:`UsbtmcFunction` needs from an instrument model (SimDevice has it)."""

    def write(self, message: BytesLike) -> None:
        """One complete program message."""
        ...

    def read(self) -> bytes | None:
        """The next complete response message, or None if none is ready."""
        ...

    def next_deadline(self) -> float | None: ...
    def poll(self) -> None: ...
    def trigger(self) -> None: ...
    def device_clear(self) -> None: ...

    @property
    def status_byte(self) -> int: ...

    def add_srq_listener(self, callback: Callable[[int], object]) -> Callable[[], object]: ...


@dataclass(slots=True)
class _Out:
    tag: int
    left: int
    pad: int
    eom: bool
    data: bool  # DEV_DEP_MSG_OUT (else vendor-specific, discarded)
    received: int = 0


@dataclass(slots=True)
class _Request:
    tag: int
    size: int
    term_char: int | None
    time: float


@dataclass(slots=True)
class _ArmedHalt:
    """A halt armed by :meth:`UsbtmcFunction.stall_bulk_in` / ``stall_bulk_out``."""

    after: int | None  # bytes to pass before halting (None: halt at once)
    left: int  # halts still to come (each CLEAR_FEATURE re-arms the next)
    budget: int | None  # bytes still to pass before this halt (None: not armed now)


@dataclass(slots=True)
class _Counters:
    """What the device saw (for tests)."""

    out_transfers: list[tuple[int, int, bool]] = field(default_factory=list)
    requests: list[tuple[int, int]] = field(default_factory=list)
    messages: int = 0
    dropped_requests: int = 0
    triggers: int = 0
    indicator_pulses: int = 0


VENDOR_REGISTER: Final = 0x5A
"""The emulator's one vendor control request: a register per wValue (tests use it)."""


class UsbtmcFunction:
    """A USBTMC (``usb488=False``) or USB488 instrument function around ``model``.

    ``UsbtmcFunction(model, *, vid=0x0957, pid=0x1796, serial="MY123",
    usb488=True, interrupt_endpoint=True, max_packet_size=512, quirks=Quirks(),
    clock=model.clock or time.monotonic)``. ``max_packet_size`` is the bulk
    wMaxPacketSize: 512 describes a high-speed device, 64 a full-speed one.
    Endpoints: bulk-OUT 0x01, bulk-IN 0x82, interrupt-IN 0x83 (8-byte packets).
    """

    def __init__(
        self,
        model: DeviceModel,
        *,
        vid: int = 0x0957,
        pid: int = 0x1796,
        serial: str = "MY123",
        manufacturer: str = "aiotmc",
        product: str = "Simulated USBTMC instrument",
        usb488: bool = True,
        interrupt_endpoint: bool = True,
        max_packet_size: int = 512,
        quirks: Quirks = NO_QUIRKS,
        capabilities: UsbtmcCapabilities | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_packet_size not in (8, 16, 32, 64, 512):
            raise LocalProtocolError(
                f"bulk wMaxPacketSize must be 8, 16, 32, 64 or 512, got {max_packet_size}"
            )
        self.model = model
        self.vid = vid
        self.pid = pid
        self.serial = serial
        self.manufacturer = manufacturer
        self.product = product
        self.usb488 = usb488
        self.max_packet_size = max_packet_size
        self.quirks = quirks
        self.interrupt_endpoint: int | None = INTERRUPT_IN if interrupt_endpoint else None
        model_clock: Callable[[], float] = getattr(model, "clock", time.monotonic)
        self.clock = clock or model_clock
        if capabilities is None:
            capabilities = UsbtmcCapabilities(
                bcd_usbtmc=0x0100,
                indicator_pulse=True,
                term_char=True,
                bcd_usb488=0x0100 if usb488 else 0,
                usb488_2=usb488,
                ren_control=usb488,
                trigger=usb488,
                scpi=usb488,
                sr1=usb488 and interrupt_endpoint,
                rl1=usb488,
                dt1=usb488,
            )
        self.capabilities = capabilities
        # -- fault knobs --
        #: Seconds between a request and its response becoming available.
        self.response_delay = 0.0
        #: Discard this many of the next responses (the request is never answered).
        self.drop_responses = 0
        #: CHECK_ABORT_*_STATUS / CHECK_CLEAR_STATUS answer PENDING this many extra times.
        self.abort_pending_polls = 0
        #: INITIATE_ABORT_BULK_IN/OUT answer with STALL.
        self.fail_abort = False
        #: INITIATE_CLEAR answers with STALL.
        self.fail_clear = False
        #: The first INITIATE_ABORT_BULK_IN answers TRANSFER_NOT_IN_PROGRESS with another
        #: bTag, which the device then considers current (the host must retry with it).
        self.wrong_abort_tag_once = False
        #: Break the next DEV_DEP_MSG_IN transfer one of the ways in :data:`CORRUPTIONS`
        #: (the knob disarms itself).
        self.corrupt_next_response: str | None = None
        #: Answer at most this many payload bytes per DEV_DEP_MSG_IN transfer (EOM only on
        #: the last): with ``response_delay`` a response drips in slowly.
        self.max_in_transfer: int | None = None
        #: What the device saw.
        self.seen = _Counters()
        self.remote_enabled = False
        self.local_lockout = False
        #: Vendor-specific messages, a loopback: VENDOR_SPECIFIC_OUT payloads queue here
        #: and REQUEST_VENDOR_SPECIFIC_IN answers from the front.
        self.vendor_data = bytearray()
        #: Vendor control request :data:`VENDOR_REGISTER` (0x5A): OUT stores its data
        #: under wValue, IN reads it back (any other vendor request stalls).
        self.vendor_registers: dict[int, bytes] = {}
        # -- state --
        self._connected = True
        self._awake = not quirks.reset_on_open
        self._wedged = False
        self._halted: set[int] = set()
        self._in_halt: _ArmedHalt | None = None
        self._out_halt: _ArmedHalt | None = None
        # Where the transfer being sent started in its response (a halt before its first
        # byte puts it back, as a device whose output queue keeps the message).
        self._rewind: tuple[ResponseCursor, int, int, int] | None = None
        self._wakeup: Callable[[], None] | None = None
        self._interrupts: deque[bytes] = deque(maxlen=1024)
        self._out_header = bytearray()
        self._out: _Out | None = None
        self._message: list[memoryview] = []
        self._last_out_tag = 0
        self._last_message_end = -1e18
        self._request: _Request | None = None
        self._response: ResponseCursor | None = None
        self._transfer: bytes | None = None
        self._transfer_tag = 0
        self._sent = 0
        self._zlp_pending = False
        self._empty_first = False
        self._abort_count = 0
        self._pending_polls = 0
        self._clear_hanging = False
        self._tag_override: int | None = None
        self._unsubscribe = model.add_srq_listener(self._on_srq)
        self._descriptors = usbtmc_descriptors(
            vid=vid,
            pid=pid,
            max_packet_size=max_packet_size,
            usb488=usb488,
            interrupt=interrupt_endpoint,
        )

    # -- descriptors -------------------------------------------------------------------------

    @property
    def high_speed(self) -> bool:
        """True when the bulk endpoints describe a high-speed device (512-byte packets)."""
        return self.max_packet_size == 512

    @property
    def descriptors(self) -> bytes:
        """Device descriptor followed by the full configuration descriptor."""
        return self._descriptors

    def _string(self, index: int) -> bytes | Stall:
        strings = {1: self.manufacturer, 2: self.product, 3: self.serial}
        descriptor = string_descriptor(index, strings)
        return STALL if descriptor is None else descriptor

    # -- UsbFunction: status -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False after :meth:`disconnect`."""
        return self._connected

    def set_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Called (synchronously) when the device has something new outside of a call:
        an SRQ, a disconnect. Bus adapters use it to wake their waiters."""
        self._wakeup = callback

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup()

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has work: the model's next deadline or a delayed response."""
        times = []
        model_due = self.model.next_deadline()
        if model_due is not None:
            times.append(model_due)
        if self._request is not None and self.response_delay > 0:
            times.append(self._request.time + self.response_delay)
        return min(times) if times else None

    def poll(self) -> None:
        """Advance the model's time-based work."""
        self.model.poll()

    # -- fault injection -------------------------------------------------------------------

    def stall_bulk_in(self, after: int | None = None, times: int = 1) -> None:
        """Halt bulk-IN until CLEAR_FEATURE(ENDPOINT_HALT), like a real device: the halt
        ends the transfer, the response stays queued.

        ``after=None`` halts now; ``after=N`` once N more bytes have gone out (0: when a
        request would get its first byte). A URB that would carry byte N+1 ends with
        STALL: the whole packets before it left the device but are lost to the host. A
        halt before a transfer's first byte forgets the request and keeps the response
        (a new request gets it whole); a halt inside a transfer leaves the transfer in
        progress (INITIATE_ABORT_BULK_IN finds it). ``times``: each CLEAR_FEATURE re-arms
        the same halt until this many have happened.
        """
        self._in_halt = _ArmedHalt(after, times, after)
        if after is None:
            self._halt_in()

    def stall_bulk_out(self, after: int | None = None, times: int = 1) -> None:
        """Halt bulk-OUT until CLEAR_FEATURE(ENDPOINT_HALT).

        ``after=None`` halts now (the next URB delivers nothing); ``after=N`` once N more
        bytes have come in: the URB that would carry byte N+1 delivers the whole packets
        before it, then ends with STALL; what the device took of a message stays until an
        abort or clear. ``times`` as for :meth:`stall_bulk_in`.
        """
        self._out_halt = _ArmedHalt(after, times, after)
        if after is None:
            self._halt_out_armed()

    def _halt_in(self) -> Stall:
        self._halted.add(BULK_IN)
        armed = self._in_halt
        if armed is not None:
            armed.left -= 1
            armed.budget = None
        self._end_in_transfer()
        return STALL

    def _end_in_transfer(self) -> None:
        """A halted bulk-IN URB: a request not started is forgotten and the response
        keeps the bytes of a transfer not started; a transfer partly sent stays current."""
        if self._transfer is not None and self._sent == 0 and self._rewind is not None:
            response, offset, index, inner = self._rewind
            response.offset, response.index, response.inner = offset, index, inner
            self._response = response
            self._transfer = None
        self._rewind = None
        if self._transfer is None:
            self._request = None
            self._empty_first = False

    def _halt_out_armed(self) -> Stall:
        self._halted.add(BULK_OUT)
        armed = self._out_halt
        if armed is not None:
            armed.left -= 1
            armed.budget = None
        return STALL

    def _rearm(self, endpoint: int) -> None:
        """After CLEAR_FEATURE: the next of several armed halts."""
        if endpoint == BULK_IN:
            armed, halt = self._in_halt, self._halt_in
        elif endpoint == BULK_OUT:
            armed, halt = self._out_halt, self._halt_out_armed
        else:
            return
        if armed is None:
            return
        if armed.left <= 0:
            if endpoint == BULK_IN:
                self._in_halt = None
            else:
                self._out_halt = None
            return
        if armed.after is None:
            halt()
        else:
            armed.budget = armed.after

    def inject_srq(self, status_byte: int) -> None:
        """Queue an SRQ notification as if the model had requested service."""
        self._on_srq(status_byte)

    def disconnect(self) -> None:
        """Unplug: ``connected`` becomes False and every transaction fails."""
        if not self._connected:
            return
        self._connected = False
        self._unsubscribe()
        self._wake()

    def replug(self) -> None:
        """Plug the device back in after :meth:`disconnect`: a fresh bus state (as after a
        power-on reset of the interface); the instrument model keeps its settings."""
        if self._connected:
            return
        self._connected = True
        self._unsubscribe = self.model.add_srq_listener(self._on_srq)
        self.reset()

    def reset(self) -> None:
        """USB port reset: drop every transfer and halt; a ``reset_on_open`` device wakes up."""
        self._awake = True
        self._wedged = False
        self._halted.clear()
        self._in_halt = self._out_halt = None
        self._interrupts.clear()
        self._clear_hanging = False
        self._drop_out()
        self._drop_in()
        self._zlp_pending = False
        self._wake()

    @property
    def _responsive(self) -> bool:
        return self._awake and not self._wedged

    # -- bulk-OUT ------------------------------------------------------------------------------

    def bulk_out(self, endpoint: int, data: bytes) -> Stall | None:
        """One bulk-OUT URB: transfers may span several URBs (header only in the first)."""
        if not self._connected or endpoint != BULK_OUT or BULK_OUT in self._halted:
            return STALL
        if not self._responsive:
            return None
        armed = self._out_halt
        if armed is not None and armed.budget is not None:
            if len(data) > armed.budget:  # the halt comes inside this URB
                keep = armed.budget // self.max_packet_size * self.max_packet_size
                if keep:
                    self._receive_out(memoryview(data).cast("B")[:keep])
                return self._halt_out_armed()
            armed.budget -= len(data)
        return self._receive_out(memoryview(data).cast("B"))

    def _receive_out(self, view: memoryview) -> Stall | None:
        size = len(view)
        pos = 0
        while pos < size:
            out = self._out
            if out is None:
                if not self._out_header and size - pos >= HEADER_SIZE:
                    raw: BytesLike = view[pos : pos + HEADER_SIZE]
                    pos += HEADER_SIZE
                else:
                    take = min(HEADER_SIZE - len(self._out_header), size - pos)
                    self._out_header += view[pos : pos + take]
                    pos += take
                    if len(self._out_header) < HEADER_SIZE:
                        break
                    raw = bytes(self._out_header)
                    self._out_header.clear()
                if self._header(raw) is STALL:
                    return STALL
                continue
            take = min(out.left, size - pos)
            if take:
                if out.data:
                    self._message.append(view[pos : pos + take])
                else:  # VENDOR_SPECIFIC_OUT
                    self.vendor_data += view[pos : pos + take]
                out.left -= take
                out.received += take
                pos += take
            if not out.left:
                skip = min(out.pad, size - pos)
                out.pad -= skip
                pos += skip
                if not out.pad:
                    self._out = None
                    if out.data and out.eom:
                        self._deliver()
                    if pos < size:
                        break  # alignment junk after the transfer: ignore
        if size % self.max_packet_size and (self._out is not None or self._out_header):
            # A short packet ended the transfer early: it is lost.
            _log.debug("bulk-OUT transfer truncated by a short packet; discarded")
            self._drop_out()
        return None

    def _header(self, raw: BytesLike) -> Stall | None:
        try:
            header = unpack_header(raw)
        except RemoteProtocolError:
            return self._halt_out()
        msg_id, size = header.msg_id, header.transfer_size
        if msg_id == MsgID.DEV_DEP_MSG_OUT:
            limit = self.quirks.out_transfer_limit
            if size == 0 or (limit is not None and size > limit):
                return self._halt_out()
            self._out = _Out(header.tag, size, alignment_padding(size), header.eom, True)
            self._last_out_tag = header.tag
            self.seen.out_transfers.append((header.tag, size, header.eom))
        elif msg_id == MsgID.REQUEST_DEV_DEP_MSG_IN:
            self._on_request(header.tag, size, header.term_char if header.term_char_set else None)
        elif msg_id == MsgID.TRIGGER:
            if not (self.usb488 and self.capabilities.trigger):
                return self._halt_out()
            self._last_out_tag = header.tag
            self.seen.triggers += 1
            self.model.trigger()
        elif msg_id == MsgID.VENDOR_SPECIFIC_OUT:
            self._out = _Out(header.tag, size, alignment_padding(size), False, False)
        elif msg_id != MsgID.REQUEST_VENDOR_SPECIFIC_IN:
            return self._halt_out()
        else:
            self._on_vendor_request(header.tag, size)
        return None

    def _halt_out(self) -> Stall:
        self._halted.add(BULK_OUT)
        self._drop_out()
        return STALL

    def _drop_out(self) -> None:
        self._out = None
        self._out_header.clear()
        self._message.clear()

    def _deliver(self) -> None:
        parts, self._message = self._message, []
        message: BytesLike = parts[0] if len(parts) == 1 else b"".join(parts)
        self.seen.messages += 1
        self._last_message_end = self.clock()
        # A new program message discards the unread rest of a response (IEEE 488.2).
        self._response = None
        self.model.write(message)

    def _on_request(self, tag: int, size: int, term_char: int | None) -> None:
        self.seen.requests.append((tag, size))
        quirks = self.quirks
        now = self.clock()
        if quirks.max_transfer_size is not None and size > quirks.max_transfer_size:
            self.seen.dropped_requests += 1
            return
        if quirks.write_read_delay and now - self._last_message_end < quirks.write_read_delay:
            self.seen.dropped_requests += 1
            return
        response = self._response
        if quirks.one_request_per_response and response is not None and response.offset:
            response.restart()  # "a second request restarts the transfer"
            self._transfer = None
        self._request = _Request(tag, size, term_char, now)
        self._empty_first = quirks.empty_first_bulk_in_retry

    def _on_vendor_request(self, tag: int, size: int) -> None:
        """REQUEST_VENDOR_SPECIFIC_IN: the next bulk-IN transfer is VENDOR_SPECIFIC_IN."""
        payload = bytes(self.vendor_data[:size])
        del self.vendor_data[:size]
        header = pack_header(MsgID.VENDOR_SPECIFIC_IN, tag, len(payload))
        self._request = None
        self._transfer = header + payload + bytes(-len(payload) % 4)
        self._transfer_tag = tag
        self._sent = 0
        self._rewind = None

    # -- bulk-IN -------------------------------------------------------------------------------

    def bulk_in(self, endpoint: int, size: int) -> bytes | Stall | None:
        """What one bulk-IN URB of ``size`` bytes receives now (None: NAK)."""
        if not self._connected or endpoint != BULK_IN:
            return STALL
        if BULK_IN in self._halted:
            self._end_in_transfer()
            return STALL
        if not self._responsive:
            return None
        if self._zlp_pending:
            self._zlp_pending = False
            return b""
        if self._empty_first and self._request is not None:
            self._empty_first = False
            return b""
        armed = self._in_halt
        budget = None if armed is None else armed.budget
        if budget == 0 and (self._request is not None or self._transfer is not None):
            return self._halt_in()
        transfer = self._transfer
        if transfer is None:
            transfer = self._prepare()
            if transfer is None:
                return None
        sent = self._sent
        remaining = len(transfer) - sent
        if armed is not None and budget is not None:
            if min(size, remaining) > budget:  # the halt comes inside this URB
                self._sent = sent + budget // self.max_packet_size * self.max_packet_size
                return self._halt_in()
            armed.budget = budget - min(size, remaining)
        if remaining > size:
            self._sent = sent + size
            return transfer[sent : sent + size]
        exact = len(transfer) % self.max_packet_size == 0
        if remaining < size and exact and self.quirks.no_short_packet_on_exact_multiple:
            return None  # the last packet was full and no ZLP follows: the URB never ends
        self._transfer = None
        self._rewind = None
        if remaining == size and exact and not self.quirks.no_short_packet_on_exact_multiple:
            self._zlp_pending = True  # the terminating ZLP arrives in the next URB
        return transfer if sent == 0 else transfer[sent:]

    def _prepare(self) -> bytes | None:
        request = self._request
        if request is None:
            return None
        if self.response_delay and self.clock() < request.time + self.response_delay:
            return None
        response = self._response
        if response is None:
            while True:
                parts = self._read_model()
                if parts is None:
                    return None
                if self.drop_responses > 0:
                    self.drop_responses -= 1
                    continue
                break
            response = self._response = ResponseCursor.of(parts)
        self._request = None
        quirks = self.quirks
        whole_block = (
            quirks.transfer_size_wrong_for_blocks
            and response.offset == 0
            and response.peek(2)[:1] == b"#"
            and response.peek(2)[1:2] not in (b"0", b"")
        )
        size = response.remaining if whole_block else min(request.size, response.remaining)
        if self.max_in_transfer is not None:
            size = max(1, min(size, self.max_in_transfer))
        attributes = 0
        if request.term_char is not None and self.capabilities.term_char:
            found = response.find(request.term_char, size)
            if found >= 0:
                size = found + 1
                attributes |= TERM_CHAR
        self._rewind = (response, response.offset, response.index, response.inner)
        pieces = response.take(size)
        if not response.remaining:
            self._response = None
            if not quirks.eom_unreliable:
                attributes |= EOM
        pad = alignment_padding(size)
        field = size + pad if quirks.transfer_size_includes_padding else size
        if whole_block:
            field &= 0xFFFF  # wrong for blocks of 64 KiB and more
        msg_id = MsgID.DEV_DEP_MSG_OUT if quirks.msgid_unreliable else MsgID.DEV_DEP_MSG_IN
        tag = request.tag
        corruption, self.corrupt_next_response = self.corrupt_next_response, None
        if corruption == "wrong_tag":
            tag = tag % 255 + 1
        elif corruption == "wrong_msgid":
            msg_id = MsgID.DEV_DEP_MSG_OUT
        elif corruption == "short_transfer":
            field += 100
        elif corruption == "oversized_transfer":
            field = max(field, request.size + 1)
        elif corruption is not None and corruption not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {corruption!r}; known: {CORRUPTIONS}")
        header = pack_header(msg_id, tag, field, attributes)
        if corruption == "bad_tag_inverse":
            header = header[:2] + bytes([header[2] ^ 0x55]) + header[3:]
        transfer = b"".join([header, *pieces, b"\0" * pad])
        if corruption == "truncated_header":
            transfer = header[:7]
        self._transfer = transfer
        self._transfer_tag = request.tag
        self._sent = 0
        return transfer

    def _read_model(self) -> list[BytesLike] | None:
        read_parts = getattr(self.model, "read_parts", None)
        if read_parts is not None:
            parts: list[BytesLike] | None = read_parts()
            return parts
        message = self.model.read()
        return None if message is None else [message]

    def _drop_in(self) -> None:
        self._request = None
        self._response = None
        self._transfer = None
        self._rewind = None
        self._sent = 0
        self._empty_first = False

    def _current_in_tag(self) -> int | None:
        if self._transfer is not None:
            return self._transfer_tag
        if self._request is not None:
            return self._request.tag
        return None

    # -- interrupt-IN ----------------------------------------------------------------------------

    def interrupt_in(self, endpoint: int, size: int) -> bytes | Stall | None:
        """The next queued notification, or None."""
        if not self._connected or endpoint != self.interrupt_endpoint:
            return STALL
        if endpoint in self._halted:
            return STALL
        if not self._interrupts:
            return None
        return self._interrupts.popleft()[:size]

    def _on_srq(self, status_byte: int) -> None:
        if self.usb488 and self.interrupt_endpoint is not None and self._connected:
            self._interrupts.append(srq_notification(status_byte))
            self._wake()

    def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT): the endpoint works again (data toggle reset)."""
        self._halted.discard(endpoint)
        if endpoint == BULK_OUT:
            self._out_header.clear()
        self._rearm(endpoint)

    # -- control --------------------------------------------------------------------------------

    def control(self, request: ControlRequest) -> bytes | Stall:
        """A control transfer: standard (descriptors, halts), class (USBTMC/USB488) or
        vendor (:data:`VENDOR_REGISTER` only)."""
        if not self._connected:
            return STALL
        kind = request.request_type & 0x60
        if kind == 0x00:
            reply = self._standard(request)
        elif kind == 0x20:
            reply = self._class(request)
        elif kind == 0x40:
            reply = self._vendor(request)
        else:
            reply = STALL
        if isinstance(reply, Stall):
            return reply
        return reply[: request.length] if request.is_in else b""

    def _standard(self, req: ControlRequest) -> bytes | Stall:
        rtype, code = req.request_type, req.request
        if rtype == 0x80 and code == 6:  # GET_DESCRIPTOR
            kind, index = req.value >> 8, req.value & 0xFF
            if kind == 1:
                return self._descriptors[:18]
            if kind == 2 and index == 0:
                return self._descriptors[18:]
            if kind == 3:
                return self._string(index)
            return STALL
        if rtype == 0x80 and code == 0:  # GET_STATUS (device)
            return b"\0\0"
        if rtype == 0x80 and code == 8:  # GET_CONFIGURATION
            return b"\x01"
        if (rtype, code) in ((0x00, 9), (0x01, 11)):  # SET_CONFIGURATION, SET_INTERFACE
            return b""
        if rtype == 0x02 and code in (1, 3) and req.value == 0:  # CLEAR/SET_FEATURE(HALT)
            if req.index not in (BULK_OUT, BULK_IN, self.interrupt_endpoint):
                return STALL
            if code == 1:
                self.clear_halt(req.index)
            else:
                self._halted.add(req.index)
            return b""
        if rtype == 0x82 and code == 0:  # GET_STATUS (endpoint)
            return b"\x01\0" if req.index in self._halted else b"\0\0"
        return STALL

    def _vendor(self, req: ControlRequest) -> bytes | Stall:
        if req.request != VENDOR_REGISTER:
            return STALL
        if req.is_in:
            return self.vendor_registers.get(req.value, b"")
        self.vendor_registers[req.value] = bytes(req.data)
        return b""

    def _class(self, req: ControlRequest) -> bytes | Stall:
        code = req.request
        if req.request_type == 0xA2:
            if code in (
                UsbtmcRequest.INITIATE_ABORT_BULK_OUT,
                UsbtmcRequest.CHECK_ABORT_BULK_OUT_STATUS,
            ):
                if req.index != BULK_OUT:
                    return STALL
                if code == UsbtmcRequest.INITIATE_ABORT_BULK_OUT:
                    return self._initiate_abort_out(req.value & 0xFF)
                return self._check_abort_out()
            if code in (
                UsbtmcRequest.INITIATE_ABORT_BULK_IN,
                UsbtmcRequest.CHECK_ABORT_BULK_IN_STATUS,
            ):
                if req.index != BULK_IN:
                    return STALL
                if code == UsbtmcRequest.INITIATE_ABORT_BULK_IN:
                    return self._initiate_abort_in(req.value & 0xFF)
                return self._check_abort_in()
            return STALL
        if req.request_type != 0xA1 or req.index != 0:
            return STALL
        if code == UsbtmcRequest.GET_CAPABILITIES:
            return self.capabilities.to_bytes()
        if code == UsbtmcRequest.INITIATE_CLEAR:
            return self._initiate_clear()
        if code == UsbtmcRequest.CHECK_CLEAR_STATUS:
            return self._check_clear()
        if code == UsbtmcRequest.INDICATOR_PULSE:
            if not self.capabilities.indicator_pulse:
                return STALL
            self.seen.indicator_pulses += 1
            return bytes((_SUCCESS,))
        if not self.usb488:
            return STALL
        if code == Usb488Request.READ_STATUS_BYTE:
            return self._read_status_byte(req.value & 0x7F)
        if code in (
            Usb488Request.REN_CONTROL,
            Usb488Request.GO_TO_LOCAL,
            Usb488Request.LOCAL_LOCKOUT,
        ):
            return self._remote_local(code, req.value)
        return STALL

    def _initiate_abort_out(self, tag: int) -> bytes | Stall:
        if self.fail_abort:
            return STALL
        out = self._out
        if out is None or not out.data:
            return bytes((_FAILED, self._last_out_tag))
        if tag != out.tag:
            return bytes((_NOT_IN_PROGRESS, out.tag))
        self._abort_count = out.received
        self._drop_out()
        self._pending_polls = self.abort_pending_polls
        return bytes((_SUCCESS, tag))

    def _check_abort_out(self) -> bytes:
        status = _SUCCESS
        if self._pending_polls:
            self._pending_polls -= 1
            status = _PENDING
        return bytes((status, 0, 0, 0)) + self._abort_count.to_bytes(4, "little")

    def _initiate_abort_in(self, tag: int) -> bytes | Stall:
        if self.fail_abort:
            return STALL
        current = self._tag_override or self._current_in_tag()
        if current is None:
            return bytes((_FAILED, 0))
        if self.wrong_abort_tag_once:
            self.wrong_abort_tag_once = False
            current = self._tag_override = current % 255 + 1
        if tag != current:
            return bytes((_NOT_IN_PROGRESS, current))
        self._tag_override = None
        self._abort_count = self._sent if self._transfer is not None else 0
        self._drop_in()
        self._zlp_pending = True  # the short packet that ends the aborted transfer
        self._pending_polls = self.abort_pending_polls
        return bytes((_SUCCESS, tag))

    def _check_abort_in(self) -> bytes:
        status, more = _SUCCESS, 0
        if self._zlp_pending:
            status, more = _PENDING, 1
        elif self._pending_polls:
            self._pending_polls -= 1
            status = _PENDING
        return bytes((status, more, 0, 0)) + self._abort_count.to_bytes(4, "little")

    def _initiate_clear(self) -> bytes | Stall:
        if self.fail_clear:
            return STALL
        if self._transfer is not None and self._sent:
            self._zlp_pending = True
        self._drop_out()
        self._drop_in()
        self._tag_override = None
        self.model.device_clear()
        self._pending_polls = self.abort_pending_polls
        if self.quirks.clear_hangs:
            self._clear_hanging = True
        return bytes((_SUCCESS,))

    def _check_clear(self) -> bytes:
        if self._clear_hanging:
            return bytes((_PENDING, 0))
        if self._zlp_pending:
            return bytes((_PENDING, 1))
        if self._pending_polls:
            self._pending_polls -= 1
            return bytes((_PENDING, 0))
        return bytes((_SUCCESS, 0))

    def _read_status_byte(self, tag: int) -> bytes:
        if tag < 2:
            return bytes((_FAILED, tag, 0))
        serial_poll = getattr(self.model, "serial_poll", None)
        stb: int = serial_poll() if serial_poll is not None else self.model.status_byte
        if self.interrupt_endpoint is None:
            return bytes((_SUCCESS, tag, stb & 0xFF))
        self._interrupts.append(status_byte_notification(tag, stb))
        self._wake()
        return bytes((_SUCCESS, tag, 0))

    def _remote_local(self, code: int, value: int) -> bytes | Stall:
        if not self.capabilities.ren_control:
            return STALL
        if code == Usb488Request.REN_CONTROL:
            self.remote_enabled = bool(value & 1)
            if not self.remote_enabled:
                self.local_lockout = False
        elif code == Usb488Request.LOCAL_LOCKOUT:
            self.local_lockout = True
        else:
            self.local_lockout = False
        if self.quirks.remote_local_broken:
            self._wedged = True  # the instrument stops answering on the bulk endpoints
        return bytes((_SUCCESS,))
