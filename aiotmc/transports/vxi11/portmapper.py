"""Portmapper lookup (PMAPPROC_GETPORT over TCP), cached per host."""

from __future__ import annotations

from typing import Final

from ..._exceptions import ResourceNotFoundError
from ...protocol.portmap import (
    IPPROTO_TCP,
    PMAP_PORT,
    PMAP_PROG,
    PMAP_VERS,
    PMAPPROC_GETPORT,
    Mapping,
    decode_port,
)
from .rpc import RpcChannel

__all__ = ["cached_port", "forget_port", "lookup_port"]

_MAX_RECORD: Final = 4096
_cache: dict[tuple[str, int, int, int], int] = {}


def cached_port(host: str, prog: int, vers: int, *, pmap_port: int = PMAP_PORT) -> int | None:
    """The port found earlier for (host, prog, vers), if any."""
    return _cache.get((host, pmap_port, prog, vers))


def forget_port(host: str, prog: int, vers: int, *, pmap_port: int = PMAP_PORT) -> None:
    """Drop a cached port (after connecting to it failed)."""
    _cache.pop((host, pmap_port, prog, vers), None)


async def lookup_port(
    host: str, prog: int, vers: int, *, deadline: float, pmap_port: int = PMAP_PORT
) -> int:
    """The TCP port serving (prog, vers) on ``host``, from the cache or the portmapper.

    Raises :class:`~aiotmc.ResourceNotFoundError` naming the host when the program is not
    registered, ConnectError / ConnectTimeout when the portmapper cannot be reached.
    """
    key = (host, pmap_port, prog, vers)
    port = _cache.get(key)
    if port is not None:
        return port
    channel = await RpcChannel.connect(
        host,
        pmap_port,
        prog=PMAP_PROG,
        vers=PMAP_VERS,
        max_record=_MAX_RECORD,
        deadline=deadline,
        what="portmapper",
    )
    try:
        results = await channel.call(
            PMAPPROC_GETPORT, [Mapping(prog, vers, IPPROTO_TCP).encode()], wait_until=deadline
        )
        port = decode_port(results)
    finally:
        await channel.aclose()
    if port == 0:
        raise ResourceNotFoundError(
            f"the portmapper on {host}:{pmap_port} has no TCP port for RPC program "
            f"{prog:#x} version {vers}: no VXI-11 server there"
        )
    _cache[key] = port
    return port
