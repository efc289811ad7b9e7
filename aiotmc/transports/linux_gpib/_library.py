"""linux-gpib's C library (``libgpib.so.0``) through ctypes: loading, signatures, status.

Only the traditional NI-488 calls a message-based instrument needs are bound: ``ibdev``,
``ibonl``, ``ibtmo``, ``ibwrt``, ``ibrd``, ``ibrsp``, ``ibclr``, ``ibtrg``, ``ibloc``,
``ibwait`` (and, when present, ``ibsic``/``ibsre`` on the board). Status is read with the
thread-local ``ThreadIbsta``/``ThreadIberr``/``ThreadIbcntl`` (each call runs in a worker
thread; the global ``ibsta`` of another thread's call would be wrong), falling back to the
globals on a library without them.

The library is found as ``AIOTMC_LIBGPIB`` (a path), else ``libgpib.so.0`` through the
dynamic loader. Nothing here blocks the event loop by itself: the transport calls these
functions in worker threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
from collections.abc import Callable
from typing import Final

__all__ = [
    "ENV_LIBRARY",
    "TIMEOUTS",
    "GpibLibrary",
    "IbErr",
    "IbSta",
    "load_library",
    "timeout_code",
]

ENV_LIBRARY: Final = "AIOTMC_LIBGPIB"
"""Environment variable naming the ``libgpib.so`` to load."""

#: linux-gpib's timeout codes TNONE, T10us ... T1000s, as seconds (index = code)
TIMEOUTS: Final = (
    0.0,
    10e-6,
    30e-6,
    100e-6,
    300e-6,
    1e-3,
    3e-3,
    10e-3,
    30e-3,
    0.1,
    0.3,
    1.0,
    3.0,
    10.0,
    30.0,
    100.0,
    300.0,
    1000.0,
)


class IbSta(enum.IntFlag):
    """``ibsta`` bits."""

    DCAS = 0x1
    DTAS = 0x2
    LACS = 0x4
    TACS = 0x8
    ATN = 0x10
    CIC = 0x20
    REM = 0x40
    LOK = 0x80
    CMPL = 0x100
    EVENT = 0x200
    SPOLL = 0x400
    RQS = 0x800
    SRQI = 0x1000
    END = 0x2000
    TIMO = 0x4000
    ERR = 0x8000


class IbErr(enum.IntEnum):
    """``iberr`` values."""

    EDVR = 0  #: system error (errno in ``ibcntl``)
    ECIC = 1  #: not controller in charge
    ENOL = 2  #: no listeners
    EADR = 3  #: addressing error
    EARG = 4  #: bad argument
    ESAC = 5  #: not system controller
    EABO = 6  #: I/O aborted (timeout)
    ENEB = 7  #: no such board
    EDMA = 8
    EOIP = 10  #: asynchronous I/O in progress
    ECAP = 11  #: no capability
    EFSO = 12
    EBUS = 14  #: bus error
    ESTB = 15  #: status byte queue overflow
    ESRQ = 16  #: SRQ stuck on
    ETAB = 20


def timeout_code(seconds: float) -> int:
    """The smallest timeout code at least ``seconds`` long (T1000s beyond; never TNONE)."""
    for code, limit in enumerate(TIMEOUTS[1:], start=1):
        if limit >= seconds:
            return code
    return len(TIMEOUTS) - 1


_Int = ctypes.c_int
_Long = ctypes.c_long


class GpibLibrary:
    """The bound functions of one loaded ``libgpib``."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._lib = lib

        def bind(name: str, *args: type) -> Callable[..., int]:
            function = getattr(lib, name)
            function.argtypes = list(args)
            function.restype = _Int
            return function  # type: ignore[no-any-return]

        self.ibdev = bind("ibdev", _Int, _Int, _Int, _Int, _Int, _Int)
        self.ibonl = bind("ibonl", _Int, _Int)
        self.ibtmo = bind("ibtmo", _Int, _Int)
        self.ibwrt = bind("ibwrt", _Int, ctypes.c_void_p, _Long)
        self.ibrd = bind("ibrd", _Int, ctypes.c_void_p, _Long)
        self.ibrsp = bind("ibrsp", _Int, ctypes.c_char_p)
        self.ibclr = bind("ibclr", _Int)
        self.ibtrg = bind("ibtrg", _Int)
        self.ibloc = bind("ibloc", _Int)
        self.ibwait = bind("ibwait", _Int, _Int)
        self.ibeot = bind("ibeot", _Int, _Int)
        self.ibsic = bind("ibsic", _Int) if hasattr(lib, "ibsic") else None
        self.ibsre = bind("ibsre", _Int, _Int) if hasattr(lib, "ibsre") else None
        self._sta = self._status("ThreadIbsta", "ibsta")
        self._err = self._status("ThreadIberr", "iberr")
        self._cnt = self._status("ThreadIbcntl", "ibcntl", long=True)

    def _status(self, function: str, variable: str, *, long: bool = False) -> Callable[[], int]:
        if hasattr(self._lib, function):
            bound = getattr(self._lib, function)
            bound.argtypes = []
            bound.restype = _Long if long else _Int
            return bound  # type: ignore[no-any-return]
        cell = (_Long if long else _Int).in_dll(self._lib, variable)
        return lambda: int(cell.value)

    def status(self) -> tuple[int, int, int]:
        """This thread's ``(ibsta, iberr, ibcntl)`` after its last call."""
        return int(self._sta()), int(self._err()), int(self._cnt())


def load_library(path: str | None = None) -> GpibLibrary:
    """Load ``path``, else ``$AIOTMC_LIBGPIB``, else the system's ``libgpib.so.0``.

    ``OSError`` saying what was tried when none loads; ``AttributeError`` (from ctypes)
    when the library lacks one of the calls.
    """
    chosen = path or os.environ.get(ENV_LIBRARY) or None
    if chosen is None:
        found = ctypes.util.find_library("gpib")
        candidates = [c for c in ("libgpib.so.0", found) if c]
    else:
        candidates = [chosen]
    errors = []
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
            continue
        return GpibLibrary(lib, candidate)
    tried = "; ".join(errors) or "libgpib not found"
    raise OSError(
        f"cannot load linux-gpib's library ({tried}): install linux-gpib or set "
        f"{ENV_LIBRARY} to the path of libgpib.so.0"
    )
