"""The pollfd driver against a fake context whose pollfds are socketpair ends."""

from __future__ import annotations

import select
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import anyio
import pytest

from aiotmc._usb.driver import open_event_driver, select_driver
from aiotmc._usb.driver_pollfd import PollfdEventDriver
from aiotmc._usb.errors import TransferStatus
from aiotmc._usb.transfer import AsyncTransfer

from .fakes import FakeTransfer, SocketEventContext

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT


@pytest.fixture
def context() -> Iterator[SocketEventContext]:
    ctx = SocketEventContext()
    yield ctx
    ctx.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state the driver changes
            await anyio.sleep(0.001)


@pytest.mark.parametrize("events", [POLLIN, POLLOUT], ids=["POLLIN", "POLLOUT"])
async def test_ready_fd_handles_events_inline(context: SocketEventContext, events: int) -> None:
    fd = context.new_device(events, notify=False)
    fake = FakeTransfer()
    loop_thread = threading.get_ident()
    async with PollfdEventDriver(context) as driver:
        assert driver.watched_fds == {fd: events}
        transfer = AsyncTransfer(fake, driver, name="bulk")
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                completion = await transfer.run()
                assert completion.data == b"ok"

            tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            idle = context.handled
            context.complete_on_event(lambda: fake.complete(TransferStatus.COMPLETED, b"ok"))
            context.make_ready(fd)
        # Completion callbacks ran on the loop thread, inside handle_events_timeout(0).
        assert context.handled_threads == {loop_thread}
        assert context.handled > idle
        # Level-triggered readiness went away once "libusb" reaped: no spinning.
        handled = context.handled
        await anyio.sleep(0.05)
        assert context.handled == handled


async def test_notifier_adds_and_removes_fds(context: SocketEventContext) -> None:
    async with PollfdEventDriver(context) as driver:
        assert context.added is not None
        fd = context.new_device(POLLOUT)  # notifier called on the loop thread
        assert fd in driver.watched_fds
        done = anyio.Event()
        context.complete_on_event(lambda: driver.reentry(done.set))
        context.make_ready(fd)
        with anyio.fail_after(5):
            await done.wait()
        await anyio.wait_all_tasks_blocked()
        context.remove_device(fd)  # removed notifier, then close: watcher must let go
        assert fd not in driver.watched_fds
        await anyio.sleep(0.02)
        # A new fd (possibly the same number) is watched again.
        fd2 = context.new_device(POLLIN)
        assert fd2 in driver.watched_fds
        done2 = anyio.Event()
        context.complete_on_event(lambda: driver.reentry(done2.set))
        context.make_ready(fd2)
        with anyio.fail_after(5):
            await done2.wait()
    assert context.added is None and context.removed is None


async def test_fd_added_from_a_worker_thread(context: SocketEventContext) -> None:
    """libusb_open in a worker thread calls the added notifier off the loop thread."""
    async with PollfdEventDriver(context) as driver:
        fd = await anyio.to_thread.run_sync(context.new_device, POLLOUT)
        await wait_until(lambda: fd in driver.watched_fds)
        done = anyio.Event()
        context.complete_on_event(lambda: driver.reentry(done.set))
        context.make_ready(fd)
        with anyio.fail_after(5):
            await done.wait()


async def test_reentry_from_a_foreign_thread_is_threadsafe(context: SocketEventContext) -> None:
    async with PollfdEventDriver(context) as driver:
        seen: list[int] = []
        done = anyio.Event()

        def on_loop() -> None:
            seen.append(threading.get_ident())
            done.set()

        await anyio.to_thread.run_sync(driver.reentry, on_loop)
        with anyio.fail_after(5):
            await done.wait()
        assert seen == [threading.get_ident()]


async def test_timer_follows_next_timeout_and_poke(context: SocketEventContext) -> None:
    async with PollfdEventDriver(context) as driver:
        await anyio.sleep(0.02)
        assert context.handled == 0  # no timeout, no fds: idle
        context.next_timeout = 0.02
        driver.poke()  # a submit: recompute the timeout
        await wait_until(lambda: context.handled > 0)
        context.next_timeout = None
        driver.poke()
        await anyio.sleep(0.01)
        handled = context.handled
        await anyio.sleep(0.05)
        assert context.handled == handled


async def test_run_source_change_is_inline(context: SocketEventContext) -> None:
    async with PollfdEventDriver(context) as driver:
        assert await driver.run_source_change(threading.get_ident) == threading.get_ident()


async def test_unwaitable_fd_is_polled_with_bounded_rate(
    context: SocketEventContext, caplog: pytest.LogCaptureFixture
) -> None:
    """epoll refuses regular files (umockdev device nodes): poll them on a back-off."""
    with tempfile.TemporaryFile() as regular:
        async with PollfdEventDriver(context, poll_backoff_max=0.004) as driver:
            assert context.added is not None
            context.added(regular.fileno(), POLLOUT)
            await wait_until(lambda: regular.fileno() in driver.polled_fds)
            start, started = context.handled, time.monotonic()
            await anyio.sleep(0.3)
            rate = (context.handled - start) / (time.monotonic() - started)
            assert rate < 1000, rate  # ~250/s at a 4 ms cap, not a busy loop
            # A completion still gets through promptly.
            done = anyio.Event()
            context.complete_on_event(lambda: driver.reentry(done.set))
            with anyio.fail_after(1):
                await done.wait()
            assert context.removed is not None
            context.removed(regular.fileno())
    assert "polling it instead" in caplog.text


async def test_select_driver_pollfd(
    context: SocketEventContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UMOCKDEV_DIR", raising=False)
    monkeypatch.delenv("AIOTMC_USB_DRIVER", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "")
    assert select_driver("pollfd", context) == "pollfd"
    assert select_driver("auto", context) == "thread"  # pollfd is opt-in for now
    monkeypatch.setenv("AIOTMC_USB_DRIVER", "pollfd")
    assert select_driver("auto", context) == "pollfd"
    monkeypatch.setenv("AIOTMC_USB_DRIVER", "thread")
    assert select_driver("auto", context) == "thread"
    monkeypatch.delenv("AIOTMC_USB_DRIVER")
    monkeypatch.setenv("UMOCKDEV_DIR", "/tmp/x")
    assert select_driver("auto", context) == "thread"
    monkeypatch.delenv("UMOCKDEV_DIR")
    async with open_event_driver(context, "pollfd") as driver:
        assert driver.name == "pollfd"


async def test_close_while_cancelled(context: SocketEventContext) -> None:
    context.new_device(POLLOUT, notify=False)
    with anyio.CancelScope() as scope:
        async with PollfdEventDriver(context):
            scope.cancel()
            await anyio.sleep(1)
    assert context.added is None
