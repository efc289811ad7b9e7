"""Find VXI-11 instruments: portmapper GETPORT over UDP to the hosts and subnets named.

Nothing is sent anywhere the caller did not name: hosts, subnets (``192.0.2.0/28``,
expanded to at most ``max_hosts`` addresses) and, only when asked, one broadcast address.
Each target gets one GETPORT call for the VXI-11 core program; every host answering with
a port is an instrument (``TCPIP0::host::inst0::INSTR``).
"""

from __future__ import annotations

import ipaddress
import math
import random
import socket
from collections.abc import Iterable
from typing import Final

import anyio

from ..._exceptions import RemoteProtocolError
from ...protocol.oncrpc import decode_reply, encode_call
from ...protocol.portmap import (
    IPPROTO_TCP,
    PMAP_PORT,
    PMAP_PROG,
    PMAP_VERS,
    PMAPPROC_GETPORT,
    Mapping,
    decode_port,
)
from ...protocol.vxi11 import DEVICE_CORE, VERSION
from ..spec import FoundResource

__all__ = ["discover"]

_MAX_DATAGRAM: Final = 65535


def _expand(targets: Iterable[str], max_hosts: int) -> list[str]:
    hosts: list[str] = []
    for target in targets:
        if "/" in target:
            network = ipaddress.ip_network(target, strict=False)
            if network.num_addresses > max_hosts + 2:
                raise ValueError(f"{target} has more than max_hosts={max_hosts} addresses")
            members = list(network.hosts()) or [network.network_address]
            hosts.extend(str(address) for address in members)
        else:
            hosts.append(target)
    if len(hosts) > max_hosts:
        raise ValueError(f"{len(hosts)} hosts exceed max_hosts={max_hosts}")
    return hosts


async def discover(
    targets: Iterable[str] = (),
    *,
    port: int = PMAP_PORT,
    timeout: float = 1.0,
    broadcast: str | None = None,
    max_hosts: int = 1024,
) -> list[FoundResource]:
    """VXI-11 instruments among ``targets`` (hosts, IPv4 addresses, subnets in CIDR form).

    ``port``: the portmapper's UDP port. ``timeout``: seconds to wait for answers.
    ``broadcast``: also send one GETPORT to this broadcast address (opt-in).
    Results are sorted by address, one per host.
    """
    hosts = _expand(targets, max_hosts)
    if not hosts and broadcast is None:
        return []
    args = Mapping(DEVICE_CORE, VERSION, IPPROTO_TCP).encode()
    xid = random.getrandbits(32)
    pending: dict[int, str] = {}  # xid -> address asked (for unicast)
    found: dict[str, FoundResource] = {}
    async with await anyio.create_udp_socket(family=socket.AF_INET) as udp:
        if broadcast is not None:
            raw = udp.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for host in hosts:
            for *_, address in await anyio.getaddrinfo(host, port, family=socket.AF_INET):
                xid = (xid + 1) & 0xFFFFFFFF
                pending[xid] = str(address[0])
                await udp.sendto(
                    encode_call(xid, PMAP_PROG, PMAP_VERS, PMAPPROC_GETPORT, args),
                    str(address[0]),
                    port,
                )
                break
        broadcast_xid = None
        if broadcast is not None:
            broadcast_xid = xid = (xid + 1) & 0xFFFFFFFF
            await udp.sendto(
                encode_call(xid, PMAP_PROG, PMAP_VERS, PMAPPROC_GETPORT, args), broadcast, port
            )
        with anyio.move_on_after(timeout if timeout > 0 else math.inf):
            while pending or broadcast_xid is not None:
                data, (sender, _) = await udp.receive()
                try:
                    reply = decode_reply(data[:_MAX_DATAGRAM])
                    core_port = decode_port(reply.check())
                except RemoteProtocolError:
                    continue  # not a portmapper answer: ignore it
                if pending.pop(reply.xid, None) is None and reply.xid != broadcast_xid:
                    continue
                if core_port:
                    host = f"[{sender}]" if ":" in sender else sender
                    found[sender] = FoundResource(
                        f"TCPIP0::{host}::inst0::INSTR", f"VXI-11, core channel on TCP {core_port}"
                    )
    return [found[key] for key in sorted(found, key=ipaddress.ip_address)]
