"""``aiotmc query``, ``write`` and ``read-block``: one-shot exchanges with an instrument."""

from __future__ import annotations

import argparse

from ._block import cmd_read_block
from ._errors import UsageError
from ._program import query_units
from ._runtime import Options, open_instrument, run_async

__all__ = ["cmd_query", "cmd_read_block", "cmd_write"]


def cmd_query(args: argparse.Namespace, options: Options) -> int:
    for cmd in args.commands:
        if not query_units(cmd):
            raise UsageError(
                f"{cmd!r} is not a query (no header ending in '?'), so no answer would come: "
                "use 'aiotmc write' to send it"
            )

    async def run() -> None:
        async with open_instrument(args.resource, options) as inst:
            for cmd in args.commands:
                print(await inst.query(cmd), flush=True)

    run_async(options, run)
    return 0


def cmd_write(args: argparse.Namespace, options: Options) -> int:
    for cmd in args.commands:
        found = query_units(cmd)
        if found:
            raise UsageError(
                f"{found[0]!r} is a query: 'aiotmc write' would leave its answer unread; "
                "use 'aiotmc query' to read answers"
            )

    async def run() -> None:
        async with open_instrument(args.resource, options) as inst:
            for cmd in args.commands:
                await inst.write(cmd)
            if args.check:
                await inst.check_errors()
            else:
                # A round trip, so the commands have reached the instrument before we close.
                await inst.query("*OPC?")

    run_async(options, run)
    return 0
