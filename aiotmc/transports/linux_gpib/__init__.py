"""GPIB through a local controller card and linux-gpib's C library (``libgpib.so.0``).

Opened through ``GPIB[board]::pad[::sad]::INSTR`` when board ``board`` is not attached to
an adapter (see :mod:`aiotmc.transports.gpib`). The library is called through ctypes
(:mod:`._library`), each call in a worker thread (:mod:`._worker`);
:class:`LinuxGpibTransport` is the link (:mod:`._transport`). ``AIOTMC_LIBGPIB`` (or the
``libgpib=`` option) names the library to load instead of the system's.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from ..._exceptions import UnsupportedOperation
from ...resources import GpibInstr, ResourceName
from ..spec import LinkSettings, closing_link
from ._library import ENV_LIBRARY, GpibLibrary, IbErr, IbSta, load_library, timeout_code
from ._transport import LinuxGpibTransport

__all__ = [
    "ENV_LIBRARY",
    "GpibLibrary",
    "IbErr",
    "IbSta",
    "LinuxGpibTransport",
    "library",
    "library_problem",
    "load_library",
    "open_linux_gpib",
    "timeout_code",
]

_lock = threading.Lock()
_loaded: dict[str | None, GpibLibrary] = {}


def library(path: str | None = None) -> GpibLibrary:
    """The library at ``path`` (else ``$AIOTMC_LIBGPIB``, else the system's), loaded once
    per path; ``OSError`` when it cannot be loaded."""
    import os

    key = path or os.environ.get(ENV_LIBRARY) or None
    with _lock:
        lib = _loaded.get(key)
        if lib is None:
            try:
                lib = load_library(key)
            except AttributeError as exc:
                raise OSError(f"{key or 'libgpib'} is not linux-gpib's library: {exc}") from None
            _loaded[key] = lib
        return lib


def library_problem(path: str | None = None) -> str | None:
    """Why linux-gpib cannot be used here, or None when its library loads."""
    try:
        library(path)
    except OSError as exc:
        return str(exc)
    return None


@asynccontextmanager
async def open_linux_gpib(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[LinuxGpibTransport]:
    """Open ``GPIB[board]::pad[::sad]::INSTR`` on a local card (``ibdev``)."""
    assert isinstance(resource, GpibInstr)
    try:
        lib = library(options.get("libgpib"))
    except OSError as exc:
        raise UnsupportedOperation(
            f"{resource}: board {resource.board} is not attached to an adapter and {exc} "
            f"(to use an adapter: AIOTMC_GPIB{resource.board}=PRLGX-TCPIP0::host::1234::INTFC,"
            " see docs/gpib.md)"
        ) from None
    transport = await LinuxGpibTransport.open(
        lib,
        board=resource.board,
        primary=resource.primary,
        secondary=resource.secondary,
        resource=str(resource),
        timeout=settings.connect_timeout,
    )
    async with closing_link(transport) as opened:
        yield opened
