"""The portmapper (program 100000 version 2, RFC 1833 section 3), sans-IO.

A VXI-11 client asks the portmapper on port 111 which TCP port serves the core channel:
``PMAPPROC_GETPORT(mapping(prog, vers, IPPROTO_TCP, 0))`` answers the port, 0 when the
program is not registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._exceptions import RemoteProtocolError
from .._types import BytesLike
from .xdr import Packer, Unpacker

__all__ = [
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "PMAPPROC_GETPORT",
    "PMAPPROC_NULL",
    "PMAPPROC_SET",
    "PMAPPROC_UNSET",
    "PMAP_PORT",
    "PMAP_PROG",
    "PMAP_VERS",
    "Mapping",
    "decode_port",
    "encode_port",
]

PMAP_PROG: Final = 100000
PMAP_VERS: Final = 2
PMAP_PORT: Final = 111
PMAPPROC_NULL: Final = 0
PMAPPROC_SET: Final = 1
PMAPPROC_UNSET: Final = 2
PMAPPROC_GETPORT: Final = 3
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17


@dataclass(frozen=True, slots=True)
class Mapping:
    """``struct mapping``: which port serves (prog, vers) over protocol ``prot``."""

    prog: int
    vers: int
    prot: int = IPPROTO_TCP
    port: int = 0

    def encode(self) -> bytes:
        """The XDR encoding (the argument of GETPORT, SET and UNSET)."""
        p = Packer()
        for value in (self.prog, self.vers, self.prot, self.port):
            p.pack_uint(value)
        return p.getvalue()

    @classmethod
    def decode(cls, data: BytesLike) -> Mapping:
        """Decode a mapping (raises RemoteProtocolError when truncated)."""
        u = Unpacker(data)
        return cls(u.unpack_uint(), u.unpack_uint(), u.unpack_uint(), u.unpack_uint())


def encode_port(port: int) -> bytes:
    """The GETPORT result."""
    p = Packer()
    p.pack_uint(port)
    return p.getvalue()


def decode_port(data: BytesLike) -> int:
    """Decode the GETPORT result (0: not registered); RemoteProtocolError if not a port."""
    port = Unpacker(data).unpack_uint()
    if port > 0xFFFF:
        raise RemoteProtocolError(f"portmapper answered an impossible port {port}")
    return port
