"""What every layer of a VXI-11 link shares: its limits, timeouts and reply decoding (one job).

The link's sizes and waits, deadlines turned into the milliseconds VXI-11 carries
(:func:`_ms`), and the decoding of device_read and device_write replies without building
their dataclasses (the query path's). Pure: no I/O, no state.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from ..._exceptions import RemoteProtocolError
from ...protocol.vxi11 import DeviceReadResp, DeviceWriteResp, Reason

__all__ = [
    "DEFAULT_REQUEST_SIZE",
    "MAX_RECV_SIZE_CLAMP",
    "REPLY_MARGIN",
]

DEFAULT_REQUEST_SIZE: Final = 1 << 20  #: device_read requestSize (independent of maxRecvSize)
MAX_RECV_SIZE_CLAMP: Final = 1 << 30  #: devices answering 0xFFFFFFFF get chunks of this size
REPLY_MARGIN: Final = 0.5  #: seconds waited for a reply beyond io_timeout + lock_timeout
_MIN_IO_TIMEOUT: Final = 10  # ms: 0 is undefined in VXI-11
_MAX_TIMEOUT: Final = 0x7FFFFFFF  # ms, also for "no deadline"
_SMALL_RECORD: Final = 64 * 1024
_ABORT_WAIT: Final = 1.0  # seconds allowed for device_abort
_MAX_EMPTY_READS: Final = 100  # device_reads answering nothing, not even END
_READ_PARMS: Final = struct.Struct(">iIIIii")  # DeviceReadParms, packed in one go
_REFUSALS: Final = frozenset({1, 4, 5, 6, 8, 11, 12, 21, 29})  # error codes: nothing was done


class _ConsumedError(RemoteProtocolError):
    """A bad response that was read to its end: the link is in step."""


_READ_RESP: Final = struct.Struct(">iiI")  # device_read results up to the data
_END: Final = int(Reason.END)
_END_OR_CHR: Final = int(Reason.END | Reason.CHR)


def _read_resp(results: memoryview) -> tuple[int, int, memoryview]:
    """device_read results (error, reason, data as a view); as DeviceReadResp.decode,
    without building the dataclass."""
    if len(results) >= 12:
        error, reason, size = _READ_RESP.unpack_from(results)
        if 12 + size <= len(results):
            return error, reason, results[12 : 12 + size]
    reply = DeviceReadResp.decode(results)  # raises RemoteProtocolError, naming the problem
    return reply.error, reply.reason, memoryview(reply.data)


_WRITE_RESP: Final = struct.Struct(">iI")


def _write_resp(results: memoryview) -> DeviceWriteResp:
    """device_write results; as DeviceWriteResp.decode, with one struct."""
    if len(results) >= 8:
        return DeviceWriteResp(*_WRITE_RESP.unpack_from(results))
    return DeviceWriteResp.decode(results)  # raises RemoteProtocolError, naming the problem


def _ms(seconds: float) -> int:
    if math.isinf(seconds):
        return _MAX_TIMEOUT
    return min(_MAX_TIMEOUT, max(0, math.ceil(seconds * 1000)))
