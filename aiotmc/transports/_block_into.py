"""Where a block response's payload goes: the caller's buffer (``into``) or a new one.

Every transport's ``receive_block`` ends the same way: the payload lands in ``into`` when
it fits, in a new buffer when no ``into`` was given, and a buffer too small gives one
:class:`~aiotmc.LocalProtocolError` (raised once the whole message is consumed, so the
link stays in step). Stdlib only; no I/O.
"""

from __future__ import annotations

from typing import Final

from .._exceptions import LocalProtocolError

__all__ = ["TRAILER_LIMIT", "block_target", "buffer_too_small", "deliver_block"]

TRAILER_LIMIT: Final = 4096
"""Bytes kept of what follows a block's payload (normally just the terminator)."""


def buffer_too_small(size: int, room: int) -> LocalProtocolError:
    """The error for a block of ``size`` bytes and a caller's buffer of ``room`` bytes."""
    return LocalProtocolError(f"block of {size} bytes does not fit the {room}-byte buffer")


def block_target(into: memoryview | None, size: int) -> tuple[memoryview, int | None]:
    """Where a payload of ``size`` bytes (already checked against max_size) goes: ``into``
    or a new buffer; and the length of ``into`` when it is too small (else None: the
    caller reads the payload into a scratch buffer and raises :func:`buffer_too_small`
    once the message is consumed)."""
    if into is None:
        return memoryview(bytearray(size)), None
    if len(into) < size:
        return memoryview(bytearray(size)), len(into)
    return into[:size], None


def deliver_block(payload: bytes | bytearray | memoryview, into: memoryview | None) -> memoryview:
    """A payload received whole: a copy in a new buffer, or copied into ``into``."""
    if into is None:
        return memoryview(bytearray(payload))
    size = len(payload)
    if len(into) < size:
        raise buffer_too_small(size, len(into))
    into[:size] = payload
    return into[:size]
