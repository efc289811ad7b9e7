"""Blocking API: ``with aiotmc.sync.open("SIM::dmm") as inst: inst.query("*IDN?")``.

For scripts, the REPL and notebooks. The async objects live in one event-loop thread per
process (started on first use, asyncio unless ``AIOTMC_SYNC_BACKEND=trio``); the blocking
objects forward every call to it and wait. It works the same inside a thread that runs its
own event loop (Jupyter): that loop is never touched. Ctrl-C during a call cancels the
operation, lets the link recover, then raises ``KeyboardInterrupt``. See docs/notebooks.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from .._open import open as _open_async
from ..group import Limit, ResourceSpec
from ..group import open_many as _open_many_async
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..reconnect import Reconnect
from ..resources import ResourceName
from ._group import SyncInstrumentGroup
from ._instrument import SyncInstrument, SyncPendingOperation
from ._portal import on_exit, portal_for
from ._srq import ServiceRequests

__all__ = [
    "ServiceRequests",
    "SyncInstrument",
    "SyncInstrumentGroup",
    "SyncPendingOperation",
    "open",
    "open_many",
]

_open_instruments: weakref.WeakSet[SyncInstrument] = weakref.WeakSet()
_open_groups: weakref.WeakValueDictionary[int, SyncInstrumentGroup] = weakref.WeakValueDictionary()


def open(
    resource: str | ResourceName,
    *,
    timeout: float | None = 10.0,
    connect_timeout: float | None = 10.0,
    read_termination: str = "\n",
    write_termination: str = "\n",
    encoding: str = "ascii",
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    srq_poll_interval: float | None = None,
    reconnect: Reconnect | bool | None = None,
    **options: Any,
) -> SyncInstrument:
    """Open an instrument for blocking use; the options are :func:`aiotmc.open`'s.

    The instrument is open on return; use it in a ``with`` block, or call
    :meth:`~SyncInstrument.close` (instruments still open at exit are closed then).
    """
    portal = portal_for()
    cm = _open_async(
        resource,
        timeout=timeout,
        connect_timeout=connect_timeout,
        read_termination=read_termination,
        write_termination=write_termination,
        encoding=encoding,
        max_message_size=max_message_size,
        srq_poll_interval=srq_poll_interval,
        reconnect=reconnect,
        **options,
    )

    async def close() -> None:
        await cm.__aexit__(None, None, None)

    instrument = portal.run(cm.__aenter__)
    sync = SyncInstrument(portal, instrument, close)
    _open_instruments.add(sync)
    return sync


def open_many(
    resources: Mapping[str, ResourceSpec],
    *,
    strict: bool = False,
    limit: Limit = None,
    **options: Any,
) -> SyncInstrumentGroup:
    """Open named instruments concurrently for blocking use (see :func:`aiotmc.open_many`):
    ``with aiotmc.sync.open_many({"dmm": "SIM::dmm", "psu": "SIM::psu"}) as group:``."""
    portal = portal_for()
    cm = _open_many_async(resources, strict=strict, limit=limit, **options)

    async def close() -> None:
        await cm.__aexit__(None, None, None)

    group = SyncInstrumentGroup(portal, portal.run(cm.__aenter__), close)
    _open_groups[id(group)] = group
    return group


def _close_all() -> None:
    for group in list(_open_groups.values()):
        group.close()
    for instrument in list(_open_instruments):
        instrument.close()


on_exit(_close_all)
