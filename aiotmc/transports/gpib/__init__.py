"""``GPIB[board]::pad[::sad]::INSTR``: GPIB through whatever controller the board is.

The board table (:mod:`._boards`) says what board ``n`` is: a Prologix/AR488 adapter
(pyvisa-py's two-step form: ``PRLGX-TCPIP0::host::1234::INTFC`` attached, then
``GPIB0::12::INSTR``), a VXI-11.2 LAN/GPIB gateway, or a local card through linux-gpib
(the default). The opener hands the resource to that controller's transport; see
docs/gpib.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypedDict

from ...resources import GpibInstr, ResourceName, TcpipInstr
from ..base import MessageTransport
from ..spec import LinkSettings, TransportSpec
from ._boards import (
    ENV_PREFIX,
    LINUX_GPIB,
    Board,
    attach_board,
    board,
    boards,
    detach_board,
    parse_board,
    resolve_board,
)

__all__ = [
    "ENV_PREFIX",
    "TRANSPORT",
    "Board",
    "GpibOptions",
    "attach_board",
    "board",
    "boards",
    "detach_board",
    "open_gpib",
    "parse_board",
    "resolve_board",
]


class GpibOptions(TypedDict, total=False):
    """Options of ``GPIB::pad::INSTR`` resources."""

    adapter: str  #: the board for this call: ``PRLGX-TCPIP0::host::1234::INTFC``...
    baud_rate: int  #: a serial Prologix/AR488 adapter's rate (115200)
    serial_backend: str  #: a serial adapter's port backend: "auto", "posix" or "pyserial"
    srq_interval: float  #: Prologix: seconds between ``++srq`` polls while subscribed
    libgpib: (
        str  #: linux-gpib: path of ``libgpib.so.0`` (else ``AIOTMC_LIBGPIB``, then the system's)
    )


@asynccontextmanager
async def open_gpib(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[MessageTransport]:
    """The registry's opener for ``GPIB`` resources: the board's controller's transport."""
    assert isinstance(resource, GpibInstr)
    try:
        target = resolve_board(resource.board, options.get("adapter"))
    except ValueError as exc:
        raise ValueError(f"{resource}: {exc}") from None
    extra = set(options) - {"adapter"} - _OPTIONS_OF[target.kind]
    if extra:
        raise TypeError(
            f"{resource}: option(s) {', '.join(sorted(extra))} do not apply to board {target.name}"
        )
    if target.kind in ("prologix-tcpip", "prologix-asrl"):
        async with _open_prologix(resource, target, settings, options) as link:
            yield link
    elif target.kind == "vxi11":
        from ..vxi11 import TRANSPORT as VXI11

        device = f"{target.interface},{resource.primary}"
        if resource.secondary is not None:
            device += f",{resource.secondary}"
        name = TcpipInstr(
            board=target.number, host=target.host, lan_device_name=device, port=target.port or None
        )
        async with VXI11.open(name, settings, {}) as link:
            yield link
    else:
        from ..linux_gpib import open_linux_gpib

        async with open_linux_gpib(resource, settings, options) as link:
            yield link


_OPTIONS_OF: Final = {
    "prologix-tcpip": {"srq_interval"},
    "prologix-asrl": {"srq_interval", "baud_rate", "serial_backend"},
    "vxi11": set[str](),
    LINUX_GPIB: {"libgpib"},
}


@asynccontextmanager
async def _open_prologix(
    resource: GpibInstr, target: Board, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[MessageTransport]:
    from ..prologix import open_address

    async with open_address(
        resource,
        adapter=target.host,
        port=target.port,
        serial=target.kind == "prologix-asrl",
        primary=resource.primary,
        secondary=resource.secondary,
        settings=settings,
        options=options,
    ) as link:
        yield link


def _unavailable() -> str | None:
    if boards():
        return None
    from ..linux_gpib import library_problem

    problem = library_problem()
    if problem is None:
        return None
    return (
        f"no GPIB controller: {problem}; or attach an adapter as a board "
        f"({ENV_PREFIX}0=PRLGX-TCPIP0::host::1234::INTFC, docs/gpib.md)"
    )


TRANSPORT: Final = TransportSpec(
    kind="gpib",
    summary="GPIB: linux-gpib cards, or a board attached to a Prologix adapter / VXI-11.2 gateway",
    example="GPIB0::12::INSTR",
    open=open_gpib,
    options=GpibOptions,
    unavailable=_unavailable,
)
"""The GPIB transport's registration (see :mod:`aiotmc.registry`)."""
