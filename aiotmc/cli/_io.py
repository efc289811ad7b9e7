"""``aiotmc query``, ``write`` and ``read-block``: one-shot exchanges with an instrument."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ._errors import UsageError
from ._program import query_units
from ._runtime import Options, open_instrument, run_async


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


# --------------------------------------------------------------------------- read-block


def cmd_read_block(args: argparse.Namespace, options: Options) -> int:
    show = args.progress if args.progress is not None else sys.stderr.isatty()

    async def run() -> tuple[bytearray, float]:
        import anyio

        async with open_instrument(args.resource, options) as inst, anyio.create_task_group() as tg:
            start = time.perf_counter()
            if show:
                tg.start_soon(_spinner, f"{args.cmd} from {args.resource}", start)
            data = await inst.query_block(args.cmd, max_size=args.max_size)
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
        return data, elapsed

    data, elapsed = run_async(options, run)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        where = "stdout"
    else:
        Path(args.output).write_bytes(data)
        where = args.output
    rate = len(data) / elapsed / 1e6 if elapsed > 0 else math.inf
    print(
        f"wrote {len(data)} bytes to {where} in {elapsed:.3f} s ({rate:.2f} MB/s)",
        file=sys.stderr,
    )
    return 0


async def _spinner(what: str, start: float) -> None:
    """Elapsed time on stderr (query_block exposes no byte count, so no percentage)."""
    import anyio

    frames = "|/-\\"
    tick = 0
    try:
        while True:
            await anyio.sleep(0.1)
            tick += 1
            elapsed = time.perf_counter() - start
            sys.stderr.write(f"\r{frames[tick % 4]} reading {what}  {elapsed:5.1f} s")
            sys.stderr.flush()
    finally:
        if tick:
            sys.stderr.write("\r\x1b[K")  # erase the line, also when the query failed
            sys.stderr.flush()
