"""Cancellation storms: thousands of operations stopped at random points, on every transport.

After each stopped operation the next query must get its own answer (the device echoes a
fresh number), or a typed TransportError must say the link is broken and reopening must
fix it. At the end no task, thread, file descriptor or USB transfer may be left behind.
The engine and the device are the conformance kit's (``aiotmc.testing.storm``,
``aiotmc.testing.conformance_device``); its deterministic sweep (a cancellation at every
await point) runs in tests/testing/.
``AIOTMC_STORM_ITERATIONS=20000`` makes every storm longer (the default is the CI size).
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

import aiotmc
from aiotmc.sim.fake_port import FakeUsbPort, Hold
from aiotmc.sim.server import SimServer
from aiotmc.sim.usbtmc_device import UsbtmcFunction
from aiotmc.testing import conformance_device
from aiotmc.transports.usbtmc import open_usbtmc_transport

from .conftest import echo_usb_device, run_hardening_client
from .storm import Opener, Operation, Storm, iterations
from .support import RESOURCE, Resources, first_of, started

SEED = 20261121


async def test_tcp_storm(anyio_backend: str) -> None:
    device = conformance_device()
    rng = random.Random(SEED)
    async with SimServer(device) as server:
        # Warm up: the resolver thread and the loop's own helpers exist from here on.
        async with aiotmc.open(server.resource) as inst:
            assert await inst.query("ECHO? 0") == "0"
        before = Resources.now()

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            return await stack.enter_async_context(aiotmc.open(server.resource, timeout=5))

        storm = Storm(
            rng,
            opener,
            block_sizes=(64, 100_000, 2_000_000),
            upload_sizes=(1000, 3_000_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(60):
            report = await storm.run(iterations(1500))
        print(report.as_dict())
        assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 100
        assert not report.typed_errors, report.typed_errors
        with anyio.fail_after(5):
            await server.wait_connections(0)
    after = Resources.now()
    before.assert_no_growth(after)


async def test_sim_storm(anyio_backend: str) -> None:
    """The in-process SIM:: transport: cancellation never crosses answers there either."""
    device = conformance_device()
    rng = random.Random(SEED + 2)
    before = Resources.now()

    async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
        return await stack.enter_async_context(
            aiotmc.open("SIM::storm::storm", device=device, timeout=5)
        )

    storm = Storm(
        rng,
        opener,
        block_sizes=(64, 100_000),
        upload_sizes=(1000, 100_000),
        latency=lambda delay: device.delay_next_responses(delay),
    )
    with anyio.fail_after(60):
        report = await storm.run(iterations(1000))
    print(report.as_dict())
    assert report.outcomes["cancelled"] > 100
    assert not report.typed_errors, report.typed_errors
    before.assert_no_growth(Resources.now())


# -- USBTMC through the in-process port ------------------------------------------------------

USB_OPTIONS: dict[str, Any] = {
    "max_transfer_size": 16 * 1024,
    "recovery_timeout": 0.15,
    "poll_interval": 0.001,
    "clear_on_open": True,  # as aiotmc.open() does: a reopened session starts in step
}


def _fake_usb_opener(function: UsbtmcFunction) -> Opener:
    async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
        port = FakeUsbPort(function)
        transport = await stack.enter_async_context(
            open_usbtmc_transport(port, resource=RESOURCE, **USB_OPTIONS)
        )
        inst = aiotmc.Instrument(transport, timeout=5)
        inst.port = port  # type: ignore[attr-defined]
        stack.push_async_callback(inst.aclose)
        return inst

    return opener


async def _held(storm: Storm, op: Operation) -> str:
    """Park a USB call at an exact point, cancel the operation there; sometimes park the
    recovery's first control request too, then release it, cancel around it, or let the
    recovery time out (SessionBrokenError, reopen)."""
    rng = storm.rng
    assert storm.inst is not None
    port: FakeUsbPort = storm.inst.port  # type: ignore[attr-defined]
    where = rng.choice(["bulk_out", "bulk_in", "bulk_in", "control"])
    hold = port.hold(
        where,  # type: ignore[arg-type]
        after=rng.randrange(0, 10),
        deliver_on_cancel=rng.choice([0, 0, 512, 4096, 8192]),
    )
    recovery: Hold | None = None
    try:
        async with started(op) as handle:
            await first_of(hold.reached.wait, handle.done.wait)
            if hold.reached.is_set():
                if rng.random() < 0.4:
                    recovery = port.hold("control")
                handle.scope.cancel()
                if recovery is not None:
                    await first_of(recovery.reached.wait, handle.done.wait)
                    if recovery.reached.is_set():
                        choice = rng.choice(["release", "cancel_again", "time_out"])
                        storm.report.styles[f"recovery_{choice}"] += 1
                        if choice == "cancel_again":
                            handle.scope.cancel()  # already cancelled: the shield holds
                            await checkpoint()
                        if choice != "time_out":
                            recovery.release()
            await handle.done.wait()
    finally:
        hold.release()
        for leftover in (hold, recovery):
            if leftover is not None and leftover in port._holds:
                port._holds.remove(leftover)
    if handle.error is not None:
        raise handle.error
    return "cancelled" if handle.cancelled else "completed"


async def test_usbtmc_fake_port_storm(anyio_backend: str) -> None:
    device = conformance_device()
    function = UsbtmcFunction(device)
    rng = random.Random(SEED + 1)
    before = Resources.now()
    storm = Storm(
        rng,
        _fake_usb_opener(function),
        block_sizes=(64, 40_000, 100_000),
        upload_sizes=(1000, 100_000),
        latency=lambda delay: device.delay_next_responses(delay),
        styles={"held": _held, "held2": _held},
    )
    with anyio.fail_after(60):
        report = await storm.run(iterations(1500))
    print(report.as_dict())
    assert report.outcomes["cancelled"] > 300
    assert report.resyncs > 100
    after = Resources.now()
    before.assert_no_growth(after)


# -- USBTMC through real libusb below umockdev ---------------------------------------------


@pytest.mark.umockdev
def test_usbtmc_libusb_storm(umockdev: Any, anyio_backend: str) -> None:
    bed = umockdev([echo_usb_device()])
    count = iterations(500)
    budget = 40 + 0.05 * count  # seconds for the client's storm (longer runs get longer)
    result = run_hardening_client(
        bed,
        "storm",
        backend=anyio_backend,
        args=("--iterations", str(count), "--seed", str(SEED), "--timeout", str(budget)),
        timeout=budget + 30,
    )
    print(result)
    assert result["iterations"] == count
    assert result["resyncs"] > 10
