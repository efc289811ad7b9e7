"""``aiotmc sim --pty / --prologix PORT / --prologix-pty``: the simulated instruments also
on pseudo-terminals (serial ports) and behind a simulated Prologix GPIB adapter."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..sim.device import SimDevice

__all__ = ["add_arguments", "serve_serial_and_gpib"]


def add_arguments(sim: argparse.ArgumentParser, port: object) -> None:
    """The ``sim`` subcommand's serial and GPIB options (``port``: the port type)."""
    sim.add_argument(
        "--pty",
        action="store_true",
        help="also serve each instrument on a pseudo-terminal: ASRL/dev/pts/N::INSTR",
    )
    sim.add_argument(
        "--prologix",
        type=port,  # type: ignore[arg-type]
        metavar="PORT",
        help="also serve the instruments as GPIB addresses 1, 2... behind a simulated "
        "Prologix GPIB-ETHERNET adapter on PORT (0: a free port)",
    )
    sim.add_argument(
        "--prologix-pty",
        action="store_true",
        help="also serve them behind a simulated Prologix GPIB-USB adapter on a pty",
    )


@contextlib.asynccontextmanager
async def serve_serial_and_gpib(
    args: argparse.Namespace, devices: list[SimDevice]
) -> AsyncIterator[list[tuple[int, str, str]]]:
    """Start what the options ask for; yields (device index, resource, how) lines."""
    from ..sim.prologix_server import PrologixServer
    from ..sim.pty_server import PtyServer

    lines: list[tuple[int, str, str]] = []
    async with contextlib.AsyncExitStack() as stack:
        if args.pty:
            for index, device in enumerate(devices):
                server = await stack.enter_async_context(PtyServer(device))
                lines.append((index, server.resource, "(serial, pty)"))
        adapters = []
        if args.prologix is not None:
            adapters.append(
                PrologixServer(_by_address(devices), host=args.host, port=args.prologix)
            )
        if args.prologix_pty:
            adapters.append(PrologixServer(_by_address(devices), pty=True))
        for adapter in adapters:
            await stack.enter_async_context(adapter)
            how = "(GPIB, Prologix on a pty)" if adapter.pty else "(GPIB, Prologix on TCP)"
            for index in range(len(devices)):
                lines.append((index, adapter.resource(index + 1), how))
            lines.append((-1, adapter.interface, "(AIOTMC_GPIB0=this: GPIB0::N::INSTR)"))
        yield lines


def _by_address(devices: list[SimDevice]) -> dict[int, SimDevice]:
    if len(devices) > 30:
        raise ValueError("a GPIB bus has addresses 1..30: serve at most 30 instruments")
    return {index + 1: device for index, device in enumerate(devices)}
