"""Serve simulated instruments over VXI-11 (core and abort channels, a tiny portmapper).

:class:`Vxi11Server` serves one or more :class:`~aiotmc.sim.SimDevice` under VXI-11
device names (``inst0`` by default; gateway names such as ``gpib0,5`` work the same way).
Link ids start at 0 (valid, and a case clients get wrong). With ``portmapper_port`` set
(0: any free port) it also answers PMAPPROC_GETPORT itself, over TCP and UDP on the same
port number, for tests that cannot bind port 111 and for discovery.

Server rules (issue 14): per-connection memory grows only with bytes received (records
are reassembled from received bytes, never allocated from a header, and bounded by
``max_record``); a program message split over several device_write calls is bounded by
``max_message_size``; at most ``max_connections`` connections (others are closed at
once); a connection idle for ``idle_timeout`` seconds, or whose client does not take a
reply within ``send_timeout``, is closed; hostile input is logged once per connection and
never reaches the device's error queue.

Implemented: create_link, device_write, device_read (requestSize, TERMCHRSET, END),
device_readstb, device_trigger, device_clear, device_remote, device_local, device_lock
(with WAITLOCK and lock_timeout), device_unlock, destroy_link, device_abort,
create_intr_chan / destroy_intr_chan / device_enable_srq (each service request of a
device calls device_intr_srq, one-way, on every link that enabled it). Gateway mode
(devices named ``gpibN,addr[,secondary]``): ``create_link("gpibN")`` opens an interface
link whose device_docmd carries out the VXI-11.2 bus commands on a simulated bus
(:mod:`aiotmc.sim.gpib_bus`, PASS_CONTROL included: while a device holds control, the
operations on device links answer I/O error 17); device_docmd on a device link answers
"operation not supported".
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Final, NamedTuple

import anyio
from anyio.abc import SocketStream, TaskGroup, UDPSocket

from .._exceptions import RemoteProtocolError
from .._fastpath import current_time, running_loop
from .._types import BytesLike
from ..protocol.oncrpc import (
    AcceptStat,
    decode_call,
    decode_reply,
    encode_accepted_error,
    encode_call,
    encode_reply,
    record_mark,
    reply_header,
)
from ..protocol.portmap import (
    IPPROTO_TCP,
    PMAP_PORT,
    PMAP_PROG,
    PMAP_VERS,
    PMAPPROC_GETPORT,
    PMAPPROC_NULL,
    PMAPPROC_SET,
    PMAPPROC_UNSET,
    encode_port,
)
from ..protocol.portmap import (
    Mapping as PortMapping,
)
from ..protocol.vxi11 import (
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
    DeviceReadParms,
    DeviceReadResp,
    DeviceReadStbResp,
    DeviceRemoteFunc,
    DeviceSrqParms,
    DeviceWriteParms,
    DeviceWriteResp,
    ErrorCode,
    Proc,
    Reason,
)
from ..protocol.xdr import Unpacker
from .device import SimDevice
from .gpib_bus import GpibBus, gpib_buses, parse_gpib_name
from .rpc_server import Reply, RpcConnection, RpcServer, Serve

__all__ = ["Vxi11Server", "device_names", "serve_vxi11"]

_log = logging.getLogger("aiotmc.sim.vxi11")

DEFAULT_MAX_RECV_SIZE: Final = 1 << 20  #: maxRecvSize announced by create_link
DEFAULT_MAX_MESSAGE_SIZE: Final = 4 << 20  #: a program message over several device_writes
_RECORD_OVERHEAD: Final = 1024
_MAX_LINKS_PER_CONNECTION: Final = 16
_PORT_TRIES: Final = 8
_RPCBIND_WAIT: Final = 2.0
_READ_REPLY: Final = struct.Struct(">6IiiI")  # accepted REPLY header + device_read results
_ACCEPTED: Final = (1, 0, 0, 0, 0)  # REPLY, MSG_ACCEPTED, AUTH_NONE verifier, SUCCESS
_WRITE_HEAD: Final = struct.Struct(">iIIiI")  # DeviceWriteParms up to the data
_READ_PARMS: Final = struct.Struct(">iIIIii")
_WRITE_RESP: Final = struct.Struct(">iI")  # DeviceWriteResp
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # XDR padding by length % 4
_MIN_WAIT: Final = 0.0005  # never spin on a device deadline already past


@dataclass(eq=False)
class _Lock:
    owner: int | None = None
    released: anyio.Event = field(default_factory=anyio.Event)


class _Output:
    """A response being read: its parts (not joined: block payloads are not copied) and
    how far it has been read."""

    __slots__ = ("_index", "_offset", "parts", "read", "size")

    def __init__(self, parts: list[BytesLike]) -> None:
        if len(parts) == 1:  # the usual case
            self.parts = [memoryview(parts[0]).cast("B")] if len(parts[0]) else []
        else:
            self.parts = [memoryview(p).cast("B") for p in parts if len(p)]
        self.size = sum(len(p) for p in self.parts)
        self.read = 0  # bytes read so far
        self._index = 0  # part holding byte ``read``
        self._offset = 0  # into that part

    def find(self, byte: int, limit: int) -> int:
        """Bytes up to and including the first ``byte`` within ``limit`` bytes from
        ``read``; -1 when there is none."""
        seen = 0
        index, offset = self._index, self._offset
        while index < len(self.parts) and seen < limit:
            part = self.parts[index]
            span = min(len(part) - offset, limit - seen)
            found = part[offset : offset + span].tobytes().find(bytes([byte]))
            if found >= 0:
                return seen + found + 1
            seen += span
            index, offset = index + 1, 0
        return -1

    def take(self, count: int) -> list[memoryview]:
        """The next ``count`` bytes (at most what is left), as views of the parts."""
        out = []
        while count and self._index < len(self.parts):
            part = self.parts[self._index]
            span = min(len(part) - self._offset, count)
            out.append(part[self._offset : self._offset + span])
            count -= span
            self.read += span
            self._offset += span
            if self._offset == len(part):
                self._index, self._offset = self._index + 1, 0
        return out


class _ReadResult(NamedTuple):
    """device_read results before encoding: the data as views of the response."""

    error: int
    reason: int = 0
    pieces: tuple[memoryview, ...] = ()


@dataclass(eq=False)
class _Link:
    lid: int
    name: str
    device: SimDevice
    input: bytearray = field(default_factory=bytearray)
    overflow: bool = False  # the current program message went over the limit: dropped
    output: _Output | None = None  # the response being read
    aborted: anyio.Event | None = None  # set while a call can be aborted
    conn: RpcConnection | None = None  # the core connection that created it
    srq_handle: bytes | None = None  # device_enable_srq handle while enabled
    bus: GpibBus | None = None  # gateway mode: the bus the device is on

    def off_bus(self) -> bool:
        """True when the gateway cannot address the device: another device is CIC."""
        return self.bus is not None and self.bus.controller is not None


@dataclass(eq=False)
class _Interrupts:
    """The interrupt channel a core connection asked for (create_intr_chan)."""

    host: str
    port: int
    stream: SocketStream | None = None  # connected on the first service request
    xid: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class Vxi11Server(RpcServer):
    """Serve simulated devices over VXI-11 (async context manager).

    ``devices``: one device (served as ``inst0``) or a mapping of VXI-11 device names to
    devices. ``port``/``abort_port`` 0 pick free ports; after ``__aenter__`` the bound ones
    are in :attr:`port`, :attr:`abort_port` and :attr:`portmapper_port`.
    """

    log = _log

    def __init__(
        self,
        devices: SimDevice | Mapping[str, SimDevice],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        abort_port: int = 0,
        portmapper_port: int | None = None,
        max_recv_size: int = DEFAULT_MAX_RECV_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_connections: int = 64,
        idle_timeout: float = 3600.0,
        send_timeout: float = 10.0,
        register: bool = False,
    ) -> None:
        super().__init__(
            host=host,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
        )
        if isinstance(devices, SimDevice):
            devices = {"inst0": devices}
        self.devices = {name.lower(): device for name, device in devices.items()}
        #: Gateway mode: the GPIB bus of each interface named by devices ``gpibN,addr``;
        #: ``create_link("gpib0")`` opens an interface link for device_docmd.
        self.buses = gpib_buses(self.devices)
        self.port = port
        self.abort_port = abort_port
        self.portmapper_port = portmapper_port
        self.max_recv_size = max_recv_size
        self.max_message_size = max_message_size
        self.register = register
        #: True while the core port is registered with the host's portmapper (rpcbind).
        self.registered = False
        #: Fault hook: a response that is an exact multiple of requestSize ends with
        #: REQCNT only, and END comes in one more, empty, device_read (pyvisa-py #608).
        self.split_exact_multiple = False
        #: Remote state set by device_remote / device_local, by device name.
        self.remote: dict[str, bool] = {}
        #: Fault hook: every create_link and device_write answers a maxRecvSize / size
        #: of this many bytes (a device that takes its input in small pieces).
        self.short_writes: int | None = None
        self._udp: UDPSocket | None = None
        self._interrupts: dict[RpcConnection, _Interrupts] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self.srqs_sent = 0  #: device_intr_srq calls sent
        self._links: dict[int, _Link] = {}
        self._interface_links: dict[int, GpibBus] = {}  # lid -> its bus
        self._locks: dict[str, _Lock] = {}
        self._next_lid = 0

    # -- names -----------------------------------------------------------------------------

    def resource(self, device: str = "inst0", *, explicit_port: bool = True) -> str:
        """The VISA resource name of ``device``; ``explicit_port`` uses ``host,port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f",{self.port}" if explicit_port else ""
        return f"TCPIP0::{host}{port}::{device}::INSTR"

    @property
    def links(self) -> int:
        """Links open now."""
        return len(self._links)

    # -- lifecycle -------------------------------------------------------------------------

    async def _bind(self) -> list[tuple[socket.socket, str, Serve]]:
        for name, device in self.devices.items():
            self._unsubscribe.append(device.add_srq_listener(partial(self._on_srq, name)))
        core = await self._listen(self.port)
        self.port = core.getsockname()[1]
        abort = await self._listen(self.abort_port)
        self.abort_port = abort.getsockname()[1]
        served: list[tuple[socket.socket, str, Serve]] = [
            (core, "core", self._serve_core),
            (abort, "abort", self._serve_abort),
        ]
        if self.register:
            self.registered = await self._rpcbind(PMAPPROC_SET, self.port)
        if self.portmapper_port is not None:
            pmap = await self._bind_portmapper(self.portmapper_port)
            self.portmapper_port = pmap.getsockname()[1]
            served.append((pmap, "portmapper", self._serve_portmapper))
        return served

    async def _bind_portmapper(self, port: int) -> socket.socket:
        """The portmapper's TCP listener, and its UDP socket on the same port number."""
        for _ in range(_PORT_TRIES):
            udp = await anyio.create_udp_socket(local_host=self.host, local_port=port)
            chosen = udp.extra(anyio.abc.SocketAttribute.local_port)
            try:
                listener = await self._listen(chosen)
            except OSError:
                await udp.aclose()
                if port:
                    raise
                continue  # the free UDP port is taken over TCP: try another one
            self._udp = udp
            return listener
        raise OSError(f"no port free for both TCP and UDP after {_PORT_TRIES} tries")

    def _start_more(self, task_group: TaskGroup) -> None:
        if self._udp is not None:
            task_group.start_soon(self._serve_udp_portmapper, self._udp)
        for device in {id(d): d for d in self.devices.values()}.values():
            task_group.start_soon(self._clock, device)

    async def _clock(self, device: SimDevice) -> None:
        """Poll ``device`` when its next deadline comes, so operations complete (and
        service requests fire) on time with no client call in progress."""
        changed = anyio.Event()

        def wake() -> None:
            changed.set()

        remove = device.add_deadline_listener(wake)
        try:
            while True:
                due = device.next_deadline()
                wait = math.inf if due is None else max(_MIN_WAIT, due - device.clock())
                with anyio.move_on_after(wait):
                    await changed.wait()
                changed = anyio.Event()
                try:
                    device.poll()
                except Exception:  # a bug in a device model: log it, keep serving
                    self.log.exception("device failed in poll()")
        finally:
            remove()

    async def _rpcbind(self, proc: int, port: int) -> bool:
        """PMAPPROC_SET / UNSET of the core program with the portmapper on 127.0.0.1:111
        (over UDP, as rpcbind wants from local programs); False when there is none."""
        args = PortMapping(DEVICE_CORE, VERSION, IPPROTO_TCP, port).encode()
        xid = random.getrandbits(32)
        try:
            async with await anyio.create_udp_socket(
                family=socket.AF_INET, local_host="127.0.0.1"
            ) as udp:
                await udp.sendto(
                    encode_call(xid, PMAP_PROG, PMAP_VERS, proc, args), "127.0.0.1", PMAP_PORT
                )
                with anyio.fail_after(_RPCBIND_WAIT):
                    while True:
                        data, _ = await udp.receive()
                        try:
                            reply = decode_reply(data)
                            if reply.xid == xid:
                                return Unpacker(reply.check()).unpack_bool()
                        except RemoteProtocolError:
                            continue
        except (OSError, TimeoutError) as exc:
            self.log.warning("no portmapper on 127.0.0.1:%d to register with: %s", PMAP_PORT, exc)
            return False

    async def _close_listeners(self) -> None:
        if self.registered:
            self.registered = False
            with anyio.CancelScope(shield=True):
                await self._rpcbind(PMAPPROC_UNSET, self.port)
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        for remove in unsubscribe:
            remove()
        udp, self._udp = self._udp, None
        if udp is not None:
            await udp.aclose()
        await super()._close_listeners()

    async def _serve_udp_portmapper(self, udp: UDPSocket) -> None:
        """GETPORT over UDP (discovery); anything that is not a valid call is ignored."""
        while True:
            try:
                data, (host, port) = await udp.receive()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            try:
                call = decode_call(data)
                reply = self._portmapper_answer(
                    call.xid, call.prog, call.vers, call.proc, call.args
                )
            except RemoteProtocolError:
                self.log.debug("ignored a UDP datagram that is no portmapper call")
                continue
            self.record_call("portmapper-udp", call.proc)
            try:
                await udp.sendto(reply, host, port)
            except OSError:
                pass

    def _connection_closed(self, conn: RpcConnection) -> None:
        for lid in list(conn.links):
            self._destroy(lid)
        interrupts = self._interrupts.pop(conn, None)
        if interrupts is not None:
            self._close_interrupts(interrupts)

    # -- portmapper ------------------------------------------------------------------------

    async def _serve_portmapper(self, conn: RpcConnection) -> None:
        await self._loop(conn, 4096, self._portmapper_call)

    async def _portmapper_call(
        self, conn: RpcConnection, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> bytes:
        return self._portmapper_answer(xid, prog, vers, proc, args)

    def _portmapper_answer(
        self, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> bytes:
        if prog != PMAP_PROG:
            return encode_accepted_error(xid, AcceptStat.PROG_UNAVAIL)
        if vers != PMAP_VERS:
            return encode_accepted_error(xid, AcceptStat.PROG_MISMATCH, mismatch=(2, 2))
        if proc == PMAPPROC_NULL:
            return encode_reply(xid)
        if proc != PMAPPROC_GETPORT:
            return encode_accepted_error(xid, AcceptStat.PROC_UNAVAIL)
        wanted = PortMapping.decode(args)
        port = 0
        if wanted.vers == VERSION and wanted.prot == IPPROTO_TCP:
            port = {DEVICE_CORE: self.port, DEVICE_ASYNC: self.abort_port}.get(wanted.prog, 0)
        return encode_reply(xid, encode_port(port))

    # -- abort channel ---------------------------------------------------------------------

    async def _serve_abort(self, conn: RpcConnection) -> None:
        await self._loop(conn, 4096, self._abort_call)

    async def _abort_call(
        self, conn: RpcConnection, xid: int, prog: int, vers: int, proc: int, args: memoryview
    ) -> bytes:
        if prog != DEVICE_ASYNC:
            return encode_accepted_error(xid, AcceptStat.PROG_UNAVAIL)
        if vers != VERSION:
            return encode_accepted_error(xid, AcceptStat.PROG_MISMATCH, mismatch=(1, 1))
        if proc != Proc.DEVICE_ABORT:
            return encode_accepted_error(xid, AcceptStat.PROC_UNAVAIL)
        link = self._links.get(DeviceLink.decode(args).lid)
        if link is None:
            return encode_reply(xid, DeviceError(ErrorCode.INVALID_LINK_IDENTIFIER).encode())
        if link.aborted is not None:
            link.aborted.set()
        return encode_reply(xid, DeviceError(0).encode())

    # -- core channel ----------------------------------------------------------------------

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
        if self._interface_links and proc in _LINK_PROCS and len(args) >= 4:
            lid = _LID.unpack_from(args)[0]
            bus = self._interface_links.get(lid) if lid in conn.links else None
            if bus is not None:
                return encode_reply(xid, self._interface_call(conn, lid, bus, Proc(proc), args))
        if proc == Proc.DEVICE_WRITE:
            return reply_header(xid) + await self._write(conn, _write_parms(args))
        if proc == Proc.DEVICE_READ:
            read = await self._read(conn, _read_parms(args))
            pieces = read.pieces
            size = len(pieces[0]) if len(pieces) == 1 else sum(map(len, pieces))
            head = _READ_REPLY.pack(xid, *_ACCEPTED, read.error, read.reason, size)
            return (head, *pieces, _PAD[size & 3])  # the data is not copied
        if proc in _GENERIC:
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
                error = self._unlock(self._links[lid])
            return encode_reply(xid, DeviceError(error).encode())
        if proc == Proc.CREATE_INTR_CHAN:
            return encode_reply(xid, self._create_intr_chan(conn, DeviceRemoteFunc.decode(args)))
        if proc == Proc.DESTROY_INTR_CHAN:
            return encode_reply(xid, DeviceError(self._destroy_intr_chan(conn)).encode())
        if proc == Proc.DEVICE_ENABLE_SRQ:
            srq = DeviceEnableSrqParms.decode(args)
            return encode_reply(xid, DeviceError(self._enable_srq(conn, srq)).encode())
        if proc in _UNSUPPORTED:
            return encode_reply(xid, _error_only(proc, ErrorCode.OPERATION_NOT_SUPPORTED))
        return encode_accepted_error(xid, AcceptStat.PROC_UNAVAIL)

    def _link(self, conn: RpcConnection, lid: int) -> _Link | None:
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
        link = self._links[lid] = _Link(lid, name, device, conn=conn, bus=self._bus_of(name))
        conn.links.add(lid)
        if parms.lock_device:
            flags = WAITLOCK if parms.lock_timeout else 0
            error = await self._access(link, flags, parms.lock_timeout)
            if error:
                conn.links.discard(lid)
                self._destroy(lid)
                return CreateLinkResp(error, 0, 0, 0).encode()
            self._locks.setdefault(link.name, _Lock()).owner = lid
        size = self.max_recv_size if self.short_writes is None else self.short_writes
        return CreateLinkResp(0, lid, self.abort_port, size).encode()

    def _bus_of(self, name: str) -> GpibBus | None:
        parsed = parse_gpib_name(name)
        return None if parsed is None else self.buses.get(parsed[0])

    def _interface_call(
        self, conn: RpcConnection, lid: int, bus: GpibBus, proc: Proc, args: memoryview
    ) -> bytes:
        """A call on an interface link: device_docmd, device_remote/local (REN),
        destroy_link; the device operations are not supported there."""
        if proc == Proc.DESTROY_LINK:
            conn.links.discard(lid)
            self._destroy(lid)
            return DeviceError(0).encode()
        if proc == Proc.DEVICE_DOCMD:
            parms = DeviceDocmdParms.decode(args)
            error, data = bus.docmd(parms.cmd, parms.datasize, bytes(parms.data_in))
            return DeviceDocmdResp(error, data).encode()
        if proc in (Proc.DEVICE_REMOTE, Proc.DEVICE_LOCAL):
            bus.set_ren(proc == Proc.DEVICE_REMOTE)
            return DeviceError(0).encode()
        if proc == Proc.DEVICE_CLEAR:  # the interface: DCL to every device on the bus
            if not bus.in_charge:
                return DeviceError(ErrorCode.IO_ERROR).encode()
            bus.send_command(bytes([0x14]))
            return DeviceError(0).encode()
        if proc == Proc.DEVICE_WRITE:
            return DeviceWriteResp(ErrorCode.OPERATION_NOT_SUPPORTED, 0).encode()
        if proc == Proc.DEVICE_READ:
            return DeviceReadResp(ErrorCode.OPERATION_NOT_SUPPORTED, 0, b"").encode()
        return _error_only(proc, ErrorCode.OPERATION_NOT_SUPPORTED)

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
            self._unlock(link)

    # -- service requests --------------------------------------------------------------------

    def _create_intr_chan(self, conn: RpcConnection, parms: DeviceRemoteFunc) -> bytes:
        if conn in self._interrupts:
            return DeviceError(ErrorCode.CHANNEL_ALREADY_ESTABLISHED).encode()
        if (parms.prog_num, parms.prog_vers) != (DEVICE_INTR, VERSION):
            return DeviceError(ErrorCode.PARAMETER_ERROR).encode()
        if parms.prog_family != DEVICE_TCP:  # DEVICE_UDP: not served
            return DeviceError(ErrorCode.OPERATION_NOT_SUPPORTED).encode()
        host = str(ipaddress.IPv4Address(parms.host_addr))
        self._interrupts[conn] = _Interrupts(host, parms.host_port)
        return DeviceError(0).encode()

    def _destroy_intr_chan(self, conn: RpcConnection) -> int:
        interrupts = self._interrupts.pop(conn, None)
        if interrupts is None:
            return ErrorCode.CHANNEL_NOT_ESTABLISHED
        self._close_interrupts(interrupts)
        return 0

    def _close_interrupts(self, interrupts: _Interrupts) -> None:
        stream, interrupts.stream = interrupts.stream, None
        if stream is not None and self._task_group is not None:
            self._task_group.start_soon(stream.aclose)

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

    def _on_srq(self, name: str, status: int) -> None:
        """The device ``name`` requests service: call device_intr_srq on every link that
        enabled it (one-way calls, in the background)."""
        for link in list(self._links.values()):
            if link.name != name or link.srq_handle is None or link.conn is None:
                continue
            interrupts = self._interrupts.get(link.conn)
            if interrupts is not None and self._task_group is not None:
                self._task_group.start_soon(self._deliver_srq, interrupts, link.srq_handle)

    async def _deliver_srq(self, interrupts: _Interrupts, handle: bytes) -> None:
        async with interrupts.lock:
            try:
                with anyio.fail_after(self.send_timeout):
                    if interrupts.stream is None:
                        interrupts.stream = await anyio.connect_tcp(
                            interrupts.host, interrupts.port
                        )
                    interrupts.xid = (interrupts.xid + 1) & 0xFFFFFFFF
                    call = encode_call(
                        interrupts.xid,
                        DEVICE_INTR,
                        VERSION,
                        Proc.DEVICE_INTR_SRQ,
                        DeviceSrqParms(handle).encode(),
                    )
                    await interrupts.stream.send(record_mark(len(call)) + call)
                self.srqs_sent += 1
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                where = f"{interrupts.host}:{interrupts.port}"
                self.log.info("device_intr_srq to %s failed: %s", where, exc)
                self._close_interrupts(interrupts)

    # -- locks -----------------------------------------------------------------------------

    def _locked_out(self, link: _Link) -> bool:
        """True when another link holds the lock of ``link``'s device (no await)."""
        lock = self._locks.get(link.name)
        return lock is not None and lock.owner is not None and lock.owner != link.lid

    async def _access(self, link: _Link, flags: int, lock_timeout_ms: int) -> int:
        """0 when ``link`` may use its device now, else the error code."""
        lock = self._locks.get(link.name)
        if lock is None or lock.owner is None or lock.owner == link.lid:
            return 0
        if not flags & WAITLOCK or lock_timeout_ms == 0:
            return ErrorCode.DEVICE_LOCKED_BY_ANOTHER_LINK
        if link.conn is not None:
            await self.flush(link.conn)  # answers to earlier calls go out before the wait
        with anyio.move_on_after(lock_timeout_ms / 1000):
            while lock.owner is not None and lock.owner != link.lid:
                await lock.released.wait()
        if lock.owner is None or lock.owner == link.lid:
            return 0
        return ErrorCode.DEVICE_LOCKED_BY_ANOTHER_LINK

    async def _lock(self, conn: RpcConnection, parms: DeviceLockParms) -> bytes:
        link = self._link(conn, parms.lid)
        if link is None:
            return DeviceError(ErrorCode.INVALID_LINK_IDENTIFIER).encode()
        error = await self._access(link, parms.flags, parms.lock_timeout)
        if not error:
            lock = self._locks.setdefault(link.name, _Lock())
            lock.owner = link.lid
        return DeviceError(error).encode()

    def _unlock(self, link: _Link) -> int:
        lock = self._locks.get(link.name)
        if lock is None or lock.owner != link.lid:
            return ErrorCode.NO_LOCK_HELD_BY_THIS_LINK
        lock.owner = None
        released, lock.released = lock.released, anyio.Event()
        released.set()
        return 0

    # -- I/O -------------------------------------------------------------------------------

    async def _write(self, conn: RpcConnection, parms: DeviceWriteParms) -> bytes:
        link = self._link(conn, parms.lid)
        if link is None:
            return DeviceWriteResp(ErrorCode.INVALID_LINK_IDENTIFIER, 0).encode()
        if link.bus is not None and link.off_bus():
            return DeviceWriteResp(ErrorCode.IO_ERROR, 0).encode()
        if self._locked_out(link):
            error = await self._access(link, parms.flags, parms.lock_timeout)
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
        return _WRITE_RESP.pack(0, len(data))

    async def _read(self, conn: RpcConnection, parms: DeviceReadParms) -> _ReadResult:
        link = self._link(conn, parms.lid)
        if link is None:
            return _ReadResult(ErrorCode.INVALID_LINK_IDENTIFIER)
        if parms.request_size == 0:
            return _ReadResult(ErrorCode.PARAMETER_ERROR)
        if link.bus is not None and link.off_bus():
            return _ReadResult(ErrorCode.IO_ERROR)
        deadline = current_time(running_loop()) + parms.io_timeout / 1000
        if self._locked_out(link):
            error = await self._access(link, parms.flags, parms.lock_timeout)
            if error:
                return _ReadResult(error)
        if link.output is None and not self._take_output(link):
            await self.flush(conn)  # answers to earlier calls go out before the wait
            error = await self._wait_output(conn, link, deadline)
            if error:
                return _ReadResult(error)
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
        return _ReadResult(0, reason, tuple(pieces))

    @staticmethod
    def _take_output(link: _Link) -> bool:
        """Move the device's next response, if it has one, to ``link.output``."""
        parts = link.device.read_parts()
        if parts is None:
            return False
        link.output = _Output(parts)
        return True

    async def _wait_output(self, conn: RpcConnection, link: _Link, deadline: float) -> int:
        """Wait until the device has a response for ``link`` (0), or an error code.

        Meanwhile the connection is watched: a client that leaves ends the wait (its
        next call, if it sent one, is kept for the connection's loop)."""
        link.aborted = aborted = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, conn, aborted)
                result = await self._poll_output(link, deadline, aborted)
                tg.cancel_scope.cancel()
            return result
        finally:
            link.aborted = None

    async def _poll_output(self, link: _Link, deadline: float, aborted: anyio.Event) -> int:
        device = link.device
        while True:
            if self._take_output(link):
                return 0
            now = anyio.current_time()
            if now >= deadline:
                return ErrorCode.IO_TIMEOUT
            due = device.next_deadline()
            wake = deadline if due is None else min(deadline, now + due - device.clock())
            with anyio.move_on_after(max(_MIN_WAIT, wake - now)):
                await aborted.wait()
            if aborted.is_set():
                return ErrorCode.ABORT

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
            return _error_only(proc, ErrorCode.INVALID_LINK_IDENTIFIER)
        error = await self._access(link, parms.flags, parms.lock_timeout)
        if error:
            return _error_only(proc, error)
        if link.bus is not None and link.off_bus():
            return _error_only(proc, ErrorCode.IO_ERROR)  # addressing needs the CIC
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


_GENERIC: Final = frozenset(
    {
        Proc.DEVICE_READSTB,
        Proc.DEVICE_TRIGGER,
        Proc.DEVICE_CLEAR,
        Proc.DEVICE_REMOTE,
        Proc.DEVICE_LOCAL,
    }
)
_UNSUPPORTED: Final = frozenset({Proc.DEVICE_DOCMD})  # on device links
_LID: Final = struct.Struct(">i")
#: Procedures whose arguments start with a link id.
_LINK_PROCS: Final = frozenset(
    {
        *_GENERIC,
        Proc.DEVICE_WRITE,
        Proc.DEVICE_READ,
        Proc.DEVICE_LOCK,
        Proc.DEVICE_UNLOCK,
        Proc.DEVICE_ENABLE_SRQ,
        Proc.DEVICE_DOCMD,
        Proc.DESTROY_LINK,
    }
)


def _write_parms(args: memoryview) -> DeviceWriteParms:
    """DeviceWriteParms, as its ``decode`` (one struct, the data as a view)."""
    if len(args) >= 20:
        lid, io_timeout, lock_timeout, flags, size = _WRITE_HEAD.unpack_from(args)
        if len(args) >= 20 + size + (-size & 3):
            return DeviceWriteParms(lid, io_timeout, lock_timeout, flags, args[20 : 20 + size])
    return DeviceWriteParms.decode(args)  # raises RemoteProtocolError, naming the problem


def _read_parms(args: memoryview) -> DeviceReadParms:
    """DeviceReadParms, as its ``decode`` (one struct)."""
    try:
        return DeviceReadParms(*_READ_PARMS.unpack_from(args))
    except struct.error:
        return DeviceReadParms.decode(args)  # raises RemoteProtocolError, naming the problem


def _error_only(proc: int, error: int) -> bytes:
    """The result of ``proc`` carrying only an error code."""
    if proc == Proc.DEVICE_READSTB:
        return DeviceReadStbResp(error, 0).encode()
    if proc == Proc.DEVICE_DOCMD:
        return DeviceError(error).encode() + b"\0\0\0\0"  # error, empty data_out
    return DeviceError(error).encode()


def device_names(count: int, *, gateway: bool = False, first_address: int = 1) -> list[str]:
    """VXI-11 names for ``count`` devices: ``inst0``, ``inst1``... or, for a gateway,
    ``gpib0,N`` from ``first_address`` (at most 31 addresses: 0..30)."""
    if not gateway:
        return [f"inst{i}" for i in range(count)]
    if first_address < 0 or first_address + count - 1 > 30:
        raise ValueError(f"{count} GPIB devices from address {first_address} do not fit 0..30")
    return [f"gpib0,{first_address + i}" for i in range(count)]


@asynccontextmanager
async def serve_vxi11(
    devices: Sequence[SimDevice] | Mapping[str, SimDevice],
    *,
    gateway: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    portmapper_port: int | None = None,
    register: bool = False,
    max_connections: int = 64,
    idle_timeout: float = 3600.0,
    send_timeout: float = 10.0,
) -> AsyncIterator[tuple[Vxi11Server, list[str]]]:
    """Serve ``devices`` over VXI-11 on one host (for ``aiotmc sim``): yields the server
    and each device's resource name, in order.

    A sequence gets :func:`device_names` (``inst0``...; ``gateway``: ``gpib0,1``... and an
    interface link ``gpib0``); a mapping keeps its names. The names carry the core port
    (``host,port``) unless a portmapper answers for it (``portmapper_port`` or
    ``register``).
    """
    if not isinstance(devices, Mapping):
        devices = dict(zip(device_names(len(devices), gateway=gateway), devices, strict=True))
    async with Vxi11Server(
        devices,
        host=host,
        port=port,
        portmapper_port=portmapper_port,
        register=register,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
    ) as server:
        explicit = portmapper_port is None and not server.registered
        yield server, [server.resource(name, explicit_port=explicit) for name in devices]
