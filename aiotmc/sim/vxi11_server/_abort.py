"""The abort channel: device_abort ends a link's device_read waiting on the core
channel for its device's response."""

from __future__ import annotations

from collections.abc import Mapping

from ...protocol.oncrpc import AcceptStat, encode_accepted_error, encode_reply
from ...protocol.vxi11 import DEVICE_ASYNC, VERSION, DeviceError, DeviceLink, ErrorCode, Proc
from ._links import Link

__all__ = ["abort_answer"]


def abort_answer(
    links: Mapping[int, Link], xid: int, prog: int, vers: int, proc: int, args: memoryview
) -> bytes:
    """The reply to one call on the abort channel, for the server's ``links``."""
    if prog != DEVICE_ASYNC:
        return encode_accepted_error(xid, AcceptStat.PROG_UNAVAIL)
    if vers != VERSION:
        return encode_accepted_error(xid, AcceptStat.PROG_MISMATCH, mismatch=(1, 1))
    if proc != Proc.DEVICE_ABORT:
        return encode_accepted_error(xid, AcceptStat.PROC_UNAVAIL)
    link = links.get(DeviceLink.decode(args).lid)
    if link is None:
        return encode_reply(xid, DeviceError(ErrorCode.INVALID_LINK_IDENTIFIER).encode())
    if link.aborted is not None:
        link.aborted.set()
    return encode_reply(xid, DeviceError(0).encode())
