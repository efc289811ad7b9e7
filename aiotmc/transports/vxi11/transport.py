"""The VXI-11 client transport: opening a link, its message path, closing it (this module).

The link is one core channel (and a lazily opened abort channel).

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

:class:`Vxi11Transport` is built in layers (subclasses, for the reason given in
:mod:`._core`), each in its module with one job: :mod:`._core` (the link's state, chunked
device_write and device_read to END), :mod:`._srq` (the interrupt channel),
:mod:`._connect` (portmapper, core channel, create_link), :mod:`._resync` (device_abort,
device_clear and reconnection before an operation), :mod:`._control` (status byte,
trigger, clear, remote/local, docmd, locks), and this module (opening; messages,
pipelined queries, blocks; closing). Objects and functions of their own: :mod:`._status`
(the status byte of a service request, on a second link), :mod:`._wire` (limits,
timeouts, reply decoding), :mod:`.block` (blocks straight into a buffer),
:mod:`.interrupt` (the shared interrupt listener), :mod:`.rpc` (the ONC-RPC channel).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Final

import anyio

from ..._exceptions import AiotmcError, LocalProtocolError, RemoteProtocolError
from ..._types import BytesLike
from ...protocol.ieee4882 import block_payload_view
from ...protocol.vxi11 import (
    END,
    DeviceError,
    DeviceLink,
    ErrorCode,
    Proc,
    device_write_head,
    error_for,
)
from ...protocol.xdr import padding
from ._control import ControlOperations
from ._wire import (
    _ABORT_WAIT,
    _END,
    _MAX_EMPTY_READS,
    _READ_RESP,
    _REFUSALS,
    DEFAULT_REQUEST_SIZE,
    MAX_RECV_SIZE_CLAMP,
    REPLY_MARGIN,
    _ConsumedError,
    _read_resp,
    _write_resp,
)
from .block import BlockInto, IndefiniteBlock
from .interrupt import release
from .rpc import RpcChannel

__all__ = [
    "DEFAULT_REQUEST_SIZE",
    "MAX_RECV_SIZE_CLAMP",
    "REPLY_MARGIN",
    "Vxi11Transport",
]

_log = logging.getLogger("aiotmc.transports.vxi11")

_CLOSE_WAIT: Final = 0.5  # seconds allowed for destroy_link on close
_PLACE_MIN: Final = 1 << 20  # blocks read into a buffer this large are placed


class Vxi11Transport(ControlOperations):
    """A :class:`~aiotmc.transports.base.MessageTransport` over VXI-11 (core channel).

    Use :meth:`connect`. ``port``: the core channel's TCP port (None: ask the
    portmapper on ``pmap_port``). ``lock_timeout`` (seconds): how long the device waits
    for a lock held by another link (0: fail at once, the default that works with every
    device). ``request_size``: device_read requestSize. ``term_char``: end reads at this
    byte too (TERMCHRSET). ``pipeline``: a query sends device_write and its first
    device_read together (one round trip; turned off for the link when the server does
    not answer a queued call before it ever did).
    """

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

    # -- closing ---------------------------------------------------------------------------

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
            await self._status.aclose()
            self._srq.close()

    async def _call_checked(self, core: RpcChannel, proc: Proc, args: bytes, name: str) -> None:
        error = DeviceError.decode(await core.call(proc, [args])).error
        if error:
            raise error_for(error, name, resource=self._resource)
