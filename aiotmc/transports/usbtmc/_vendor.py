"""Vendor-specific USBTMC messages and raw class/vendor control transfers.

:class:`UsbtmcVendor` gives what vendor tools and USB488 adapters need beyond SCPI:
VENDOR_SPECIFIC_OUT / REQUEST_VENDOR_SPECIFIC_IN bulk messages
(:mod:`aiotmc.protocol.usbtmc_vendor`) and arbitrary class or vendor control transfers.
Like every other operation they are bounded (sizes checked before anything is sent or
allocated), typed (:mod:`aiotmc._exceptions`), guarded (closed, busy, lost, broken) and
cancellation-safe: a vendor transfer interrupted part-way is aborted by its bTag (bulk-IN
and bulk-OUT aborts, escalating to a device clear), so the next exchange gets its own
answer.
"""

from __future__ import annotations

import math
from typing import Final

from ..._exceptions import (
    ConnectionLostError,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    WriteTimeout,
)
from ..._types import BytesLike
from ...protocol.events import ControlRequest
from ...protocol.usbtmc import HEADER_SIZE, UsbtmcConnection
from ...protocol.usbtmc_vendor import (
    parse_vendor_specific_in,
    request_vendor_specific_in,
    vendor_in_read_size,
    vendor_specific_out,
)
from ._link import UsbtmcLink

__all__ = ["MAX_CONTROL_LENGTH", "UsbtmcVendor"]

MAX_CONTROL_LENGTH: Final = 4096
"""Largest data stage of :meth:`UsbtmcVendor.control_transfer` (Linux usbfs' limit)."""

_CLASS: Final = 0x20
_VENDOR: Final = 0x40
_TYPE_MASK: Final = 0x60
_DEVICE_TO_HOST: Final = 0x80


def _next_tag(conn: UsbtmcConnection) -> int:
    """The next bTag of the connection's sequence: vendor transfers share it, so no two
    consecutive bulk-OUT transfers carry the same bTag."""
    return conn._next_tag()  # the connection has no public allocator (yet)


