"""The portmapper: the server's own (GETPORT of the core and abort channels, over TCP
and UDP on one port number) and registration with the host's rpcbind."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from anyio.abc import UDPSocket

from ..._exceptions import RemoteProtocolError
from ...protocol.oncrpc import (
    AcceptStat,
    decode_call,
    decode_reply,
    encode_accepted_error,
    encode_call,
    encode_reply,
)
from ...protocol.portmap import (
    IPPROTO_TCP,
    PMAP_PORT,
    PMAP_PROG,
    PMAP_VERS,
    PMAPPROC_GETPORT,
    PMAPPROC_NULL,
    encode_port,
)
from ...protocol.portmap import (
    Mapping as PortMapping,
)
from ...protocol.vxi11 import DEVICE_ASYNC, DEVICE_CORE, VERSION
from ...protocol.xdr import Unpacker

__all__ = ["bind_portmapper", "portmapper_answer", "rpcbind", "serve_udp_portmapper"]

_PORT_TRIES: Final = 8
_RPCBIND_WAIT: Final = 2.0

#: The answer to one portmapper call: (xid, prog, vers, proc, args) -> the reply.
Answer = Callable[[int, int, int, int, memoryview], bytes]


async def bind_portmapper(
    host: str, port: int, listen: Callable[[int], Awaitable[socket.socket]]
) -> tuple[socket.socket, UDPSocket]:
    """The portmapper's TCP listener (from ``listen``), and its UDP socket on the same
    port number (``port``; 0: any free one)."""
    for _ in range(_PORT_TRIES):
        udp = await anyio.create_udp_socket(local_host=host, local_port=port)
        chosen = udp.extra(anyio.abc.SocketAttribute.local_port)
        try:
            listener = await listen(chosen)
        except OSError:
            await udp.aclose()
            if port:
                raise
            continue  # the free UDP port is taken over TCP: try another one
        return listener, udp
    raise OSError(f"no port free for both TCP and UDP after {_PORT_TRIES} tries")


async def rpcbind(proc: int, port: int, log: logging.Logger) -> bool:
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
        log.warning("no portmapper on 127.0.0.1:%d to register with: %s", PMAP_PORT, exc)
        return False


async def serve_udp_portmapper(
    udp: UDPSocket,
    answer: Answer,
    record_call: Callable[[str, int], None],
    log: logging.Logger,
) -> None:
    """GETPORT over UDP (discovery); anything that is not a valid call is ignored."""
    while True:
        try:
            data, (host, port) = await udp.receive()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        try:
            call = decode_call(data)
            reply = answer(call.xid, call.prog, call.vers, call.proc, call.args)
        except RemoteProtocolError:
            log.debug("ignored a UDP datagram that is no portmapper call")
            continue
        record_call("portmapper-udp", call.proc)
        try:
            await udp.sendto(reply, host, port)
        except OSError:
            pass


def portmapper_answer(
    xid: int,
    prog: int,
    vers: int,
    proc: int,
    args: memoryview,
    *,
    core_port: int,
    abort_port: int,
) -> bytes:
    """The reply to one portmapper call: GETPORT knows the core and abort channels."""
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
        port = {DEVICE_CORE: core_port, DEVICE_ASYNC: abort_port}.get(wanted.prog, 0)
    return encode_reply(xid, encode_port(port))
