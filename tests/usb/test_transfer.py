"""AsyncTransfer against a fake libusb transfer: completion, cancellation, races, leaks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import pytest

from aiotmc import ConnectionLostError, PermissionDeniedError, SessionBrokenError
from aiotmc._usb.errors import LibusbError, TransferStatus
from aiotmc._usb.reentry import LoopAffineReentry, Reentry, capture_reentry
from aiotmc._usb.transfer import ZOMBIES, AsyncTransfer

from .fakes import FakeTransfer, FakeUSBError


class Driver:
    """The transfer's view of an event driver, with a real thread-safe re-entry."""

    def __init__(self, reentry: Reentry) -> None:
        self._reentry = reentry
        self.pokes = 0

    def reentry(self, fn: Callable[[], object]) -> None:
        self._reentry(fn)

    def poke(self) -> None:
        self.pokes += 1


def make(fake: FakeTransfer, *, grace: float = 1.0) -> tuple[AsyncTransfer, Driver]:
    driver = Driver(capture_reentry())
    return AsyncTransfer(fake, driver, name="test", endpoint=0x82, cancel_grace=grace), driver


async def test_completion_from_another_thread() -> None:
    fake = FakeTransfer()
    transfer, driver = make(fake)
    fake.complete_later(TransferStatus.COMPLETED, b"hello")
    completion = await transfer.run()
    assert completion.ok
    assert completion.data == b"hello"
    assert completion.actual_length == 5
    assert fake.submitted == 1
    assert driver.pokes == 1
    assert not transfer.in_flight


async def test_reusable() -> None:
    fake = FakeTransfer()
    transfer, _ = make(fake)
    for i in range(5):
        fake.complete_later(TransferStatus.COMPLETED, bytes([i]))
        assert (await transfer.run()).data == bytes([i])
    assert fake.submitted == 5


async def test_inline_completion_on_loop_thread() -> None:
    """pollfd driver style: the callback fires on the loop thread inside event handling."""
    fake = FakeTransfer()
    driver = Driver(LoopAffineReentry(capture_reentry()))
    transfer = AsyncTransfer(fake, driver, name="inline")
    async with anyio.create_task_group() as tg:

        async def completer() -> None:
            await anyio.sleep(0.01)
            fake.complete(TransferStatus.COMPLETED, b"x")

        tg.start_soon(completer)
        assert (await transfer.run()).data == b"x"


async def test_error_status_is_returned_not_raised() -> None:
    fake = FakeTransfer()
    transfer, _ = make(fake)
    fake.complete_later(TransferStatus.STALL)
    completion = await transfer.run()
    assert completion.status == TransferStatus.STALL
    assert not completion.ok


@pytest.mark.parametrize(
    ("code", "error"),
    [(LibusbError.NO_DEVICE, ConnectionLostError), (LibusbError.ACCESS, PermissionDeniedError)],
)
async def test_submit_error_is_mapped(code: int, error: type[Exception]) -> None:
    fake = FakeTransfer()
    fake.submit_error = FakeUSBError(code)
    transfer, driver = make(fake)
    with pytest.raises(error):
        await transfer.run()
    assert not transfer.in_flight
    assert driver.pokes == 0


async def test_submit_non_usb_error_passes() -> None:
    fake = FakeTransfer()
    fake.submit_error = ValueError("bad buffer")
    transfer, _ = make(fake)
    with pytest.raises(ValueError, match="bad buffer"):
        await transfer.run()


async def test_concurrent_use_is_busy() -> None:
    fake = FakeTransfer()
    transfer, _ = make(fake)
    async with anyio.create_task_group() as tg:
        tg.start_soon(transfer.run)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await transfer.run()
        fake.complete_later(TransferStatus.COMPLETED)


async def test_cancel_and_drain() -> None:
    fake = FakeTransfer(cancel_behaviour="complete")
    transfer, _ = make(fake)
    with anyio.move_on_after(0.05) as scope:
        await transfer.run()
    assert scope.cancelled_caught
    assert fake.cancelled == 1
    assert not transfer.in_flight
    assert transfer.last_cancelled is not None
    assert transfer.last_cancelled.status == TransferStatus.CANCELLED
    assert transfer.cancel_requested
    fake.complete_later(TransferStatus.COMPLETED, b"again")
    assert (await transfer.run()).data == b"again"


async def test_cancel_races_completion_not_found() -> None:
    """cancel() raises NOT_FOUND because the completion is under way: wait for it."""
    fake = FakeTransfer(cancel_behaviour="not_found")
    transfer, _ = make(fake)
    with anyio.move_on_after(0.05):
        await transfer.run()
    assert fake.cancelled == 1
    assert not transfer.in_flight
    assert transfer.last_cancelled is not None
    assert transfer.last_cancelled.status == TransferStatus.COMPLETED


async def test_cancel_before_submit_does_not_submit() -> None:
    fake = FakeTransfer()
    transfer, _ = make(fake)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await transfer.run()
    assert fake.submitted == 0


async def test_uncancellable_transfer_is_leaked(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTransfer(cancel_behaviour="never")
    transfer, _ = make(fake, grace=0.05)
    with caplog.at_level(logging.ERROR), anyio.move_on_after(0.02):
        await transfer.run()
    try:
        assert transfer.zombie
        assert transfer in ZOMBIES
        assert transfer.in_flight
        assert "leaking" in caplog.text
        with pytest.raises(SessionBrokenError):
            await transfer.run()
        # libusb finally gives it back: the zombie is released and usable again.
        fake.complete_later(TransferStatus.CANCELLED).join()
        await anyio.sleep(0.05)
        assert not transfer.zombie
        assert transfer not in ZOMBIES
        fake.complete_later(TransferStatus.COMPLETED, b"ok")
        assert (await transfer.run()).data == b"ok"
    finally:
        ZOMBIES.discard(transfer)


async def test_snapshot_error_is_delivered() -> None:
    fake = FakeTransfer()
    fake.snapshot_error = RuntimeError("ctypes went wrong")
    transfer, _ = make(fake)
    fake.complete_later()
    completion = await transfer.run()
    assert isinstance(completion.error, RuntimeError)
    assert completion.status == TransferStatus.ERROR


async def test_abort_from_another_task() -> None:
    fake = FakeTransfer(cancel_behaviour="complete")
    transfer, _ = make(fake)
    results = []
    async with anyio.create_task_group() as tg:

        async def runner() -> None:
            results.append(await transfer.run())

        tg.start_soon(runner)
        await anyio.wait_all_tasks_blocked()
        await transfer.abort()
    assert results[0].status == TransferStatus.CANCELLED
    assert transfer.cancel_requested


async def test_abort_when_idle_is_a_no_op() -> None:
    fake = FakeTransfer()
    transfer, _ = make(fake)
    await transfer.abort()
    assert fake.cancelled == 0


async def test_stale_completion_is_dropped() -> None:
    """A completion captured for an older generation must not complete a newer run."""
    fake = FakeTransfer(cancel_behaviour="never")
    transfer, _ = make(fake, grace=0.02)
    with anyio.move_on_after(0.01):
        await transfer.run()
    assert transfer.zombie
    try:
        stale = transfer._generation - 1
        transfer._deliver(stale, fake.result)
        assert transfer.zombie
    finally:
        ZOMBIES.discard(transfer)
