"""Run the conformance kit over an opened-by-name link, in a process of its own.

The umockdev tier (``tests/usb/test_kit_umockdev.py``) starts it under
``LD_PRELOAD=libumockdev-preload.so.0``; the kernel tier's guest can run it too::

    python -m tests.testing.kit_client USB0::0x0957::0x1796::KIT1::INSTR \\
        --backend trio --driver thread

On success it prints one line ``RESULT <json>`` (what each check did); a failing check
prints its AssertionError on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import anyio

import aiotmc
from aiotmc.testing import KitOptions, check_transport

__all__ = ["main", "run_kit"]


async def run_kit(resource: str, *, timeout: float = 240.0, **options: Any) -> dict[str, Any]:
    """``check_transport`` over ``aiotmc.open_transport(resource, **options)``."""

    def open_link() -> Any:
        return aiotmc.open_transport(resource, **options)

    with anyio.fail_after(timeout):
        report = await check_transport(open_link, options=KitOptions())
    return {name: dataclasses.asdict(stats) for name, stats in report.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("resource")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--driver", default=None, help="USB event driver (thread, pollfd)")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.driver:
        options["driver"] = args.driver
    result = anyio.run(
        lambda: run_kit(args.resource, timeout=args.timeout, **options), backend=args.backend
    )
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
