"""HiSLIP 2.0 GetDescriptors / GetDescriptorsResponse payloads, sans-IO.

The public text of IVI-6.1 2.0 gives the message type numbers (26 and 27) but not, as
far as we could find, the layout of the response; this module assumes one and says so
(docs/hislip.md, "GetDescriptors"):

* GetDescriptors: client to server on the synchronous channel, control code 0,
  parameter 0, no payload.
* GetDescriptorsResponse: control code 0, message parameter = the number of
  descriptors, payload = the descriptors one after another, each a type (u8), a length
  (u16, network order) and that many bytes of data.

Decoding never trusts a length: every descriptor must fit in what is left of the payload,
the count must match the parameter, and no byte may be left over.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .._exceptions import RemoteProtocolError
from .._types import BytesLike

__all__ = ["MAX_DESCRIPTOR_DATA", "Descriptor", "decode_descriptors", "encode_descriptors"]

_HEAD: Final = struct.Struct("!BH")
MAX_DESCRIPTOR_DATA: Final = 0xFFFF  #: the most data one descriptor carries


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One descriptor of a GetDescriptorsResponse: its type code and its data."""

    type: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFF:
            raise ValueError(f"a descriptor type is a byte, not {self.type!r}")
        if len(self.data) > MAX_DESCRIPTOR_DATA:
            raise ValueError(f"descriptor data holds at most {MAX_DESCRIPTOR_DATA} bytes")

    @property
    def text(self) -> str:
        """The data as text (ASCII, undecodable bytes replaced)."""
        return self.data.decode("ascii", "replace")


def encode_descriptors(descriptors: Iterable[Descriptor]) -> tuple[int, bytes]:
    """(count, payload) of a GetDescriptorsResponse."""
    parts: list[bytes] = []
    for descriptor in descriptors:
        parts.append(_HEAD.pack(descriptor.type, len(descriptor.data)))
        parts.append(descriptor.data)
    return len(parts) // 2, b"".join(parts)


def decode_descriptors(payload: BytesLike, count: int) -> list[Descriptor]:
    """The descriptors of a GetDescriptorsResponse (``count``: its message parameter);
    :class:`~aiotmc.RemoteProtocolError` for a payload that does not hold exactly them."""
    view = memoryview(payload).cast("B")
    if count > len(view) // _HEAD.size:
        raise RemoteProtocolError(
            f"GetDescriptorsResponse announces {count} descriptors in {len(view)} bytes"
        )
    found: list[Descriptor] = []
    offset = 0
    for index in range(count):
        if len(view) - offset < _HEAD.size:
            raise RemoteProtocolError(f"GetDescriptorsResponse: descriptor {index} is cut short")
        type_, length = _HEAD.unpack_from(view, offset)
        offset += _HEAD.size
        if length > len(view) - offset:
            raise RemoteProtocolError(
                f"GetDescriptorsResponse: descriptor {index} announces {length} bytes, "
                f"{len(view) - offset} left"
            )
        found.append(Descriptor(type_, bytes(view[offset : offset + length])))
        offset += length
    if offset != len(view):
        raise RemoteProtocolError(
            f"GetDescriptorsResponse: {len(view) - offset} bytes after {count} descriptors"
        )
    return found
