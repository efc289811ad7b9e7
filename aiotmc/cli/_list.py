"""``aiotmc list``: attached instruments of every transport, and the simulated models."""

from __future__ import annotations

import argparse
import sys

from ..registry import Discovery
from ._catalog import SIM_MODELS
from ._runtime import Options, run_async


def cmd_list(args: argparse.Namespace, options: Options) -> int:
    options_: dict[str, object] = {}
    if args.vxi11_hosts or args.vxi11_broadcast:
        options_ = {
            "vxi11_hosts": args.vxi11_hosts or (),
            "vxi11_broadcast": args.vxi11_broadcast,
            "vxi11_timeout": args.vxi11_timeout,
            "vxi11_portmapper_port": args.portmapper_port,
        }

    async def run() -> Discovery:
        from ..discovery import discover

        return await discover(**options_)

    result = run_async(options, run)
    for kind, reason in result.problems.items():
        print(f"aiotmc: note: {kind}: {reason}", file=sys.stderr)
    if not result.found and not result.problems:
        print("aiotmc: note: no instruments found", file=sys.stderr)
    rows = [(found.resource, found.description) for found in result.found]
    rows += [
        (f"SIM::{model}", f"simulated {what} (in-process)") for model, what in SIM_MODELS.items()
    ]
    width = max(len(name) for name, _ in rows)
    for name, what in rows:
        print(f"{name:<{width}}  {what}")
    return 0
