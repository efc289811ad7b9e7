"""The host side of one USBTMC interface: :class:`UsbtmcConnection` (see the package
docstring for how a transport drives it).

Sending cuts a message into DEV_DEP_MSG_OUT transfers; receiving sizes each bulk-IN read
and parses the DEV_DEP_MSG_IN transfers that come back into events, coping with the
device quirks in :class:`~aiotmc.protocol.quirks.Quirks`. Every state change goes through
the table in :mod:`._state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from ..._exceptions import LocalProtocolError, RemoteProtocolError
from ..._types import BytesLike
from ..events import ControlRequest
from ..framing import NEED_DATA
from ..ieee4882 import parse_block_header
from ..quirks import NO_QUIRKS, Quirks
from ._events import END_OF_MESSAGE, NEED_REQUEST, EndOfMessage, Event, NeedRequest, ResponseData
from ._parsers import UsbtmcCapabilities, parse_capabilities
from ._requests import (
    check_abort_bulk_in_status_request,
    check_abort_bulk_out_status_request,
    check_clear_status_request,
    get_capabilities_request,
    indicator_pulse_request,
    initiate_abort_bulk_in_request,
    initiate_abort_bulk_out_request,
    initiate_clear_request,
)
from ._state import TRANSITIONS, Ev, UsbtmcState, next_state
from ._wire import (
    ATTR_EOM,
    ATTR_TERM_CHAR,
    DEFAULT_MAX_TRANSFER_SIZE,
    HEADER_SIZE,
    MAX_TRANSFER_SIZE_FIELD,
    MsgID,
    pack_header,
    pad_length,
    unpack_header,
)

__all__ = ["UsbtmcConnection"]

_SNIFF: Final = 11  # longest IEEE 488.2 block header: '#9' + 9 digits


def _round_up(size: int, packet: int) -> int:
    return -(-size // packet) * packet


class UsbtmcConnection:
    """The host side of one USBTMC interface (see the package docstring for the loop).

    ``max_transfer_size`` bounds the payload of each DEV_DEP_MSG_OUT transfer and the
    TransferSize of each request (quirks may lower it). ``capabilities`` can be given
    now or learnt later with :meth:`receive_capabilities`. ``first_read_size`` bounds the
    first bulk-IN read of a transfer (whose length is unknown until its header arrives):
    small answers fit in it, the rest of a large transfer is then read in one read.
    """

    def __init__(
        self,
        *,
        interface: int = 0,
        bulk_out_endpoint: int = 0x01,
        bulk_in_endpoint: int = 0x82,
        max_packet_size: int = 512,
        max_transfer_size: int = DEFAULT_MAX_TRANSFER_SIZE,
        quirks: Quirks = NO_QUIRKS,
        capabilities: UsbtmcCapabilities | None = None,
        first_read_size: int = 16 * 1024,
    ) -> None:
        if max_packet_size < 1:
            raise LocalProtocolError(f"max_packet_size must be positive, got {max_packet_size}")
        if max_transfer_size < 1:
            raise LocalProtocolError(f"max_transfer_size must be positive, got {max_transfer_size}")
        self.interface = interface
        self.bulk_out_endpoint = bulk_out_endpoint
        self.bulk_in_endpoint = bulk_in_endpoint
        self.max_packet_size = max_packet_size
        self.quirks = quirks
        self._capabilities = capabilities
        out_limit = quirks.out_transfer_limit
        self._out_chunk = min(max_transfer_size, out_limit) if out_limit else max_transfer_size
        in_limit = max_transfer_size
        if quirks.max_transfer_size:
            in_limit = min(in_limit, quirks.max_transfer_size)
        self._in_chunk = in_limit
        self._read_cap = _round_up(HEADER_SIZE + in_limit + 4, max_packet_size)
        self._first_read = _round_up(max(first_read_size, 1), max_packet_size)
        self._block_aware = (
            quirks.transfer_size_wrong_for_blocks
            or quirks.eom_unreliable
            or quirks.transfer_size_includes_padding
        )
        self._state = UsbtmcState.IDLE
        self._tag = 0
        self._out_tag = 0
        self._in_tag = 0
        # receive side: the current read
        self._buf: memoryview | None = None
        self._pos = 0
        self._asked = 0  # size handed out by next_read_size()
        self._short = False
        self._zlp_allowance = 1  # a stale zero-length packet may precede the first header
        self._empty_retry_left = 0
        self._header = bytearray()
        # the current request / transfer
        self._requested = 0
        self._first_request = False  # the current request is the message's first
        self._t_left = 0  # payload bytes of this transfer still to come
        self._t_pad = 0  # alignment bytes after the payload still to come
        self._t_total = 0  # expected transfer length, header included
        self._t_received = 0  # bytes of this transfer consumed
        self._t_attributes = 0
        self._t_optional_term = False  # block-trust: a terminator may follow the block
        self._t_trusting_block = False
        self._draining = False  # discard the rest of the transfer up to a short packet
        # the current message
        self._m_received = 0
        self._m_sniff: bytearray | None = None
        self._m_block_end: int | None = None
        self._m_last = -1

    # -- introspection ---------------------------------------------------------------------

    @property
    def state(self) -> UsbtmcState:
        """The current :class:`UsbtmcState`."""
        return self._state

    @property
    def last_btag(self) -> int:
        """The bTag used last (0 before the first transfer)."""
        return self._tag

    @property
    def out_tag(self) -> int:
        """bTag of the last DEV_DEP_MSG_OUT or TRIGGER transfer (for abort bulk-OUT)."""
        return self._out_tag

    @property
    def in_tag(self) -> int:
        """bTag of the last REQUEST_DEV_DEP_MSG_IN (for abort bulk-IN)."""
        return self._in_tag

    @property
    def awaiting_first_byte(self) -> bool:
        """A response was requested and not one byte of it has arrived (no earlier
        transfer, no header byte): a bulk-IN halt now has lost none of it."""
        return (
            self._state is UsbtmcState.REQUESTED
            and self._first_request
            and not self._header
            and self._buf is None
        )

    @property
    def capabilities(self) -> UsbtmcCapabilities | None:
        """What GET_CAPABILITIES said (after quirks), or None if not asked yet."""
        return self._capabilities

    def _move(self, event: Ev) -> None:
        self._state = next_state(self._state, event)

    def _next_tag(self) -> int:
        self._tag = self._tag % 255 + 1
        return self._tag

    # -- sending -----------------------------------------------------------------------------

    def send_message(
        self, data: BytesLike | Sequence[BytesLike], *, end: bool = True
    ) -> list[bytes]:
        """The DEV_DEP_MSG_OUT transfers carrying ``data`` (one buffer or several parts).

        One transfer per ``max_transfer_size`` chunk, EOM on the last when ``end``.
        ``end=False`` with no data sends nothing. Raises LocalProtocolError for an empty
        message with ``end=True`` (TransferSize 0 is not allowed) or in a wrong state.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            views = [memoryview(data).cast("B")]
        else:
            views = [memoryview(part).cast("B") for part in data]
        views = [v for v in views if len(v)]
        total = sum(len(v) for v in views)
        if total == 0:
            if end:
                raise LocalProtocolError("USBTMC cannot send an empty message (TransferSize 0)")
            if Ev.SEND_PART not in TRANSITIONS[self._state]:
                raise LocalProtocolError(f"cannot send in state {self._state.name}")
            return []
        self._move(Ev.SEND_END if end else Ev.SEND_PART)
        chunk = self._out_chunk
        transfers: list[bytes] = []
        index, offset = 0, 0
        remaining = total
        while remaining:
            size = min(chunk, remaining)
            remaining -= size
            attributes = ATTR_EOM if end and not remaining else 0
            tag = self._next_tag()
            pieces: list[BytesLike] = [pack_header(MsgID.DEV_DEP_MSG_OUT, tag, size, attributes)]
            need = size
            while need:
                view = views[index]
                take = min(need, len(view) - offset)
                pieces.append(view[offset : offset + take])
                need -= take
                offset += take
                if offset == len(view):
                    index, offset = index + 1, 0
            pad = pad_length(size)
            if pad:
                pieces.append(b"\0" * pad)
            transfers.append(b"".join(pieces))
            self._out_tag = tag
        return transfers

    def trigger(self) -> bytes:
        """The USB488 TRIGGER bulk message (header only)."""
        self._move(Ev.TRIGGER)
        tag = self._next_tag()
        self._out_tag = tag
        return pack_header(MsgID.TRIGGER, tag, 0)

    # -- receiving ---------------------------------------------------------------------------

    def request_response(self, max_bytes: int, *, term_char: int | None = None) -> bytes:
        """A REQUEST_DEV_DEP_MSG_IN for up to ``max_bytes`` (capped per transfer).

        ``term_char`` asks the device to end the transfer after that byte; it is only
        sent when the capabilities say the device supports TermChar.
        """
        if max_bytes < 1:
            raise LocalProtocolError(f"max_bytes must be positive, got {max_bytes}")
        new_message = self._state is UsbtmcState.IDLE
        self._move(Ev.REQUEST)
        if self.quirks.one_request_per_response:
            size = min(max_bytes, MAX_TRANSFER_SIZE_FIELD)
            if self.quirks.max_transfer_size:
                size = min(size, self.quirks.max_transfer_size)
        else:
            size = min(max_bytes, self._in_chunk)
        attributes = 0
        tc = 0
        caps = self._capabilities
        if term_char is not None and caps is not None and caps.term_char:
            attributes, tc = ATTR_TERM_CHAR, term_char & 0xFF
        tag = self._next_tag()
        self._in_tag = tag
        self._requested = size
        self._first_request = new_message
        self._empty_retry_left = 1 if self.quirks.empty_first_bulk_in_retry else 0
        self._header.clear()
        if new_message:
            self._reset_message()
        return pack_header(MsgID.REQUEST_DEV_DEP_MSG_IN, tag, size, attributes, tc)

    def _reset_message(self) -> None:
        self._m_received = 0
        self._m_sniff = bytearray() if self._block_aware else None
        self._m_block_end = None
        self._m_last = -1

    def next_read_size(self) -> int:
        """How many bytes the next bulk-IN read must ask for (a multiple of the packet size)."""
        mps = self.max_packet_size
        state = self._state
        if state is UsbtmcState.REQUESTED:
            if self._header or self.quirks.no_short_packet_on_exact_multiple:
                size = mps
            else:  # small answers end inside this read; big ones continue exactly sized
                size = min(HEADER_SIZE + self._requested + 4, self._first_read)
        elif state is UsbtmcState.RECEIVING:
            if self._draining:
                size = mps
            else:
                remaining = max(self._t_total - self._t_received, 1)
                # One byte more, so that a well-behaved transfer ends inside the read.
                exact = self.quirks.no_short_packet_on_exact_multiple
                size = remaining if exact else remaining + 1
        else:
            raise LocalProtocolError(f"no bulk-IN read is due in state {state.name}")
        size = _round_up(size, mps)
        size = max(mps, min(size, self._read_cap))
        self._asked = size
        return size

    @property
    def read_is_exact(self) -> bool:
        """The due bulk-IN read is the rest of a transfer whose TransferSize is trusted.

        Then it may be split into several bulk transfers in flight at once: the device
        ends it with a short packet exactly where :meth:`next_read_size` expects. False
        for the first read of a transfer and whenever a quirk makes TransferSize or the
        short packet unreliable.
        """
        quirks = self.quirks
        return (
            self._state is UsbtmcState.RECEIVING
            and not self._draining
            and not self._t_trusting_block
            and not self._block_aware
            and not quirks.one_request_per_response
            and not quirks.no_short_packet_on_exact_multiple
        )

    def receive_bulk_in(self, data: BytesLike) -> None:
        """Feed the result of one bulk-IN read of ``next_read_size()`` bytes."""
        if self._state not in (UsbtmcState.REQUESTED, UsbtmcState.RECEIVING):
            raise LocalProtocolError(f"no bulk-IN data expected in state {self._state.name}")
        if self._buf is not None and self._pos < len(self._buf):
            raise LocalProtocolError("the previous read has not been consumed (call next_event)")
        if not self._asked:
            raise LocalProtocolError("call next_read_size() before each bulk-IN read")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        if len(view) > self._asked:
            self._fail()
            raise RemoteProtocolError(f"bulk-IN read returned {len(view)} > {self._asked} bytes")
        self._short = len(view) < self._asked or len(view) % self.max_packet_size != 0
        self._asked = 0
        self._buf = view
        self._pos = 0

    def next_event(self) -> Event | type[NEED_DATA]:
        """The next :class:`ResponseData`, :class:`NeedRequest`, :class:`EndOfMessage`, or
        :data:`NEED_DATA` (read bulk-IN and call :meth:`receive_bulk_in`).

        Raises RemoteProtocolError (and enters ``ERROR``) when the device breaks framing.
        """
        if self._state is UsbtmcState.ERROR:
            raise LocalProtocolError("the connection is in ERROR: abort or clear, then reset()")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._fail()
            raise

    def _fail(self) -> None:
        self._state = UsbtmcState.ERROR
        self._buf = None

    def _next_event(self) -> Event | type[NEED_DATA]:
        while True:
            state = self._state
            buf = self._buf
            if state is UsbtmcState.REQUESTED:
                if buf is None:
                    return NEED_DATA
                if len(buf) == 0:
                    self._empty_read()
                    continue
                if self._pos == len(buf):
                    self._buf = None
                    if self._short:
                        raise RemoteProtocolError(
                            f"transfer ended inside its header ({bytes(self._header).hex()})"
                        )
                    continue
                self._parse_header(buf)
                continue
            if state is not UsbtmcState.RECEIVING:
                raise LocalProtocolError(f"no response is being received (state {state.name})")
            if buf is None:
                return NEED_DATA
            avail = len(buf) - self._pos
            if self._t_left:
                if not avail:
                    self._buf = None
                    if self._short:
                        raise RemoteProtocolError(
                            f"transfer ended {self._t_left} bytes short of its TransferSize"
                        )
                    continue
                event = self._payload(buf, avail)
                if event is not None:
                    return event
                continue
            if self._t_optional_term:
                if not avail:
                    if self._short:
                        return self._end_transfer(full_read=False)
                    self._buf = None  # the read ended with the block: a terminator may follow
                    continue
                self._t_optional_term = False
                terminated = buf[self._pos] == self.quirks.terminator
                if terminated:
                    self._pos += 1
                    self._t_received += 1
                    self._m_received += 1
                    self._m_last = self.quirks.terminator
                self._t_pad = pad_length(self._t_received)
                self._t_total = self._t_received + self._t_pad
                if terminated:
                    return ResponseData(buf[self._pos - 1 : self._pos])
                continue
            if self._t_pad and avail:
                take = min(self._t_pad, avail)
                self._t_pad -= take
                self._pos += take
                self._t_received += take
                avail -= take
            if avail:  # more alignment bytes than the 4-byte padding
                self._pos = len(buf)
                if self._short:
                    return self._end_transfer(full_read=False)
                self._draining = True
                self._buf = None
                continue
            if self._short:
                return self._end_transfer(full_read=False)
            if self._t_pad or self._draining:
                self._buf = None
                continue
            return self._end_transfer(full_read=True)

    def _empty_read(self) -> None:
        self._buf = None
        if self._header:
            raise RemoteProtocolError("zero-length packet inside a transfer header")
        if self._zlp_allowance:
            self._zlp_allowance -= 1
            return
        if self._empty_retry_left:
            self._empty_retry_left -= 1
            return
        raise RemoteProtocolError("empty bulk-IN transfer where a DEV_DEP_MSG_IN header was due")

    def _parse_header(self, buf: memoryview) -> None:
        need = HEADER_SIZE - len(self._header)
        if not self._header and len(buf) - self._pos >= HEADER_SIZE:
            raw = buf[self._pos : self._pos + HEADER_SIZE]
        else:
            self._header += buf[self._pos : self._pos + need]
            if len(self._header) < HEADER_SIZE:
                self._pos = len(buf)
                return
            raw = memoryview(bytes(self._header))
        header = unpack_header(raw)
        self._pos += min(need, HEADER_SIZE)
        self._header.clear()
        if header.msg_id != MsgID.DEV_DEP_MSG_IN and not self.quirks.msgid_unreliable:
            raise RemoteProtocolError(
                f"expected DEV_DEP_MSG_IN (MsgID 2), got MsgID {header.msg_id}"
            )
        if header.tag != self._in_tag:
            raise RemoteProtocolError(
                f"DEV_DEP_MSG_IN bTag {header.tag} does not match the request's bTag {self._in_tag}"
            )
        size = header.transfer_size
        trust_blocks = self.quirks.transfer_size_wrong_for_blocks
        if size > self._requested and not trust_blocks:
            raise RemoteProtocolError(
                f"device sent a {size}-byte transfer for a {self._requested}-byte request"
            )
        self._move(Ev.HEADER)
        self._zlp_allowance = 0
        self._t_left = size
        self._t_pad = pad_length(size)
        self._t_total = HEADER_SIZE + size + self._t_pad
        self._t_received = HEADER_SIZE
        self._t_attributes = header.attributes
        self._t_optional_term = False
        self._t_trusting_block = False
        self._draining = False
        if trust_blocks and header.eom and not self._m_received and self._m_sniff is not None:
            self._peek_block(buf)

    def _peek_block(self, buf: memoryview) -> None:
        """Block-trust: find the block header right after the transfer header."""
        head = bytes(buf[self._pos : self._pos + _SNIFF])
        if head[:1] != b"#":
            return
        try:
            header = parse_block_header(head, max_size=1 << 62)
        except RemoteProtocolError:
            return
        if header is None or header.payload_length is None:
            return
        self._m_sniff = None
        self._trust_block(header.header_length + header.payload_length)

    def _trust_block(self, end: int) -> int:
        """The transfer holds the block and maybe a terminator, whatever TransferSize said."""
        self._m_block_end = end
        left = max(end - self._m_received, 0)
        self._t_trusting_block = True
        self._t_left = left
        self._t_optional_term = True
        self._t_pad = 0
        self._t_total = _round_up(self._t_received + left + 1, 4)
        return left

    def _payload(self, buf: memoryview, avail: int) -> ResponseData | None:
        n = min(self._t_left, avail)
        sniff = self._m_sniff
        if sniff is not None:
            n = self._sniff(buf, n, avail)
        start = self._pos
        self._pos += n
        self._t_left -= n
        self._t_received += n
        view = buf[start : start + n]
        if (
            not self._t_left
            and self.quirks.transfer_size_includes_padding
            and (self._t_attributes & ATTR_EOM or self.quirks.eom_unreliable)
            and (self._m_block_end is None or self._m_received + n > self._m_block_end)
        ):
            view = self._strip_padding(view)
        size = len(view)
        if not size:
            return None
        self._m_received += size
        self._m_last = view[size - 1]
        return ResponseData(view)

    def _sniff(self, buf: memoryview, n: int, avail: int) -> int:
        """Look for a block header at the message start; may change the transfer length."""
        sniff = self._m_sniff
        assert sniff is not None
        take = min(n, _SNIFF - len(sniff))
        sniff += buf[self._pos : self._pos + take]
        if sniff[0] != 0x23:  # '#'
            self._m_sniff = None
            return n
        try:
            header = parse_block_header(sniff, max_size=1 << 62)
        except RemoteProtocolError:
            self._m_sniff = None  # not a block after all: plain text starting with '#'
            return n
        if header is None:
            if len(sniff) >= _SNIFF:
                self._m_sniff = None
            return n
        self._m_sniff = None
        if header.payload_length is None:
            return n  # '#0': ends at the terminator like text
        end = header.header_length + header.payload_length
        self._m_block_end = end
        if not (self.quirks.transfer_size_wrong_for_blocks and self._t_attributes & ATTR_EOM):
            return n
        return min(self._trust_block(end), avail)

    def _strip_padding(self, view: memoryview) -> memoryview:
        """Drop up to 3 NULs that follow the terminator at the end of a transfer."""
        size = len(view)
        nuls = 0
        while nuls < 3 and nuls < size and view[size - 1 - nuls] == 0:
            nuls += 1
        if nuls and nuls < size and view[size - 1 - nuls] == self.quirks.terminator:
            return view[: size - nuls]
        return view

    def _end_transfer(self, *, full_read: bool) -> NeedRequest | EndOfMessage:
        self._buf = None
        self._draining = False
        self._t_optional_term = False
        if full_read:
            self._zlp_allowance = 1  # the device may still send the terminating ZLP
        term_char = bool(self._t_attributes & ATTR_TERM_CHAR)
        quirks = self.quirks
        block_end = self._m_block_end
        if self._t_trusting_block or quirks.one_request_per_response:
            done = True
        elif quirks.eom_unreliable:
            # The terminator ends the message, but not one inside a definite block.
            inside = block_end is not None and self._m_received <= block_end
            done = not inside and self._m_last == quirks.terminator
        else:
            done = bool(self._t_attributes & ATTR_EOM)
        if done:
            self._move(Ev.MESSAGE_END)
            return EndOfMessage(term_char) if term_char else END_OF_MESSAGE
        self._move(Ev.TRANSFER_END)
        return NeedRequest(term_char) if term_char else NEED_REQUEST

    # -- class requests ------------------------------------------------------------------------

    def get_capabilities(self) -> ControlRequest:
        """GET_CAPABILITIES for this interface."""
        return get_capabilities_request(self.interface)

    def receive_capabilities(self, data: BytesLike) -> UsbtmcCapabilities:
        """Decode GET_CAPABILITIES, apply quirks (``remote_local_broken``) and keep it."""
        caps = parse_capabilities(data)
        if self.quirks.remote_local_broken and (caps.ren_control or caps.rl1):
            caps = replace(caps, ren_control=False, rl1=False)
        self._capabilities = caps
        return caps

    def indicator_pulse(self) -> ControlRequest:
        """INDICATOR_PULSE for this interface."""
        return indicator_pulse_request(self.interface)

    def initiate_abort_bulk_in(self, tag: int | None = None) -> ControlRequest:
        """INITIATE_ABORT_BULK_IN for ``tag`` (default: the last request's bTag)."""
        self._move(Ev.ABORT)
        return initiate_abort_bulk_in_request(
            self._in_tag if tag is None else tag, self.bulk_in_endpoint
        )

    def check_abort_bulk_in_status(self) -> ControlRequest:
        """CHECK_ABORT_BULK_IN_STATUS."""
        self._move(Ev.ABORT)
        return check_abort_bulk_in_status_request(self.bulk_in_endpoint)

    def initiate_abort_bulk_out(self, tag: int | None = None) -> ControlRequest:
        """INITIATE_ABORT_BULK_OUT for ``tag`` (default: the last OUT transfer's bTag)."""
        self._move(Ev.ABORT)
        return initiate_abort_bulk_out_request(
            self._out_tag if tag is None else tag, self.bulk_out_endpoint
        )

    def check_abort_bulk_out_status(self) -> ControlRequest:
        """CHECK_ABORT_BULK_OUT_STATUS."""
        self._move(Ev.ABORT)
        return check_abort_bulk_out_status_request(self.bulk_out_endpoint)

    def initiate_clear(self) -> ControlRequest:
        """INITIATE_CLEAR for this interface."""
        self._move(Ev.ABORT)
        return initiate_clear_request(self.interface)

    def check_clear_status(self) -> ControlRequest:
        """CHECK_CLEAR_STATUS for this interface."""
        self._move(Ev.ABORT)
        return check_clear_status_request(self.interface)

    def reset(self) -> None:
        """Back to IDLE after a completed abort or clear (or to start over).

        The next header may be preceded by one stale zero-length packet, which is skipped.
        """
        self._move(Ev.RESET)
        self._buf = None
        self._asked = 0
        self._header.clear()
        self._t_left = self._t_pad = 0
        self._t_optional_term = False
        self._draining = False
        self._zlp_allowance = 1
        self._reset_message()
