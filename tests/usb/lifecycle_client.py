"""Client side of the umockdev close matrix: real libusb, every mode of ``lifecycle_cases``.

Runs in a subprocess started by ``tests/usb/test_lifecycle_umockdev.py`` under the
umockdev preload (``LD_PRELOAD``, ``UMOCKDEV_DIR``: the harness in ``conftest.py``)::

    python -m tests.usb.lifecycle_client --backend trio --driver thread

Opens the first emulated instrument with ``aiotmc.open("USB0::...::INSTR")`` for each
mode and prints ``RESULT <json>`` with the tally (exit 1 with a traceback on failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

import anyio
import anyio.abc

import aiotmc
from tests.lifecycle_cases import MODES, Tally, run_cell


class DeviceControl:
    """The device process's control socket (fault injection, statistics)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stream: anyio.abc.SocketStream | None = None
        self._buffer = b""

    async def __call__(self, command: str) -> Any:
        if self._stream is None:
            self._stream = await anyio.connect_unix(self._path)
        await self._stream.send(command.encode() + b"\n")
        while b"\n" not in self._buffer:
            self._buffer += await self._stream.receive()
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"device command {command!r} failed: {reply['error']}")
        return reply.get("result")

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()


async def run(driver: str) -> dict[str, Any]:
    info = json.loads(os.environ["AIOTMC_UMOCKDEV_INFO"])
    device = info["devices"][0]
    name = f"USB0::0x{device['vid']:04X}::0x{device['pid']:04X}::{device['serial']}::INSTR"
    control = DeviceControl(os.environ["AIOTMC_UMOCKDEV_CONTROL"])
    tally = Tally()

    async def stall(inst: aiotmc.Instrument) -> None:
        await control("@0 call model.delay_next_responses [30.0, 1]")

    async def wait_pending() -> None:
        """Until the query's bulk-IN read is queued on the device (bounded)."""
        with anyio.fail_after(10):
            while True:  # another process: poll its statistics
                stats = await control("@0 stats")
                if stats["pending_in"].get("0x82"):
                    return
                await anyio.sleep(0.01)

    try:
        for mode in MODES:
            sys.stderr.write(f"mode {mode} ...\n")
            with anyio.fail_after(20):
                await run_cell(
                    mode,
                    lambda: aiotmc.open(name, driver=driver, timeout=10),
                    tally,
                    stall=stall,
                    wait_pending=wait_pending,
                )
    finally:
        await control.aclose()
    return tally.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--driver", default="thread", choices=["thread", "pollfd", "auto"])
    args = parser.parse_args(argv)
    try:
        result = anyio.run(run, args.driver, backend=args.backend)
    except BaseException:
        traceback.print_exc()
        return 1
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
