"""Opening a raw TCP connection to an instrument (one job).

:func:`connect_socket` resolves the address (an IP address written out skips the resolver's
worker-thread hop: :func:`_literal_address`) and returns a non-blocking socket with
TCP_NODELAY, trying each address in turn. Plain functions: they keep no state. The VXI-11,
HiSLIP and Prologix clients open their connections with it too.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Final

import anyio

from ..._exceptions import ConnectError, ConnectTimeout

__all__ = ["DEFAULT_PORT", "connect_socket"]

DEFAULT_PORT: Final = 5025


async def connect_socket(host: str, port: int, *, timeout: float | None) -> socket.socket:
    """Open a non-blocking TCP connection with TCP_NODELAY, trying each address in turn."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
    try:
        with anyio.fail_after(timeout):
            infos = _literal_address(host, port) or await anyio.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            last: OSError | None = None
            for family, type_, proto, _, addr in infos:
                sock = socket.socket(family, type_, proto)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    code = sock.connect_ex(addr)
                    if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                        await anyio.wait_writable(sock)
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise OSError(code, f"{errno.errorcode.get(code, code)}: {addr}")
                    return sock
                except BaseException as exc:
                    sock.close()
                    if not isinstance(exc, OSError):
                        raise
                    last = exc
            raise ConnectError(f"cannot connect to {where}: {last}")
    except TimeoutError:
        raise ConnectTimeout(f"no connection to {where} within {timeout} s") from None
    except OSError as exc:  # getaddrinfo failures
        raise ConnectError(f"cannot connect to {where}: {exc}") from exc


def _literal_address(host: str, port: int) -> list[tuple[Any, ...]] | None:
    """What ``getaddrinfo`` answers for an IP address written out (no name to resolve),
    without its worker-thread hop; None for a name (or a scoped IPv6 address)."""
    if "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
