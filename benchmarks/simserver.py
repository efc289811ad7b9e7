"""The simulator process: ``python -m benchmarks.simserver --dmm N [--cpu C]``.

Serves one zero-latency scope (round trips, blocks, uploads) and ``N`` multimeters that
answer after ``--latency`` seconds (fan-out), each on its own 127.0.0.1 port, with
aiotmc's own :class:`~aiotmc.sim.server.SimServer`. Prints one JSON line with the ports,
then serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .figures import FANOUT_LATENCY, HOST
from .procs import pin_self, raise_fd_limit, serve_lines


async def serve(args: argparse.Namespace, announce: Any) -> None:
    """Start the servers, announce their ports, serve until stdin reaches EOF."""
    import anyio

    from aiotmc.sim.devices import create_device
    from aiotmc.sim.server import serve_many

    devices = [create_device("scope")]
    devices += [create_device("dmm", latency=args.latency) for _ in range(args.dmm)]
    async with serve_many(devices, host=HOST) as servers:
        announce({"scope": servers[0].port, "dmm": [s.port for s in servers[1:]]})
        # Blocks in a worker thread until the parent closes our stdin (or dies).
        await anyio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simserver")
    parser.add_argument("--dmm", type=int, default=0, help="number of fan-out multimeters")
    parser.add_argument("--latency", type=float, default=FANOUT_LATENCY)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--backend", default="auto", choices=["auto", "asyncio", "uvloop", "trio"])
    args = parser.parse_args(argv)
    pinned = pin_self(args.cpu)
    raise_fd_limit()
    _, responses = serve_lines()

    backend, options = "asyncio", {}
    if args.backend == "trio":
        backend = "trio"
    elif args.backend in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: F401

            options = {"use_uvloop": True}
        except ImportError:
            if args.backend == "uvloop":
                raise
    label = "asyncio+uvloop" if options else backend

    def announce(ports: dict[str, Any]) -> None:
        responses.write(json.dumps({**ports, "pinned": pinned, "backend": label}) + "\n")

    import anyio

    anyio.run(serve, args, announce, backend=backend, backend_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
