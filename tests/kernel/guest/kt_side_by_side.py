"""Side by side: one 10 MB block through /dev/usbtmc0 and through aiotmc, same emulator.

Both read ``:WAVeform:TEST? 10000000`` from one plugged simulated scope over the same
xHCI + usb-redir path: the kernel's usbtmc driver, then aiotmc (which detaches it and gives
it back), rounds interleaved, best of three each. The figure (MB/s each and the time
ratio) is printed by the host and written to ``figures.json`` in the results. Emulation
speeds, meaningful only as a comparison.
"""

from __future__ import annotations

import os
import time

import anyio
import pytest

from .conftest import record
from .kt_aiotmc import transport
from .kt_kernel_driver import Tmc
from .link import HostLink, UsbDevice, wait_for

SIZE = 10_000_000
PATTERN = (bytes(range(256)) * (SIZE // 256 + 1))[:SIZE]
COMMAND = f":WAVeform:TEST? {SIZE}\n".encode()
ROUNDS = 3


def _payload(response: bytes) -> bytes:
    digits = response[1] - 0x30
    assert int(response[2 : 2 + digits]) == SIZE
    return response[2 + digits : 2 + digits + SIZE]


def kernel_read(device: UsbDevice) -> float:
    """Write the query to /dev/usbtmcN, read() 1 MB at a time until the block is in."""
    wait_for(lambda: (n := device.usbtmc_node()) and os.path.exists(n), 20, "usbtmc node")
    tmc = Tmc(device)
    try:
        started = time.perf_counter()
        tmc.write(COMMAND)
        chunks = []
        got = 0
        while True:
            chunk = os.read(tmc.fd, 1 << 20)
            chunks.append(chunk)
            got += len(chunk)
            if not chunk or (got >= SIZE + 11 and chunk.endswith(b"\n")):
                break
        elapsed = time.perf_counter() - started
        assert _payload(b"".join(chunks)) == PATTERN
    finally:
        tmc.close()
    return elapsed


async def aiotmc_read(device: UsbDevice, driver: str) -> float:
    """Send the query through aiotmc (which detaches usbtmc.ko), receive the whole message."""
    async with transport(device.serial, driver) as t:
        started = time.perf_counter()
        await t.send_message([COMMAND])
        response = await t.receive_message(max_size=SIZE + 64)
        elapsed = time.perf_counter() - started
    assert _payload(response) == PATTERN
    return elapsed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_10mb_block_kernel_vs_aiotmc(plugged: HostLink) -> None:
    """One plugged scope; rounds interleave the three readers; best of ``ROUNDS`` each."""
    device = await anyio.to_thread.run_sync(lambda: plugged.plug("scope"))
    runs: dict[str, list[float]] = {"kernel": [], "thread": [], "pollfd": []}
    for _ in range(ROUNDS):
        runs["kernel"].append(await anyio.to_thread.run_sync(kernel_read, device))
        for driver in ("thread", "pollfd"):
            runs[driver].append(await aiotmc_read(device, driver))
    kernel_s = min(runs["kernel"])
    aiotmc_s = {d: min(runs[d]) for d in ("thread", "pollfd")}
    best = min(aiotmc_s.values())
    figure = {
        "bytes": SIZE,
        "kernel_usbtmc_s": round(kernel_s, 3),
        "kernel_usbtmc_MBps": round(SIZE / kernel_s / 1e6, 2),
        **{f"aiotmc_{d}_s": round(s, 3) for d, s in aiotmc_s.items()},
        **{f"aiotmc_{d}_MBps": round(SIZE / s / 1e6, 2) for d, s in aiotmc_s.items()},
        "ratio_aiotmc_over_kernel_time": round(best / kernel_s, 2),
    }
    record("side_by_side_10MB", figure)
    print(
        f"\nSIDE-BY-SIDE 10 MB: /dev/usbtmc0 {figure['kernel_usbtmc_MBps']} MB/s, "
        f"aiotmc thread {figure['aiotmc_thread_MBps']} MB/s, "
        f"pollfd {figure['aiotmc_pollfd_MBps']} MB/s; "
        f"aiotmc/kernel time ratio {figure['ratio_aiotmc_over_kernel_time']}"
    )
