"""The state of a VXI-11 link and its core-channel primitives (one job).

:class:`LinkCore` holds everything a link knows (its address and options, the core and
abort channels, the link id, the device's maxRecvSize, the flags that say whether the
device is in step) and the primitives the message path is built from: device_write in
chunks of at most maxRecvSize (:meth:`_write`), device_read until END or CHR
(:meth:`_read`), and the io_timeout and reply wait of a deadline.

The transport is this class plus layers that each add one job (:mod:`._srq`,
:mod:`._connect`, :mod:`._resync`, :mod:`._control`, then :mod:`.transport`), as
subclasses rather than separate objects: the query path
(:meth:`~.transport.Vxi11Transport.exchange`) reads and writes this state directly on
the instance, so held elsewhere it would cost a lookup per query, and a reconnection
replaces most of it. The status link for service requests, whose state is its own, is an
object (:mod:`._status`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Final, Literal, overload

from ..._exceptions import RemoteProtocolError, TransportError
from ..._fastpath import current_time, running_loop
from ..._types import BytesLike
from ...protocol.portmap import PMAP_PORT
from ...protocol.vxi11 import END, TERMCHRSET, WAITLOCK, Proc, device_write_head, error_for
from ...protocol.xdr import padding
from ...reconnect import Reconnect
from ...srq import SrqBroadcaster
from ..base import Capabilities, TransportInfo
from ._status import StatusLink
from ._wire import (
    _END,
    _END_OR_CHR,
    _MAX_EMPTY_READS,
    _MAX_TIMEOUT,
    _MIN_IO_TIMEOUT,
    _READ_PARMS,
    _REFUSALS,
    DEFAULT_REQUEST_SIZE,
    MAX_RECV_SIZE_CLAMP,
    REPLY_MARGIN,
    _ConsumedError,
    _ms,
    _read_resp,
    _write_resp,
)
from .interrupt import InterruptServer
from .rpc import RpcChannel

__all__ = ["LinkCore"]

_HANDLES: Final = itertools.count(1)  # makes every link's SRQ handle unique
_CAPABILITIES: Final = Capabilities(
    read_stb=True, device_clear=True, trigger=True, remote_local=True, eom=True, locking=True
)
_CAPABILITIES_SRQ: Final = Capabilities(
    srq=True,
    read_stb=True,
    device_clear=True,
    trigger=True,
    remote_local=True,
    eom=True,
    locking=True,
)


class LinkCore:
    """A VXI-11 link's state and core-channel primitives (see :class:`.transport.Vxi11Transport`
    for the arguments)."""

    def __init__(
        self,
        *,
        host: str,
        device: str = "inst0",
        port: int | None = None,
        pmap_port: int = PMAP_PORT,
        resource: str | None = None,
        lock_timeout: float = 0.0,
        request_size: int = DEFAULT_REQUEST_SIZE,
        term_char: int | None = None,
        lock_at_open: bool = False,
        pipeline: bool = True,
        srq: bool = True,
        connect_timeout: float | None = 10.0,
        reconnect: Reconnect | None = None,
    ) -> None:
        if not 1 <= request_size <= MAX_RECV_SIZE_CLAMP:
            raise ValueError(f"request_size must be 1..{MAX_RECV_SIZE_CLAMP}, got {request_size}")
        if term_char is not None and not 0 <= term_char <= 255:
            raise ValueError(f"term_char must be a byte value, got {term_char}")
        if lock_timeout < 0:
            raise ValueError("lock_timeout must be >= 0")
        self._host = host
        self._device = device
        self._port = port
        self._pmap_port = pmap_port
        self._resource = resource or f"TCPIP0::{host}::{device}::INSTR"
        self._lock_timeout = lock_timeout
        self._lock_ms = _ms(lock_timeout)
        self._flags = WAITLOCK if lock_timeout > 0 else 0
        self._request_size = request_size
        self._term_char = term_char
        self._lock_at_open = lock_at_open
        self._pipeline = pipeline
        self._pipeline_proven = False  # the server answered a queued call at least once
        self._want_srq = srq
        self._interrupts: InterruptServer | None = None  # shared by the loop's links
        self._srq = SrqBroadcaster(self._resource)
        self._connect_timeout = connect_timeout
        self._policy = reconnect
        self._core: RpcChannel | None = None
        self._abort: RpcChannel | None = None
        self._abort_refused = False
        self._lid = 0
        self._abort_port = 0
        self._core_port = 0
        self._max_recv = 0
        self._dirty = False  # the device may hold a stale answer or partial input
        self._untouched = True  # the device_write in progress has not changed the device
        self._busy = False
        self._closed = False
        self._client_id = id(self) & 0x7FFFFFFF
        self._status = StatusLink(  # reads the status byte of a service request
            host, device, self._client_id, self._resource
        )
        #: device_enable_srq handle: routes this link's SRQs on the shared listener
        self._intr_handle = f"aiotmc-{self._client_id:x}-{next(_HANDLES)}".encode()
        self.reconnects = 0  #: links replaced after a loss or a desynchronisation
        self.aborts = 0  #: device_abort calls sent
        self.clears = 0  #: device_clear calls sent to resynchronise
        self._info = self._make_info()

    # -- facts -----------------------------------------------------------------------------

    def _make_info(self) -> TransportInfo:
        details = {"host": self._host, "device": self._device}
        if self._core is not None:
            details.update(
                lid=str(self._lid),
                port=str(self._core_port),
                max_recv_size=str(self._max_recv),
                abort_port=str(self._abort_port),
            )
        return TransportInfo(
            resource=self._resource,
            kind="vxi11",
            capabilities=_CAPABILITIES_SRQ if self._interrupts is not None else _CAPABILITIES,
            details=details,
        )

    @property
    def info(self) -> TransportInfo:
        """Static facts about the link."""
        return self._info

    @property
    def srq(self) -> SrqBroadcaster | None:
        """Service requests from the interrupt channel; None when the device has none."""
        return self._srq if self._interrupts is not None else None

    @property
    def link_id(self) -> int:
        """The device link id (0 is valid)."""
        return self._lid

    @property
    def max_recv_size(self) -> int:
        """The largest device_write chunk (the device's maxRecvSize, clamped)."""
        return self._max_recv

    # -- the core channel --------------------------------------------------------------------

    def _io_ms(self, deadline: float) -> int:
        if deadline == math.inf:
            return _MAX_TIMEOUT
        return max(_MIN_IO_TIMEOUT, _ms(deadline - current_time(running_loop())))

    def _wait_until(self, deadline: float) -> float:
        return deadline + self._lock_timeout + REPLY_MARGIN

    def _written(self, results: memoryview, size: int) -> int:
        """The bytes of ``size`` that a device_write took (its reply in ``results``); a
        typed error when the device refused them or took none."""
        reply = _write_resp(results)
        if reply.error:
            # a refusal (locked, bad parameter...) of a first write changed nothing
            self._untouched = self._untouched and reply.error in _REFUSALS
            raise error_for(reply.error, "device_write", resource=self._resource)
        self._untouched = False
        taken = min(reply.size, size)
        if taken == 0 and size:
            raise TransportError(
                "device_write: the device took none of the data", resource=self._resource
            )
        return taken

    async def _write(
        self, core: RpcChannel, parts: Sequence[BytesLike], end: bool, deadline: float
    ) -> None:
        if len(parts) == 1 and isinstance(parts[0], bytes) and 0 < len(parts[0]) <= self._max_recv:
            # The usual case: one message that fits one device_write.
            data = parts[0]
            size = len(data)
            flags = self._flags | END if end else self._flags
            head = device_write_head(self._lid, self._io_ms(deadline), self._lock_ms, flags, size)
            results = await core.call(
                Proc.DEVICE_WRITE,
                (head + data + padding(size),),
                wait_until=self._wait_until(deadline),
                writing=True,
            )
            taken = self._written(results, size)
            if taken >= size:
                return
            parts = (memoryview(data)[taken:],)  # a short write: the rest the long way
        views = [memoryview(p).cast("B") for p in parts]
        views = [v for v in views if len(v)] or [memoryview(b"")]
        limit = self._max_recv
        index = 0  # current part
        offset = 0  # into views[index]
        remaining = sum(len(v) for v in views)
        while True:
            pieces: list[BytesLike] = []
            size = 0
            i, o = index, offset
            while size < limit and i < len(views):
                take = min(limit - size, len(views[i]) - o)
                pieces.append(views[i][o : o + take])
                size += take
                o += take
                if o == len(views[i]):
                    i, o = i + 1, 0
            last = size == remaining
            flags = self._flags | (END if last and end else 0)
            head = device_write_head(self._lid, self._io_ms(deadline), self._lock_ms, flags, size)
            results = await core.call(
                Proc.DEVICE_WRITE,
                [head, *pieces, padding(size)],
                wait_until=self._wait_until(deadline),
                writing=True,
            )
            taken = self._written(results, size)
            remaining -= taken
            if remaining == 0:
                return
            while taken:  # advance past what the device took (it may be a short write)
                step = min(taken, len(views[index]) - offset)
                taken -= step
                offset += step
                if offset == len(views[index]):
                    index, offset = index + 1, 0

    def _read_parms(
        self, deadline: float, io_ms: int | None = None, *, wait_lock: bool = True
    ) -> bytes:
        flags = self._flags if wait_lock else self._flags & ~WAITLOCK
        term = 0
        if self._term_char is not None:
            flags |= TERMCHRSET
            term = self._term_char
        if io_ms is None:
            io_ms = self._io_ms(deadline)
        lock_ms = self._lock_ms if wait_lock else 0
        return _READ_PARMS.pack(self._lid, self._request_size, io_ms, lock_ms, flags, term)

    @overload
    async def _read(
        self,
        core: RpcChannel,
        max_size: int,
        deadline: float,
        first: memoryview | None = None,
        *,
        copy: Literal[True] = True,
    ) -> bytes: ...

    @overload
    async def _read(
        self,
        core: RpcChannel,
        max_size: int,
        deadline: float,
        first: memoryview | None = None,
        *,
        copy: bool,
    ) -> BytesLike: ...

    async def _read(
        self,
        core: RpcChannel,
        max_size: int,
        deadline: float,
        first: memoryview | None = None,
        *,
        copy: bool = True,
    ) -> BytesLike:
        """device_read until the end of the message; ``copy=False`` may return a view
        into the received record (one copy less for blocks)."""
        chunks: list[BytesLike] = []
        total = 0
        empty = 0
        stop = _END if self._term_char is None else _END_OR_CHR
        while True:
            if first is not None:
                results, first = first, None
            else:
                results = await core.call(
                    Proc.DEVICE_READ,
                    [self._read_parms(deadline)],
                    wait_until=self._wait_until(deadline),
                )
            error, reason, data = _read_resp(results)
            if error:
                raise error_for(error, "device_read", resource=self._resource)
            size = len(data)
            if total + size <= max_size:
                chunks.append(data)
            elif chunks:
                chunks.clear()  # too long: read on to the end, keep nothing
            total += size
            if reason & stop:
                break
            empty = empty + 1 if size == 0 else 0
            if empty > _MAX_EMPTY_READS:
                raise RemoteProtocolError(
                    f"device_read: {empty} empty answers in a row without END"
                )
        if total > max_size:
            raise _ConsumedError(f"response of {total} bytes exceeds max_size={max_size}")
        if len(chunks) == 1:
            return bytes(chunks[0]) if copy else chunks[0]
        return b"".join(chunks)