class UsbtmcVendor(UsbtmcLink):
    """Vendor-specific bulk messages and class/vendor control transfers."""

    async def vendor_write(self, data: BytesLike, *, deadline: float = math.inf) -> None:
        """Send ``data`` as one VENDOR_SPECIFIC_OUT transfer (1 to ``max_transfer_size``
        bytes, else LocalProtocolError). Raises WriteTimeout past ``deadline``,
        UsbStallError, ConnectionLostError; an interrupted transfer is aborted first."""
        size = len(data)
        if not 1 <= size <= self._max_transfer_size:
            raise LocalProtocolError(
                f"a vendor-specific message takes 1 to {self._max_transfer_size} bytes "
                f"(max_transfer_size), got {size}"
            )
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            tag = _next_tag(self._conn)
            transfer = vendor_specific_out(tag, data)
            self._out.inflight = tag
            await self._within(deadline, WriteTimeout, self._port.bulk_out(transfer))
            self._out.inflight = None
        except BaseException as exc:
            await self._after_error(exc)
            raise
        finally:
            self._busy = False

    async def vendor_read(self, max_size: int, *, deadline: float = math.inf) -> bytes:
        """REQUEST_VENDOR_SPECIFIC_IN for at most ``max_size`` bytes (1 to
        ``max_transfer_size``); the VENDOR_SPECIFIC_IN payload (possibly empty).

        Raises ReadTimeout past ``deadline``, RemoteProtocolError when the device breaks
        the framing (another bTag or MsgID, more than asked, a transfer cut short); the
        transfer is aborted (and the device cleared if that fails) before either propagates.
        """
        if not 1 <= max_size <= self._max_transfer_size:
            raise LocalProtocolError(
                f"vendor_read max_size must be 1 to {self._max_transfer_size} "
                f"(max_transfer_size), got {max_size}"
            )
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        tag = _next_tag(self._conn)
        try:
            return await self._within(deadline, ReadTimeout, self._vendor_read(tag, max_size))
        except BaseException as exc:
            await self._after_error(exc, in_tag=tag)
            raise
        finally:
            self._busy = False

    async def _vendor_read(self, tag: int, max_size: int) -> bytes:
        port = self._port
        mps = port.max_packet_size
        await port.bulk_out(request_vendor_specific_in(tag, max_size))
        asked = vendor_in_read_size(max_size, mps)
        data = await port.bulk_in(asked)
        if not data:  # one stale zero-length packet may precede the header
            data = await port.bulk_in(asked)
        length = parse_vendor_specific_in(data, tag=tag, max_size=max_size)
        total = HEADER_SIZE + length
        received = bytearray(data)
        while len(received) < total:  # each read adds bytes or raises: bounded by total
            if not data or len(data) % mps:
                raise RemoteProtocolError(
                    f"VENDOR_SPECIFIC_IN ended after {len(received) - HEADER_SIZE} "
                    f"of {length} bytes"
                )
            asked = vendor_in_read_size(total - len(received), mps)
            data = await port.bulk_in(asked)
            received += data
        if len(data) == asked:
            # The last read ended on a full packet: the device may still send the
            # terminating zero-length packet. Let the next transfer skip it.
            self._conn.reset()
        return bytes(received[HEADER_SIZE:total])

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
        """A class or vendor control transfer on the default endpoint.

        ``request_type`` is bmRequestType: bit 7 set (device-to-host) reads up to
        ``data_or_length`` bytes and returns them; clear, sends the bytes
        ``data_or_length`` (or nothing for ``0``) and returns ``b""``. Standard requests,
        out-of-range fields, data stages over :data:`MAX_CONTROL_LENGTH` bytes and a
        direction that does not match ``data_or_length`` raise LocalProtocolError before
        anything is sent; a request the device refuses raises UsbStallError (the link
        stays usable); ReadTimeout / WriteTimeout past ``deadline``.
        """
        control = _control_request(request_type, request, value, index, data_or_length)
        self._begin()
        try:
            timeout = ReadTimeout if control.is_in else WriteTimeout
            reply = await self._within(deadline, timeout, self._port.control(control))
        except ConnectionLostError as exc:
            self._lost = exc
            raise
        finally:
            self._busy = False
        if not control.is_in:
            return b""
        if len(reply) > control.length:
            raise RemoteProtocolError(
                f"control reply of {len(reply)} bytes, {control.length} asked"
            )
        return bytes(reply)


def _control_request(
    request_type: int, request: int, value: int, index: int, data_or_length: BytesLike | int
) -> ControlRequest:
    """Validate the fields of a class/vendor control transfer; the request as data."""
    for name, field, top in (
        ("request_type", request_type, 0xFF),
        ("request", request, 0xFF),
        ("value", value, 0xFFFF),
        ("index", index, 0xFFFF),
    ):
        if not 0 <= field <= top:
            raise LocalProtocolError(f"{name} must be 0 to {top:#x}, got {field}")
    if request_type & _TYPE_MASK not in (_CLASS, _VENDOR):
        raise LocalProtocolError(
            f"bmRequestType {request_type:#04x} is not a class or vendor request "
            "(standard requests belong to the USB stack)"
        )
    if request_type & _DEVICE_TO_HOST:
        if not isinstance(data_or_length, int):
            raise LocalProtocolError("a device-to-host request takes a length, not data")
        length = data_or_length
        data = b""
    else:
        if isinstance(data_or_length, int):
            if data_or_length:
                raise LocalProtocolError("a host-to-device request takes data, not a length")
            data = b""
        else:
            data = bytes(data_or_length)
        length = len(data)
    if not 0 <= length <= MAX_CONTROL_LENGTH:
        raise LocalProtocolError(
            f"control data stage must be 0 to {MAX_CONTROL_LENGTH} bytes, got {length}"
        )
    return ControlRequest(
        request_type=request_type,
        request=request,
        value=value,
        index=index,
        length=length,
        data=data,
    )
