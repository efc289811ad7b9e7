"""The VXI-11 client link: one core channel (and a lazily opened abort channel).

Every seam operation is one or more core-channel RPCs:

* ``send_message``: device_write in chunks of at most the link's maxRecvSize, END only on
  the last chunk (a short ``size`` sends the rest again);
* ``receive_message``: device_read with a requestSize of its own, looping until END
  (also when the message is an exact multiple of requestSize), or CHR when a
  termination character is configured;
* ``read_stb`` / ``trigger`` / ``clear`` / ``control_ren``: device_readstb,
  device_trigger, device_clear, device_remote / device_local.

Deadlines travel to the device as io_timeout (the remaining milliseconds, at least 10);
the local wait for a reply is io_timeout + lock_timeout + a margin, so the device's own
timeout answer arrives first.

Never a crossed answer: a call given up (cancelled, or no reply in time) is counted by
the channel, and its late reply is recognised by XID and skipped. Before the next
operation the link resynchronises: device_abort on the abort channel (opened on first
need: some devices hang when a client opens it eagerly) ends a device_read still
blocking in the device, then device_clear empties the device's queues so the answer to
an abandoned query cannot reach a later one. The same device_clear follows any read or
write that failed part-way. A stream out of step (partial send, lost framing, too many
unanswered calls) is replaced: new connection, new link, then device_clear (the device's
queues outlive the link).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import struct
from collections.abc import Sequence
from typing import Final, Literal, overload

import anyio

from ..._exceptions import (
    AiotmcError,
    ConnectError,
    ConnectionLostError,
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
)
from ..._fastpath import current_time, running_loop
from ..._types import BytesLike, RenMode
from ...protocol.ieee4882 import block_payload_view
from ...protocol.portmap import PMAP_PORT
from ...protocol.vxi11 import (
    DEVICE_ASYNC,
    DEVICE_CORE,
    DEVICE_INTR,
    DEVICE_TCP,
    END,
    TERMCHRSET,
    VERSION,
    WAITLOCK,
    CreateLinkParms,
    CreateLinkResp,
    DeviceDocmdParms,
    DeviceDocmdResp,
    DeviceEnableSrqParms,
    DeviceError,
    DeviceGenericParms,
    DeviceLink,
    DeviceLockParms,
    DeviceReadResp,
    DeviceReadStbResp,
    DeviceRemoteFunc,
    DeviceWriteResp,
    ErrorCode,
    Proc,
    Reason,
    device_write_head,
    error_for,
)
from ...protocol.xdr import padding
from ...reconnect import Reconnect, retry_connect
from ...srq import SrqBroadcaster
from ..base import Capabilities, TransportInfo
from .block import BlockInto, IndefiniteBlock
from .interrupt import InterruptServer, acquire, release
from .portmapper import cached_port, forget_port, lookup_port
from .rpc import RpcChannel

__all__ = [
    "DEFAULT_REQUEST_SIZE",
    "MAX_RECV_SIZE_CLAMP",
    "REPLY_MARGIN",
    "Vxi11Transport",
]

_log = logging.getLogger("aiotmc.transports.vxi11")

DEFAULT_REQUEST_SIZE: Final = 1 << 20  #: device_read requestSize (independent of maxRecvSize)
MAX_RECV_SIZE_CLAMP: Final = 1 << 30  #: devices answering 0xFFFFFFFF get chunks of this size
REPLY_MARGIN: Final = 0.5  #: seconds waited for a reply beyond io_timeout + lock_timeout
_MIN_IO_TIMEOUT: Final = 10  # ms: 0 is undefined in VXI-11
_MAX_TIMEOUT: Final = 0x7FFFFFFF  # ms, also for "no deadline"
_SMALL_RECORD: Final = 64 * 1024
_ABORT_WAIT: Final = 1.0  # seconds allowed for device_abort
_CLOSE_WAIT: Final = 0.5  # seconds allowed for destroy_link on close
_INTR_SETUP_WAIT: Final = 3.0  # seconds for create_intr_chan + device_enable_srq
_HANDLES: Final = itertools.count(1)  # makes every link's SRQ handle unique
_SRQ_STATUS_WAIT: Final = 2.0  # seconds for the status byte of a service request
_MAX_EMPTY_READS: Final = 100  # device_reads answering nothing, not even END
_MAX_ABANDONED: Final = 3  # unanswered calls before the link is replaced instead
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
_READ_PARMS: Final = struct.Struct(">iIIIii")  # DeviceReadParms, packed in one go
_REFUSALS: Final = frozenset({1, 4, 5, 6, 8, 11, 12, 21, 29})  # error codes: nothing was done
_REMOTE_MODES: Final = frozenset(
    {RenMode.ASSERT, RenMode.ASSERT_ADDRESS, RenMode.ASSERT_LLO, RenMode.ASSERT_ADDRESS_LLO}
)


class _ConsumedError(RemoteProtocolError):
    """A bad response that was read to its end: the link is in step."""


_READ_RESP: Final = struct.Struct(">iiI")  # device_read results up to the data
_PLACE_MIN: Final = 1 << 20  # blocks read into a buffer this large are placed
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


class Vxi11Transport:
    """A :class:`~aiotmc.transports.base.MessageTransport` over VXI-11 (core channel).

    Use :meth:`connect`. ``port``: the core channel's TCP port (None: ask the
    portmapper on ``pmap_port``). ``lock_timeout`` (seconds): how long the device waits
    for a lock held by another link (0: fail at once, the default that works with every
    device). ``request_size``: device_read requestSize. ``term_char``: end reads at this
    byte too (TERMCHRSET). ``pipeline``: a query sends device_write and its first
    device_read together (one round trip; turned off for the link when the server does
    not answer a queued call before it ever did).
    """

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
        self._status_link: tuple[RpcChannel, int] | None = None  # for SRQ status bytes
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
        #: device_enable_srq handle: routes this link's SRQs on the shared listener
        self._intr_handle = f"aiotmc-{self._client_id:x}-{next(_HANDLES)}".encode()
        self.reconnects = 0  #: links replaced after a loss or a desynchronisation
        self.aborts = 0  #: device_abort calls sent
        self.clears = 0  #: device_clear calls sent to resynchronise
        self._info = self._make_info()

    @classmethod
    async def connect(cls, host: str, **kwargs: object) -> Vxi11Transport:
        """Connect and create the link (the caller must ``aclose`` the transport)."""
        transport = cls(host=host, **kwargs)  # type: ignore[arg-type]
        deadline = transport._connect_deadline()
        try:
            await transport._connect(deadline)
        except BaseException:
            await transport.aclose()
            raise
        return transport

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

    # -- MessageTransport ------------------------------------------------------------------

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        """device_write the concatenation of ``parts`` in maxRecvSize chunks."""
        core = await self._enter(deadline)
        self._untouched = True
        try:
            await self._write(core, parts, end, deadline)
        except BaseException:
            if not self._untouched:
                self._dirty = True  # part of the message may be in the device
            raise
        finally:
            self._busy = False

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        """device_read until END (or CHR with a termination character)."""
        core = await self._enter(deadline)
        try:
            return await self._read(core, max_size, deadline)
        except _ConsumedError:
            raise  # the whole message was read: in step
        except BaseException:
            self._dirty = True  # the rest of the answer may still be in the device
            raise
        finally:
            self._busy = False

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        """Send ``message``, then receive its response.

        With ``pipeline`` (the default), device_write and the first device_read go out
        together and the two replies come back in one round trip.
        """
        core = await self._enter(deadline)
        self._untouched = True
        try:
            if self._pipeline and len(message) <= self._max_recv:
                return await self._pipelined(core, message, max_size, deadline)
            # step by step: as send_message then receive_message, claiming the link once
            await self._write(core, (message,), True, deadline)
            return await self._read(core, max_size, deadline)
        except _ConsumedError:
            raise  # the whole message was read: in step
        except BaseException:
            if not self._untouched:
                self._dirty = True
            raise
        finally:
            self._busy = False

    async def _pipelined(
        self, core: RpcChannel, message: bytes, max_size: int, deadline: float
    ) -> bytes:
        size = len(message)
        until = self._wait_until(deadline)
        io_ms = self._io_ms(deadline)
        head = device_write_head(self._lid, io_ms, self._lock_ms, self._flags | END, size)
        # The queued read never waits for a lock (WAITLOCK): right after our write got
        # access there is nothing to wait for, and after a refused write it must not
        # wait for the lock and then take output that is not ours.
        write, read = await core.send_calls(
            [
                (Proc.DEVICE_WRITE, [head, message, padding(size)]),
                (Proc.DEVICE_READ, [self._read_parms(deadline, io_ms, wait_lock=False)]),
            ],
            wait_until=until,
        )
        try:
            results = await core.reply(
                write, wait_until=until, writing=True, proc=Proc.DEVICE_WRITE
            )
            reply = _write_resp(results)
        except AiotmcError as exc:
            self._distrust_pipelining(core, exc)
            raise
        if reply.error:
            self._untouched = self._untouched and reply.error in _REFUSALS
            await self._settle_queued_read(core, read, reply.error, deadline)
            raise error_for(reply.error, "device_write", resource=self._resource)
        self._untouched = False
        if reply.size < size:
            # A short write: the queued read would wait for an answer to a message that is
            # not complete. End it (device_abort), then finish step by step.
            await self._send_abort(deadline)
            try:
                await core.reply(read, wait_until=until, proc=Proc.DEVICE_READ)
            except RemoteProtocolError:
                pass  # its reply was consumed, whatever it said
            rest = memoryview(message)[max(reply.size, 0) :]
            await self._write(core, [rest], True, deadline)
            return await self._read(core, max_size, deadline)
        try:
            first = await core.reply(read, wait_until=until, proc=Proc.DEVICE_READ)
        except AiotmcError as exc:
            self._distrust_pipelining(core, exc)
            raise
        self._pipeline_proven = True
        return await self._read(core, max_size, deadline, first=first)

    def _distrust_pipelining(self, core: RpcChannel, exc: AiotmcError) -> None:
        """A pipelined query failed before the server ever answered a queued call: it
        may be one that drops or stalls calls queued behind another. Query step by step
        from now on; the error is raised as is and the connection is replaced (a call
        such a server dropped would stay owed for ever)."""
        if self._pipeline_proven:
            return
        self._pipeline = False
        core.broken = True
        _log.warning(
            "%s: no answer to a pipelined query (%s); querying step by step from now on",
            self._resource,
            exc,
        )

    async def _settle_queued_read(
        self, core: RpcChannel, read: int, error: int, deadline: float
    ) -> None:
        """After a failed pipelined device_write: collect the reply to the device_read
        queued behind it, briefly, so the link is in step at once (no device_clear of a
        device that a refusal left untouched). A read that would wait for a response is
        ended by device_abort first (after "locked" or "invalid link" it is refused at
        once). Whatever output it took is dropped (and the device cleared before the
        next operation); a reply that does not come stays owed (the next operation
        resynchronises)."""
        if error not in (
            ErrorCode.DEVICE_LOCKED_BY_ANOTHER_LINK,
            ErrorCode.INVALID_LINK_IDENTIFIER,
        ):
            await self._send_abort(deadline)
        until = min(self._wait_until(deadline), anyio.current_time() + _ABORT_WAIT)
        try:
            results = await core.reply(read, wait_until=until, proc=Proc.DEVICE_READ)
            read_error, reason, data = _read_resp(results)
            if not read_error and (len(data) or reason):
                self._dirty = True  # it took output: clear before the next operation
        except AiotmcError:
            pass  # still owed, or consumed whatever it said: the next operation resyncs

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a block response message and return its payload.

        Into a buffer of 1 MiB or more, the payload of large device_read replies goes
        from the socket straight into ``into`` (no copy)."""
        if into is not None and len(into) >= _PLACE_MIN and self._term_char is None:
            return await self._receive_block_into(into, max_size=max_size, deadline=deadline)
        core = await self._enter(deadline)
        try:
            message = await self._read(core, max_size + 64, deadline, copy=False)
        except _ConsumedError:
            raise  # the whole message was read: in step
        except BaseException:
            self._dirty = True  # the rest of the answer may still be in the device
            raise
        finally:
            self._busy = False
        payload = block_payload_view(message, max_size=max_size)
        if into is None:
            return memoryview(bytearray(payload))
        if len(into) < len(payload):
            raise LocalProtocolError(
                f"block of {len(payload)} bytes does not fit the {len(into)}-byte buffer"
            )
        into[: len(payload)] = payload
        return into[: len(payload)]

    async def _receive_block_into(
        self, into: memoryview, *, max_size: int, deadline: float
    ) -> memoryview:
        core = await self._enter(deadline)
        try:
            return await self._read_block_into(core, into, max_size, deadline)
        except _ConsumedError:
            raise  # the whole message was read: in step
        except BaseException:
            self._dirty = True  # the rest of the answer may still be in the device
            raise
        finally:
            self._busy = False

    async def _read_block_into(
        self, core: RpcChannel, into: memoryview, max_size: int, deadline: float
    ) -> memoryview:
        block = BlockInto(into, max_size=max_size)
        empty = 0
        while True:
            until = self._wait_until(deadline)
            xid = await core.send_call(
                Proc.DEVICE_READ, [self._read_parms(deadline)], wait_until=until
            )
            results, placed = await core.reply_placed(
                xid, block.place, wait_until=until, proc=Proc.DEVICE_READ
            )
            if placed is None:
                error, reason, data = _read_resp(results)
                if error:
                    raise error_for(error, "device_read", resource=self._resource)
                try:
                    block.feed(data)
                except IndefiniteBlock:  # "#0": cannot be placed; read it the usual way
                    message = await self._read(
                        core, max_size + 64, deadline, first=results, copy=False
                    )
                    payload = block_payload_view(message, max_size=max_size)
                    if len(into) < len(payload):
                        raise LocalProtocolError(
                            f"block of {len(payload)} bytes does not fit the "
                            f"{len(into)}-byte buffer"
                        ) from None
                    into[: len(payload)] = payload
                    return into[: len(payload)]
                size = len(data)
            else:
                # The reply lacks the placed stretch; its data ran from record offset
                # 36 (results offset 12) for ``length`` bytes.
                offset, count = placed
                error, reason, length = _READ_RESP.unpack_from(results)
                block.feed(results[12 : offset - 24])
                block.placed(count)
                block.feed(results[offset - 24 : 12 + length - count])
                size = length
            if reason & _END:
                return block.result()
            empty = empty + 1 if size == 0 else 0
            if empty > _MAX_EMPTY_READS:
                raise RemoteProtocolError(
                    f"device_read: {empty} empty answers in a row without END"
                )

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """device_readstb."""
        results = await self._simple(Proc.DEVICE_READSTB, "device_readstb", deadline)
        reply = DeviceReadStbResp.decode(results)
        if reply.error:
            raise error_for(reply.error, "device_readstb", resource=self._resource)
        return reply.stb & 0xFF

    async def trigger(self, *, deadline: float = math.inf) -> None:
        """device_trigger."""
        await self._checked(Proc.DEVICE_TRIGGER, "device_trigger", deadline)

    async def clear(self, *, deadline: float = math.inf) -> None:
        """device_clear: the device empties its queues; the link is in step afterwards."""
        await self._checked(Proc.DEVICE_CLEAR, "device_clear", deadline)

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """device_remote for the asserting modes (VXI-11 remote also disables local
        controls, i.e. includes lockout), device_local for the others."""
        if RenMode(mode) in _REMOTE_MODES:
            await self._checked(Proc.DEVICE_REMOTE, "device_remote", deadline)
        else:
            await self._checked(Proc.DEVICE_LOCAL, "device_local", deadline)

    async def docmd(
        self, cmd: int, data_in: BytesLike = b"", *, datasize: int = 1, deadline: float = math.inf
    ) -> bytes:
        """device_docmd: a gateway bus command (VXI-11.2, :class:`~aiotmc.protocol.vxi11.Docmd`)
        on this link (an interface link such as ``gpib0``); returns data_out.

        ``data_in`` is in network order, ``datasize`` the size of one element. A link that
        does not take the command raises :class:`~aiotmc.UnsupportedOperation` (error 8).
        See :mod:`aiotmc.transports.vxi11.gateway` for the commands by name.
        """
        core = await self._enter(deadline)
        try:
            parms = DeviceDocmdParms(
                self._lid,
                self._flags,
                self._io_ms(deadline),
                self._lock_ms,
                cmd,
                True,
                datasize,
                data_in,
            )
            results = await core.call(
                Proc.DEVICE_DOCMD, [parms.encode()], wait_until=self._wait_until(deadline)
            )
        finally:
            self._busy = False
        reply = DeviceDocmdResp.decode(results)
        if reply.error:
            raise error_for(reply.error, "device_docmd", resource=self._resource)
        return bytes(reply.data_out)

    async def lock(self, *, timeout: float | None = None, deadline: float = math.inf) -> None:
        """device_lock: exclusive access for this link across clients (VISA's exclusive lock).

        ``timeout`` (seconds): how long the device waits for another link's lock (WAITLOCK);
        None: the link's ``lock_timeout``. Raises :class:`~aiotmc.ResourceBusyError` when
        another link still holds it. Not the Instrument's in-process task lock.
        """
        wait = self._lock_timeout if timeout is None else timeout
        if wait < 0:
            raise ValueError("timeout must be >= 0")
        core = await self._enter(deadline)
        try:
            flags = WAITLOCK if wait > 0 else 0
            parms = DeviceLockParms(self._lid, flags, _ms(wait))
            until = deadline + wait + REPLY_MARGIN
            results = await core.call(Proc.DEVICE_LOCK, [parms.encode()], wait_until=until)
        finally:
            self._busy = False
        error = DeviceError.decode(results).error
        if error:
            raise error_for(error, "device_lock", resource=self._resource)

    async def unlock(self, *, deadline: float = math.inf) -> None:
        """device_unlock (LocalProtocolError when this link holds no lock)."""
        core = await self._enter(deadline)
        try:
            link = DeviceLink(self._lid).encode()
            results = await core.call(
                Proc.DEVICE_UNLOCK, [link], wait_until=self._wait_until(deadline)
            )
        finally:
            self._busy = False
        error = DeviceError.decode(results).error
        if error:
            raise error_for(error, "device_unlock", resource=self._resource)

    async def reconnect(self, *, deadline: float = math.inf) -> None:
        """Replace the connection and the link now."""
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        if self._closed:
            raise anyio.ClosedResourceError
        self._busy = True
        try:
            await self._replace(deadline)
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """destroy_link (briefly, when the link is in step), then close; idempotent."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        core, self._core = self._core, None
        abort, self._abort = self._abort, None
        with anyio.CancelScope(shield=True):
            if core is not None and not core.broken and not core.abandoned and not self._busy:
                with anyio.move_on_after(_CLOSE_WAIT):
                    try:
                        if self._interrupts is not None:
                            await self._call_checked(
                                core, Proc.DESTROY_INTR_CHAN, b"", "destroy_intr_chan"
                            )
                        await core.call(Proc.DESTROY_LINK, [DeviceLink(self._lid).encode()])
                    except (AiotmcError, OSError):
                        pass
            for channel in (abort, core):
                if channel is not None:
                    await channel.aclose()
            interrupts, self._interrupts = self._interrupts, None
            if interrupts is not None:
                await release(interrupts, self._intr_handle)
            await self._drop_status_link()
            self._srq.close()

    # -- connection ------------------------------------------------------------------------

    def _connect_deadline(self) -> float:
        timeout = self._connect_timeout
        return math.inf if timeout is None else anyio.current_time() + timeout

    async def _connect(self, deadline: float) -> None:
        """Open the core channel and create the link."""
        port = self._port
        from_cache = False
        if port is None:
            known = cached_port(self._host, DEVICE_CORE, VERSION, pmap_port=self._pmap_port)
            from_cache = known is not None
            port = await lookup_port(
                self._host, DEVICE_CORE, VERSION, deadline=deadline, pmap_port=self._pmap_port
            )
        try:
            core = await RpcChannel.connect(
                self._host,
                port,
                prog=DEVICE_CORE,
                vers=VERSION,
                max_record=_SMALL_RECORD,
                deadline=deadline,
                what="VXI-11 core channel",
                resource=self._resource,
            )
        except ConnectError:
            if not from_cache:
                raise
            forget_port(self._host, DEVICE_CORE, VERSION, pmap_port=self._pmap_port)
            await self._connect(deadline)  # the server moved: ask the portmapper again
            return
        try:
            parms = CreateLinkParms(
                self._client_id, self._lock_at_open, self._lock_ms, self._device
            )
            results = await core.call(
                Proc.CREATE_LINK, [parms.encode()], wait_until=self._wait_until(deadline)
            )
            reply = CreateLinkResp.decode(results)
            if reply.error:
                raise error_for(reply.error, "create_link", resource=self._resource)
        except BaseException:
            await core.aclose()
            raise
        self._core = core
        self._core_port = port
        self._lid = reply.lid
        self._abort_port = reply.abort_port
        size = reply.max_recv_size
        self._max_recv = min(size, MAX_RECV_SIZE_CLAMP) if size > 0 else 1024
        core.max_record = max(_SMALL_RECORD, self._request_size + 1024)
        self._dirty = False
        if self._want_srq:
            await self._enable_interrupts(core, deadline)
        self._info = self._make_info()

    async def _enable_interrupts(self, core: RpcChannel, deadline: float) -> None:
        """create_intr_chan + device_enable_srq; without them the link has no SRQ."""
        local = core.local_address
        try:
            host_addr = int(ipaddress.IPv4Address(local))
        except ValueError:
            _log.info("%s: no interrupt channel over IPv6 (%s)", self._resource, local)
            return
        interrupts = self._interrupts
        try:
            if interrupts is None:
                interrupts = await acquire(
                    local,
                    self._intr_handle,
                    self._srq,
                    resource=self._resource,
                    status=self._srq_status,
                )
            # A device connects back to us in create_intr_chan; behind a firewall that can
            # hang until its TCP timeout: give up SRQ after a short while, not the link.
            until = min(self._wait_until(deadline), anyio.current_time() + _INTR_SETUP_WAIT)
            chan = DeviceRemoteFunc(host_addr, interrupts.port, DEVICE_INTR, VERSION, DEVICE_TCP)
            results = await core.call(Proc.CREATE_INTR_CHAN, [chan.encode()], wait_until=until)
            error = DeviceError.decode(results).error
            if error not in (0, ErrorCode.CHANNEL_ALREADY_ESTABLISHED):
                raise error_for(error, "create_intr_chan", resource=self._resource)
            srq = DeviceEnableSrqParms(self._lid, True, self._intr_handle)  # never empty
            results = await core.call(Proc.DEVICE_ENABLE_SRQ, [srq.encode()], wait_until=until)
            error = DeviceError.decode(results).error
            if error:
                raise error_for(error, "device_enable_srq", resource=self._resource)
        except (AiotmcError, OSError) as exc:
            if isinstance(exc, ConnectionLostError):
                raise
            _log.info("%s: no service requests: %s", self._resource, exc)
            if interrupts is not None and self._interrupts is None:
                await release(interrupts, self._intr_handle)
            return
        except BaseException:
            if interrupts is not None and self._interrupts is None:
                await release(interrupts, self._intr_handle)
            raise
        self._interrupts = interrupts

    async def _srq_status(self) -> int | None:
        """The status byte after a service request, read by device_readstb on a second
        link of its own (opened on first need), so the link in use is not disturbed."""
        try:
            with anyio.fail_after(_SRQ_STATUS_WAIT):
                if self._status_link is None or self._status_link[0].broken:
                    await self._drop_status_link()
                    channel = await RpcChannel.connect(
                        self._host,
                        self._core_port,
                        prog=DEVICE_CORE,
                        vers=VERSION,
                        max_record=_SMALL_RECORD,
                        deadline=math.inf,
                        what="VXI-11 core channel (status link)",
                        resource=self._resource,
                    )
                    self._status_link = (channel, -1)
                    parms = CreateLinkParms(self._client_id, False, 0, self._device)
                    reply = CreateLinkResp.decode(
                        await channel.call(Proc.CREATE_LINK, [parms.encode()])
                    )
                    if reply.error:
                        raise error_for(reply.error, "create_link", resource=self._resource)
                    self._status_link = (channel, reply.lid)
                channel, lid = self._status_link
                poll = DeviceGenericParms(lid, 0, 0, _ms(_SRQ_STATUS_WAIT))
                stb = DeviceReadStbResp.decode(
                    await channel.call(Proc.DEVICE_READSTB, [poll.encode()])
                )
                if stb.error:
                    raise error_for(stb.error, "device_readstb", resource=self._resource)
                return stb.stb & 0xFF
        except (AiotmcError, OSError, TimeoutError) as exc:
            _log.info("%s: no status byte for a service request: %s", self._resource, exc)
            await self._drop_status_link()
            return None

    async def _drop_status_link(self) -> None:
        link, self._status_link = self._status_link, None
        if link is not None:
            await link[0].aclose()

    async def _call_checked(self, core: RpcChannel, proc: Proc, args: bytes, name: str) -> None:
        error = DeviceError.decode(await core.call(proc, [args])).error
        if error:
            raise error_for(error, name, resource=self._resource)

    async def _drop(self) -> None:
        core, self._core = self._core, None
        abort, self._abort = self._abort, None
        for channel in (abort, core):
            if channel is not None:
                await channel.aclose()

    async def _replace(self, deadline: float) -> None:
        await self._drop()
        if self._policy is None:
            await self._connect(min(deadline, self._connect_deadline()))
        else:

            async def attempt() -> None:
                await self._connect(min(deadline, self._connect_deadline()))

            await retry_connect(self._policy, attempt, resource=self._resource, deadline=deadline)
        self.reconnects += 1

    # -- resynchronisation -----------------------------------------------------------------

    async def _enter(self, deadline: float) -> RpcChannel:
        """Claim the link and bring it in step for a new operation."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError("another task is using this transport")
        self._busy = True
        try:
            core = self._core
            if core is None or core.broken or core.abandoned > _MAX_ABANDONED:
                await self._replace(deadline)
                # the device's queues outlive the link: an answer to a query sent on the
                # old link may still be there
                assert self._core is not None
                await self._device_clear(self._core, deadline)
            elif core.abandoned:
                await self._send_abort(deadline)
                await self._device_clear(core, deadline)  # late replies are skipped first
            elif self._dirty:
                await self._device_clear(core, deadline)
        except BaseException:
            self._busy = False
            raise
        assert self._core is not None
        return self._core

    async def _device_clear(self, core: RpcChannel, deadline: float) -> None:
        self.clears += 1
        parms = DeviceGenericParms(self._lid, self._flags, self._lock_ms, self._io_ms(deadline))
        results = await core.call(
            Proc.DEVICE_CLEAR, [parms.encode()], wait_until=self._wait_until(deadline)
        )
        error = DeviceError.decode(results).error
        if error:
            raise error_for(error, "device_clear", resource=self._resource)
        self._dirty = False

    async def _send_abort(self, deadline: float) -> None:
        """device_abort on the abort channel, best effort and briefly (opened lazily)."""
        if self._abort_refused or not self._abort_port:
            return
        self.aborts += 1
        with anyio.CancelScope(deadline=min(deadline, anyio.current_time() + _ABORT_WAIT)):
            try:
                if self._abort is None or self._abort.broken:
                    self._abort = await RpcChannel.connect(
                        self._host,
                        self._abort_port,
                        prog=DEVICE_ASYNC,
                        vers=VERSION,
                        max_record=_SMALL_RECORD,
                        deadline=math.inf,
                        what="VXI-11 abort channel",
                        resource=self._resource,
                    )
                link = DeviceLink(self._lid).encode()
                results = await self._abort.call(Proc.DEVICE_ABORT, [link])
                error = DeviceError.decode(results).error
                if error:
                    _log.debug("%s: device_abort answered error %d", self._resource, error)
            except ConnectError as exc:
                _log.info("%s: no abort channel (%s); waiting instead", self._resource, exc)
                self._abort_refused = True
            except (AiotmcError, OSError) as exc:
                _log.info("%s: device_abort failed: %s", self._resource, exc)
                if self._abort is not None:
                    await self._abort.aclose()
                    self._abort = None

    # -- operations ------------------------------------------------------------------------

    def _io_ms(self, deadline: float) -> int:
        if deadline == math.inf:
            return _MAX_TIMEOUT
        return max(_MIN_IO_TIMEOUT, _ms(deadline - current_time(running_loop())))

    def _wait_until(self, deadline: float) -> float:
        return deadline + self._lock_timeout + REPLY_MARGIN

    async def _simple(self, proc: Proc, name: str, deadline: float) -> memoryview:
        core = await self._enter(deadline)
        try:
            parms = DeviceGenericParms(self._lid, self._flags, self._lock_ms, self._io_ms(deadline))
            return await core.call(proc, [parms.encode()], wait_until=self._wait_until(deadline))
        finally:
            self._busy = False

    async def _checked(self, proc: Proc, name: str, deadline: float) -> None:
        error = DeviceError.decode(await self._simple(proc, name, deadline)).error
        if error:
            raise error_for(error, name, resource=self._resource)

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
