"""Close matrix: every transport x every way of closing x both backends (issue 14).

Transports: ``SIM::`` (in-process), TCP (SimServer on 127.0.0.1), TCP with
``srq_poll_interval``, the USB fake (real UsbtmcTransport over the in-process port). Real
libusb under umockdev runs the same cells in ``tests/usb/test_lifecycle_umockdev.py``.
Modes: see ``tests/lifecycle_cases.py``. Each cell asserts no escaped cancellation, no
RuntimeError, the instrument closed and no background task left.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import pytest
from anyio.lowlevel import checkpoint

import aiotmc
from aiotmc import _background
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device
from aiotmc.sim.fake_port import FakeUsbPort
from aiotmc.sim.server import SimServer
from aiotmc.sim.usbtmc_device import UsbtmcFunction
from aiotmc.transports.usbtmc import open_usbtmc_transport

from .lifecycle_cases import MODES, Tally, in_new_task, run_cell

TRANSPORTS = ["sim", "tcp", "tcp_srq_poll", "usb_fake"]


@asynccontextmanager
async def _usb_fake(device: SimDevice) -> AsyncIterator[aiotmc.Instrument]:
    port = FakeUsbPort(UsbtmcFunction(device))
    async with (
        open_usbtmc_transport(port, resource="USB0::0x0957::0x1796::MY123::INSTR") as transport,
        aiotmc.Instrument(transport, timeout=10) as inst,
    ):
        yield inst


@asynccontextmanager
async def _opener(
    via: str, device: SimDevice
) -> AsyncIterator[Callable[[], AbstractAsyncContextManager[aiotmc.Instrument]]]:
    """Yield a factory of not-yet-entered context managers for ``device`` via ``via``."""
    if via == "sim":
        yield lambda: aiotmc.open("SIM::dmm::lifecycle", device=device)
    elif via.startswith("tcp"):
        options = {"srq_poll_interval": 0.01} if via == "tcp_srq_poll" else {}
        async with SimServer(device) as server:
            yield lambda: aiotmc.open(server.resource, **options)  # type: ignore[arg-type]
    else:
        yield lambda: _usb_fake(device)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", TRANSPORTS)
async def test_close_matrix(via: str, mode: str) -> None:
    device = create_device("dmm")
    tally = Tally()

    async def stall(inst: aiotmc.Instrument) -> None:
        device.latency = math.inf

    with anyio.fail_after(30):
        async with _opener(via, device) as opener:
            await run_cell(mode, opener, tally, stall=stall)
    print(f"{via} {mode}: {tally.as_dict()}")
    assert tally.escaped_cancellations == 0
    assert tally.runtime_errors == 0
    assert tally.cells == 1


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_close_twice_from_two_tasks(via: str) -> None:
    """Closing concurrently from two tasks: both return, the link closes once."""
    device = create_device("dmm")
    async with _opener(via, device) as opener:
        cm = opener()
        inst = await in_new_task(cm.__aenter__)
        async with anyio.create_task_group() as tg:
            tg.start_soon(inst.aclose)
            tg.start_soon(cm.__aexit__, None, None, None)
        assert inst.closed


@pytest.mark.parametrize("via", ["sim", "tcp_srq_poll", "usb_fake"])
async def test_close_from_another_task_ends_srq_subscriptions(via: str) -> None:
    """A task iterating ``service_requests()`` ends cleanly when another task closes."""
    device = create_device("dmm")
    async with _opener(via, device) as opener:
        cm = opener()
        inst = await in_new_task(cm.__aenter__)
        received: list[object] = []
        ended = anyio.Event()

        async def subscriber() -> None:
            async with inst.service_requests() as events:
                subscribed.set()
                async for event in events:
                    received.append(event)
            ended.set()

        subscribed = anyio.Event()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(subscriber)
                await subscribed.wait()
                await in_new_task(lambda: cm.__aexit__(None, None, None))
                await ended.wait()
        assert inst.closed and received == []


async def test_background_task_failure_is_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    """A failing background body neither crashes the loop nor raises into anyone."""
    seen: list[Exception] = []

    async def boom() -> None:
        await checkpoint()
        raise KeyError("boom")

    task = _background.spawn(boom, name="boom", on_error=seen.append)
    with anyio.fail_after(5):
        await task.wait()
    assert isinstance(task.error, KeyError)
    assert seen == [task.error]
    assert "background task boom failed" in caplog.text


async def test_background_task_cancel_from_another_task() -> None:
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    task = _background.spawn(forever, name="forever")
    await started.wait()
    assert not task.done
    assert await in_new_task(lambda: task.stop(timeout=5))
    assert task.done and task.error is None


async def test_background_task_stop_inside_cancelled_scope() -> None:
    task = _background.spawn(anyio.sleep_forever, name="forever")
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert await task.stop(timeout=5)  # shielded: completes although cancelled
    assert task.done


async def test_background_task_cancelled_before_it_ran() -> None:
    ran: list[bool] = []

    async def body() -> None:
        ran.append(True)

    task = _background.spawn(body, name="never")
    task.cancel()
    with anyio.fail_after(5):
        await task.wait()
    assert task.done and task.error is None
