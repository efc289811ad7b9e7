"""One linux-gpib descriptor: its library calls in slices, its status as typed errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..._exceptions import (
    ConnectError,
    ConnectionLostError,
    LocalProtocolError,
    ReadTimeout,
    ResourceNotFoundError,
    TransportError,
    WriteTimeout,
)
from ._library import GpibLibrary, IbErr, IbSta, timeout_code
from ._worker import Call, Worker

__all__ = ["Device", "error_for"]

_WRITING: Final = frozenset({"ibwrt", "ibclr", "ibtrg", "ibloc"})
_ERR: Final = int(IbSta.ERR)


class Device:
    """One descriptor: the library, its ud, the worker, the timeout code set last."""

    def __init__(self, lib: GpibLibrary, ud: int, name: str) -> None:
        self.lib = lib
        self.ud = ud
        self.name = name
        self.worker = Worker(name)
        self.tmo = -1

    def check(self, what: str, *, reading: bool = True) -> int:
        """This thread's status after ``what``; a typed error when ERR is set."""
        sta, err, cnt = self.lib.status()
        if sta & _ERR:
            raise error_for(self.name, what, err, cnt, reading)
        return sta

    def sliced(self, call: Call, what: str, action: Callable[[], object]) -> int:
        """``action()`` (one library call) again after each slice that timed out, until
        the deadline; the status."""
        while True:
            self.timeout(call)
            action()
            sta, err, cnt = self.lib.status()
            if not sta & _ERR:
                return sta
            if err != IbErr.EABO or not call.go_on:
                raise error_for(self.name, what, err, cnt, what not in _WRITING)

    def timeout(self, call: Call) -> None:
        """``ibtmo`` for what is left of ``call`` (only when the code changes)."""
        code = timeout_code(call.remaining())
        if code != self.tmo:
            self.lib.ibtmo(self.ud, code)
            self.check("ibtmo")
            self.tmo = code

    def clear(self, call: Call) -> None:
        """Selected device clear (``ibclr``)."""
        self.sliced(call, "ibclr", lambda: self.lib.ibclr(self.ud))

    def close(self) -> None:
        """Take the descriptor offline (``ibonl 0``)."""
        self.lib.ibonl(self.ud, 0)


def error_for(name: str, what: str, err: int, cnt: int, reading: bool) -> Exception:
    if err == IbErr.EABO:
        error = ReadTimeout if reading else WriteTimeout
        return error(f"{name}: {what} timed out")
    if err == IbErr.ENOL:
        return ConnectionLostError(f"{name}: {what}: no listener on the bus (is it on?)")
    if err == IbErr.ENEB:
        return ResourceNotFoundError(f"{name}: no such GPIB board (gpib_config run?)")
    if err == IbErr.EDVR:
        return ConnectError(f"{name}: {what}: system error {cnt} (/dev/gpibN permissions?)")
    if err == IbErr.EARG:
        return LocalProtocolError(f"{name}: {what}: invalid argument")
    try:
        label = IbErr(err).name
    except ValueError:
        label = str(err)
    return TransportError(f"{name}: {what} failed (iberr {label})")
