"""The thread driver against fake contexts: re-entry, shutdown, bounded idle spin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest

from aiotmc._usb.driver import open_event_driver, select_driver
from aiotmc._usb.driver_thread import ThreadEventDriver
from aiotmc._usb.errors import TransferStatus
from aiotmc._usb.reentry import capture_reentry
from aiotmc._usb.transfer import AsyncTransfer

from .fakes import FakeTransfer, QueueEventContext, SpinningEventContext


async def test_reentry_runs_on_the_loop_thread() -> None:
    context = QueueEventContext()
    loop_thread = threading.get_ident()
    seen: list[int] = []
    done = anyio.Event()

    def on_loop() -> None:
        seen.append(threading.get_ident())
        done.set()

    async with ThreadEventDriver(context) as driver:
        context.post(lambda: driver.reentry(on_loop))
        with anyio.fail_after(5):
            await done.wait()
    assert seen == [loop_thread]
    assert loop_thread not in context.threads
    assert len(context.threads) == 1


async def test_transfer_completes_through_the_event_thread() -> None:
    context = QueueEventContext()
    fake = FakeTransfer()
    async with ThreadEventDriver(context) as driver:
        transfer = AsyncTransfer(fake, driver, name="bulk")
        async with anyio.create_task_group() as tg:
            tg.start_soon(transfer.run)
            await anyio.wait_all_tasks_blocked()
            context.post(lambda: fake.complete(TransferStatus.COMPLETED, b"data"))
    assert fake.submitted == 1
    assert not transfer.in_flight


async def test_shutdown_interrupts_and_joins() -> None:
    context = QueueEventContext()
    driver = ThreadEventDriver(context, period=30.0)
    async with driver:
        await anyio.sleep(0.01)
        thread = driver._thread
        assert thread is not None and thread.is_alive()
    started = time.monotonic()
    assert not thread.is_alive()
    assert time.monotonic() - started < 1
    calls = context.calls
    context.closed = True  # handle_events after this would fail the fake's assertion
    await anyio.sleep(0.05)
    assert context.calls == calls
    await driver.aclose()  # idempotent


async def test_shutdown_when_cancelled() -> None:
    context = QueueEventContext()
    driver = ThreadEventDriver(context, period=30.0)
    with anyio.CancelScope() as scope:
        async with driver:
            scope.cancel()
            await anyio.sleep(1)
    assert driver._thread is None


async def test_idle_spin_is_bounded() -> None:
    """handle_events returning at once (umockdev) must not busy-loop a core."""
    context = SpinningEventContext()
    async with ThreadEventDriver(context, spin_backoff_max=0.004) as driver:
        await anyio.sleep(0.5)
        calls = context.calls
    # Unbounded this is hundreds of thousands of calls; bounded ~0.5 s / 4 ms + ramp-up.
    assert calls < 400, calls
    assert driver.backoffs > 0


async def test_poke_cuts_the_backoff_short() -> None:
    context = SpinningEventContext()
    async with ThreadEventDriver(context, spin_backoff=0.5, spin_backoff_max=0.5) as driver:
        await anyio.sleep(0.1)  # now waiting in a 0.5 s back-off
        done = anyio.Event()
        context.post(lambda: driver.reentry(done.set))
        started = time.monotonic()
        driver.poke()
        with anyio.fail_after(5):
            await done.wait()
        assert time.monotonic() - started < 0.25


async def test_event_handling_errors_do_not_kill_the_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = QueueEventContext()
    context.fail_next = RuntimeError("boom")
    done = anyio.Event()
    async with ThreadEventDriver(context, period=0.01) as driver:
        await anyio.sleep(0.1)
        context.post(lambda: driver.reentry(done.set))
        with anyio.fail_after(5):
            await done.wait()
    assert "libusb event handling failed" in caplog.text


async def test_run_source_change_runs_in_a_worker_thread() -> None:
    context = QueueEventContext()
    async with ThreadEventDriver(context) as driver:
        thread = await driver.run_source_change(threading.get_ident)
    assert thread != threading.get_ident()


def test_reentry_after_the_loop_finished(anyio_backend: str) -> None:
    """Completions arriving after the run ended are dropped, not raised."""
    captured: list[Callable[[Callable[[], object]], None]] = []

    async def main() -> None:
        captured.append(capture_reentry())

    anyio.run(main, backend=anyio_backend)
    captured[0](lambda: None)  # must not raise


async def test_select_driver_thread_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    context = QueueEventContext()  # no pollfds
    monkeypatch.delenv("AIOTMC_USB_DRIVER", raising=False)
    assert select_driver("auto", context) == "thread"
    assert select_driver("thread", context) == "thread"
    with pytest.raises(ValueError, match="pollfd"):
        select_driver("pollfd", context)
    with pytest.raises(ValueError, match="driver must be"):
        select_driver("fibers", context)
    async with open_event_driver(context, "auto") as driver:
        assert driver.name == "thread"
