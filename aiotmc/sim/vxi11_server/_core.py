"""The core channel: :class:`CoreChannel` answers create_link / destroy_link,
device_write / device_read, device_lock / unlock, the generic calls (readstb, trigger,
clear, remote, local), device_enable_srq and create / destroy_intr_chan; it owns the
links, the locks and the interrupt channels of its connections."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

import anyio

from ..._fastpath import current_time, running_loop
from ...protocol.oncrpc import AcceptStat, encode_accepted_error, encode_reply, reply_header
from ...protocol.vxi11 import (
    DEVICE_CORE,
    END,
    TERMCHRSET,
    VERSION,
    WAITLOCK,
    CreateLinkParms,
    CreateLinkResp,
    DeviceEnableSrqParms,
    DeviceError,
    DeviceGenericParms,
    DeviceLink,
    DeviceLockParms,
    DeviceReadParms,
    DeviceReadStbResp,
    DeviceRemoteFunc,
    DeviceWriteParms,
    DeviceWriteResp,
    ErrorCode,
    Proc,
    Reason,
)
from ..device import SimDevice
from ..gpib_bus import GpibBus, gpib_buses
from ..rpc_server import Reply, RpcConnection, RpcServer
from ._args import (
    ACCEPTED,
    GENERIC,
    LID,
    LINK_PROCS,
    PAD,
    READ_REPLY,
    UNSUPPORTED,
    WRITE_RESP,
    error_only,
    read_parms,
    write_parms,
)
from ._gateway import bus_of, interface_call
from ._interrupts import Interrupts, close_interrupts, create_intr_chan
from ._links import Link, ReadResult
from ._locks import Lock, access, locked_out, unlock

__all__ = ["CoreChannel"]

_log = logging.getLogger("aiotmc.sim.vxi11")

_RECORD_OVERHEAD: Final = 1024
_MAX_LINKS_PER_CONNECTION: Final = 16


class CoreChannel(RpcServer):
    """The core channel of :class:`~aiotmc.sim.vxi11_server.Vxi11Server` (its base
    class): serves ``devices`` (VXI-11 names to devices) on the connections given to
    :meth:`_serve_core`."""

    log = _log

    def __init__(
        self,
        devices: Mapping[str, SimDevice],
        *,
        abort_port: int,
        max_recv_size: int,
        max_message_size: int,
        host: str,
        max_connections: int,
        idle_timeout: float,
        send_timeout: float,
    ) -> None:
        super().__init__(
            host=host,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
        )
        self.devices = {name.lower(): device for name, device in devices.items()}
        #: Gateway mode: the GPIB bus of each interface named by devices ``gpibN,addr``;
        #: ``create_link("gpib0")`` opens an interface link for device_docmd.
        self.buses = gpib_buses(self.devices)
        #: The abort channel's port, announced by create_link (the bound one once served).
        self.abort_port = abort_port
        self.max_recv_size = max_recv_size
        self.max_message_size = max_message_size
        #: Fault hook: a response that is an exact multiple of requestSize ends with
        #: REQCNT only, and END comes in one more, empty, device_read (pyvisa-py #608).
        self.split_exact_multiple = False
        #: Remote state set by device_remote / device_local, by device name.
        self.remote: dict[str, bool] = {}
        #: Fault hook: every create_link and device_write answers a maxRecvSize / size
        #: of this many bytes (a device that takes its input in small pieces).
        self.short_writes: int | None = None
        self._interrupts: dict[RpcConnection, Interrupts] = {}
        self._links: dict[int, Link] = {}
        self._interface_links: dict[int, GpibBus] = {}  # lid -> its bus
        self._locks: dict[str, Lock] = {}
        self._next_lid = 0

    @property
    def links(self) -> int:
        """Links open now."""
        return len(self._links)

    def _connection_closed(self, conn: RpcConnection) -> None:
        for lid in list(conn.links):
            self._destroy(lid)
        interrupts = self._interrupts.pop(conn, None)
        if interrupts is not None:
            self._close_interrupts(interrupts)

    # -- calls -----------------------------------------------------------------------------

    async def _serve_core(self, conn: RpcConnection) -> None:
        await self._loop(conn, self.max_recv_size + _RECORD_OVERHEAD, self._core_call)

    async def _core_call(
        self, conn: RpcConnection, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> Reply:
        if prog != DEVICE_CORE:
            return encode_accepted_error(xid, AcceptStat.PROG_UNAVAIL)
        if vers != VERSION:
            return encode_accepted_error(xid, AcceptStat.PROG_MISMATCH, mismatch=(1, 1))
        if proc == Proc.CREATE_LINK:
            return encode_reply(xid, await self._create_link(conn, CreateLinkParms.decode(args)))
        if self._interface_links and proc in LINK_PROCS and len(args) >= 4:
            lid = LID.unpack_from(args)[0]
            bus = self._interface_links.get(lid) if lid in conn.links else None
            if bus is not None:
                return encode_reply(xid, self._interface_call(conn, lid, bus, Proc(proc), args))
        if proc == Proc.DEVICE_WRITE:
            return reply_header(xid) + await self._write(conn, write_parms(args))
        if proc == Proc.DEVICE_READ:
            read = await self._read(conn, read_parms(args))
            pieces = read.pieces
            size = len(pieces[0]) if len(pieces) == 1 else sum(map(len, pieces))
            head = READ_REPLY.pack(xid, *ACCEPTED, read.error, read.reason, size)
            return (head, *pieces, PAD[size & 3])  # the data is not copied
        if proc in GENERIC:
            generic = DeviceGenericParms.decode(args)
            return encode_reply(xid, await self._generic(conn, Proc(proc), generic))
        if proc == Proc.DEVICE_LOCK:
            return encode_reply(xid, await self._lock(conn, DeviceLockParms.decode(args)))
        if proc in (Proc.DEVICE_UNLOCK, Proc.DESTROY_LINK):
            lid = DeviceLink.decode(args).lid
            error: int
            if self._link(conn, lid) is None:
                error = ErrorCode.INVALID_LINK_IDENTIFIER
            elif proc == Proc.DESTROY_LINK:
                conn.links.discard(lid)
                self._destroy(lid)
                error = ErrorCode.NO_ERROR
            else:
                error = unlock(self._locks, self._links[lid])
            return encode_reply(xid, DeviceError(error).encode())
        if proc == Proc.CREATE_INTR_CHAN:
            parms = DeviceRemoteFunc.decode(args)
            return encode_reply(xid, create_intr_chan(self._interrupts, conn, parms))
        if proc == Proc.DESTROY_INTR_CHAN:
            return encode_reply(xid, DeviceError(self._destroy_intr_chan(conn)).encode())
        if proc == Proc.DEVICE_ENABLE_SRQ:
            srq = DeviceEnableSrqParms.decode(args)
            return encode_reply(xid, DeviceError(self._enable_srq(conn, srq)).encode())
        if proc in UNSUPPORTED:
            return encode_reply(xid, error_only(proc, ErrorCode.OPERATION_NOT_SUPPORTED))
        return encode_accepted_error(xid, AcceptStat.PROC_UNAVAIL)

    # -- links -----------------------------------------------------------------------------

    def _link(self, conn: RpcConnection, lid: int) -> Link | None:
        return self._links.get(lid) if lid in conn.links else None

    async def _create_link(self, conn: RpcConnection, parms: CreateLinkParms) -> bytes:
        name = parms.device.lower()
        device = self.devices.get(name)
        bus = self.buses.get(name)
        if device is None and bus is None:
            return CreateLinkResp(ErrorCode.DEVICE_NOT_ACCESSIBLE, 0, 0, 0).encode()
        if len(conn.links) >= _MAX_LINKS_PER_CONNECTION:
            return CreateLinkResp(ErrorCode.OUT_OF_RESOURCES, 0, 0, 0).encode()
        lid = self._next_lid
        self._next_lid = (lid + 1) & 0x7FFFFFFF
        if device is None:  # an interface link: device_docmd (VXI-11.2)
            assert bus is not None
            self._interface_links[lid] = bus
            conn.links.add(lid)
            return CreateLinkResp(0, lid, self.abort_port, self.max_recv_size).encode()
        link = self._links[lid] = Link(lid, name, device, conn=conn, bus=bus_of(self.buses, name))
        conn.links.add(lid)
        if parms.lock_device:
            flags = WAITLOCK if parms.lock_timeout else 0
            error = await access(self._locks, link, flags, parms.lock_timeout, self.flush)
            if error:
                conn.links.discard(lid)
                self._destroy(lid)
                return CreateLinkResp(error, 0, 0, 0).encode()
            self._locks.setdefault(link.name, Lock()).owner = lid
        size = self.max_recv_size if self.short_writes is None else self.short_writes
        return CreateLinkResp(0, lid, self.abort_port, size).encode()

    def _interface_call(
        self, conn: RpcConnection, lid: int, bus: GpibBus, proc: Proc, args: memoryview
    ) -> bytes:
        """A call on an interface link: destroy_link here, the rest on the bus."""
        if proc == Proc.DESTROY_LINK:
            conn.links.discard(lid)
            self._destroy(lid)
            return DeviceError(0).encode()
        return interface_call(bus, proc, args)

    def _destroy(self, lid: int) -> None:
        if self._interface_links.pop(lid, None) is not None:
            return
        link = self._links.pop(lid, None)
        if link is None:
            return
        if link.aborted is not None:
            link.aborted.set()
        lock = self._locks.get(link.name)
        if lock is not None and lock.owner == lid:
            unlock(self._locks, link)

    # -- service requests ------------------------------------------------------------------

    def _destroy_intr_chan(self, conn: RpcConnection) -> int:
        interrupts = self._interrupts.pop(conn, None)
        if interrupts is None:
            return ErrorCode.CHANNEL_NOT_ESTABLISHED
        self._close_interrupts(interrupts)
        return 0

    def _close_interrupts(self, interrupts: Interrupts) -> None:
        close_interrupts(interrupts, self._task_group)

    def _enable_srq(self, conn: RpcConnection, parms: DeviceEnableSrqParms) -> int:
        link = self._link(conn, parms.lid)
        if link is None:
            return ErrorCode.INVALID_LINK_IDENTIFIER
        if not parms.enable:
            link.srq_handle = None
        elif not len(parms.handle):
            return ErrorCode.PARAMETER_ERROR  # as a Keithley DMM6500 answers (pyvisa-py #620)
        else:
            link.srq_handle = bytes(parms.handle)
        return 0

    # -- locks -----------------------------------------------------------------------------

    async def _lock(self, conn: RpcConnection, parms: DeviceLockParms) -> bytes:
        link = self._link(conn, parms.lid)
        if link is None:
            return DeviceError(ErrorCode.INVALID_LINK_IDENTIFIER).encode()
        error = await access(self._locks, link, parms.flags, parms.lock_timeout, self.flush)
        if not error:
            lock = self._locks.setdefault(link.name, Lock())
            lock.owner = link.lid
        return DeviceError(error).encode()

    # -- I/O -------------------------------------------------------------------------------

    async def _write(self, conn: RpcConnection, parms: DeviceWriteParms) -> bytes:
        link = self._link(conn, parms.lid)
        if link is None:
            return DeviceWriteResp(ErrorCode.INVALID_LINK_IDENTIFIER, 0).encode()
        if link.bus is not None and link.off_bus():
            return DeviceWriteResp(ErrorCode.IO_ERROR, 0).encode()
        if locked_out(self._locks, link):
            error = await access(self._locks, link, parms.flags, parms.lock_timeout, self.flush)
            if error:
                return DeviceWriteResp(error, 0).encode()
        data = memoryview(parms.data)
        if self.short_writes is not None:
            data = data[: self.short_writes]
        end = bool(parms.flags & END) and len(data) == len(parms.data)
        if link.overflow or len(link.input) + len(data) > self.max_message_size:
            if not link.overflow:
                self._warn(conn, f"program message over {self.max_message_size} bytes: dropped")
            link.input.clear()
            link.overflow = not end
            return DeviceWriteResp(ErrorCode.IO_ERROR, 0).encode()
        if end:
            message = bytes(link.input) + data if link.input else bytes(data)
            link.input.clear()
            try:
                link.device.write(message)
            except Exception:  # a bug in a device model: log it, keep serving
                _log.exception("device failed in write()")
                return DeviceWriteResp(ErrorCode.IO_ERROR, 0).encode()
        else:
            link.input += data
        return WRITE_RESP.pack(0, len(data))

    async def _read(self, conn: RpcConnection, parms: DeviceReadParms) -> ReadResult:
        link = self._link(conn, parms.lid)
        if link is None:
            return ReadResult(ErrorCode.INVALID_LINK_IDENTIFIER)
        if parms.request_size == 0:
            return ReadResult(ErrorCode.PARAMETER_ERROR)
        if link.bus is not None and link.off_bus():
            return ReadResult(ErrorCode.IO_ERROR)
        deadline = current_time(running_loop()) + parms.io_timeout / 1000
        if locked_out(self._locks, link):
            error = await access(self._locks, link, parms.flags, parms.lock_timeout, self.flush)
            if error:
                return ReadResult(error)
        if link.output is None and not link.take_output():
            await self.flush(conn)  # answers to earlier calls go out before the wait
            error = await self._wait_output(conn, link, deadline)
            if error:
                return ReadResult(error)
        output = link.output
        assert output is not None
        count = min(output.size - output.read, parms.request_size)
        reason = Reason.NONE
        if parms.flags & TERMCHRSET:
            found = output.find(parms.term_char & 0xFF, count)
            if found >= 0:
                count = found
                reason |= Reason.CHR
        if count == parms.request_size:
            reason |= Reason.REQCNT
        pieces = output.take(count)
        if output.read == output.size:
            exact = count == parms.request_size and count > 0
            if not (self.split_exact_multiple and exact):
                reason |= Reason.END
                link.output = None
        return ReadResult(0, reason, tuple(pieces))

    async def _wait_output(self, conn: RpcConnection, link: Link, deadline: float) -> int:
        """Wait until the device has a response for ``link`` (0), or an error code.

        Meanwhile the connection is watched: a client that leaves ends the wait (its
        next call, if it sent one, is kept for the connection's loop)."""
        link.aborted = aborted = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, conn, aborted)
                result = await link.poll_output(deadline, aborted)
                tg.cancel_scope.cancel()
            return result
        finally:
            link.aborted = None

    async def _watch(self, conn: RpcConnection, aborted: anyio.Event) -> None:
        """Receive once: EOF aborts the wait, data is kept for the connection's loop."""
        if conn.pending is not None:
            return
        conn.pending = await self.receive(conn)
        if not conn.pending:
            aborted.set()

    async def _generic(self, conn: RpcConnection, proc: Proc, parms: DeviceGenericParms) -> bytes:
        link = self._link(conn, parms.lid)
        if link is None:
            return error_only(proc, ErrorCode.INVALID_LINK_IDENTIFIER)
        error = await access(self._locks, link, parms.flags, parms.lock_timeout, self.flush)
        if error:
            return error_only(proc, error)
        if link.bus is not None and link.off_bus():
            return error_only(proc, ErrorCode.IO_ERROR)  # addressing needs the CIC
        device = link.device
        if proc == Proc.DEVICE_READSTB:
            return DeviceReadStbResp(0, device.serial_poll()).encode()
        if proc == Proc.DEVICE_TRIGGER:
            device.trigger()
        elif proc == Proc.DEVICE_CLEAR:
            device.device_clear()
            link.input.clear()
            link.overflow = False
            link.output = None
        else:
            self.remote[link.name] = proc == Proc.DEVICE_REMOTE
        return DeviceError(0).encode()
