"""Sans-IO protocol machines: bytes in, events out. Stdlib only (no anyio, socket, usb1).

h11 discipline: feed bytes with ``receive_data`` (``b""`` = EOF), pull results until
:class:`NEED_DATA`; only :class:`~aiotmc.LocalProtocolError` and
:class:`~aiotmc.RemoteProtocolError` are raised on purpose, anything else is a bug.
"""

from __future__ import annotations

from .framing import NEED_DATA, MessageDecoder
from .ieee4882 import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BlockHeader,
    Identity,
    block_header,
    decode_block,
    encode_block,
    find_block_header,
    parse_block_header,
    parse_idn,
)
from .scpi import (
    binary_format,
    format_values,
    join_compound,
    pack_binary,
    parse_values,
    split_compound,
    unpack_binary,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "BlockHeader",
    "Identity",
    "MessageDecoder",
    "binary_format",
    "block_header",
    "decode_block",
    "encode_block",
    "find_block_header",
    "format_values",
    "join_compound",
    "pack_binary",
    "parse_block_header",
    "parse_idn",
    "parse_values",
    "split_compound",
    "unpack_binary",
]
