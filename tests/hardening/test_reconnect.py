"""Reconnecting: explicit (``transport.reconnect()``, ``Instrument.reconnect()``) and the
opt-in automatic policy (:class:`aiotmc.reconnect.Reconnect`), on TCP and USBTMC.

What must hold: an operation in flight when the link drops fails loudly
(ConnectionLostError) and is never replayed; later operations reconnect first, bounded by
the policy; the transport object, its terminator, the instrument's timeout and the
``service_requests()`` subscriptions survive, so subscribers keep receiving.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import aiotmc
from aiotmc import (
    ConnectError,
    ConnectionLostError,
    ConnectTimeout,
    UnsupportedOperation,
)
from aiotmc._usb.port import UsbPort
from aiotmc.reconnect import Reconnect, resolve_policy, retry_connect
from aiotmc.sim.commands import Call, Response
from aiotmc.sim.device import SimDevice
from aiotmc.sim.fake_port import FakeUsbPort
from aiotmc.sim.server import SimServer
from aiotmc.sim.usbtmc_device import UsbtmcFunction
from aiotmc.transports.tcp import SocketTransport
from aiotmc.transports.usbtmc import UsbtmcTransport, open_usbtmc_transport

from .conftest import echo_usb_device, run_hardening_client
from .support import RESOURCE, echo_device

SRQ_ARM = "*CLS;*ESE 1;*SRE 32;*OPC"  # OPC -> ESB -> RQS: one service request now
FAST = Reconnect(attempts=4, backoff=0.01, max_backoff=0.05)


def counting_device() -> SimDevice:
    """The echo device plus ``INCR?`` (count and answer) and ``COUNt?``: a replayed
    ``INCR?`` would show in the count."""
    device = echo_device()
    count = [0]

    def incr(call: Call) -> Response:
        count[0] += 1
        return count[0]

    device.add_command("INCR?", incr)
    device.add_command("COUNt?", lambda call: count[0])
    return device


async def echo(inst: aiotmc.Instrument, tag: int) -> None:
    with anyio.fail_after(10):
        assert await inst.query(f"ECHO? {tag}", timeout=5) == str(tag)


# -- the policy -------------------------------------------------------------------------------


def test_policy_validation_and_delays() -> None:
    policy = Reconnect(attempts=5, backoff=0.1, max_backoff=0.3)
    assert list(policy.delays()) == [0.0, 0.1, 0.2, 0.3, 0.3]
    assert math.isclose(policy.worst_case, 0.9)
    assert resolve_policy(True) == Reconnect()
    assert resolve_policy(None) is None and resolve_policy(False) is None
    for bad in (dict(attempts=0), dict(backoff=-1), dict(multiplier=0.5)):
        with pytest.raises(ValueError):
            Reconnect(**bad)
    with pytest.raises(TypeError):
        resolve_policy(3)  # type: ignore[arg-type]


async def test_retry_connect_is_bounded(anyio_backend: str) -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectError("refused")

    started = time.monotonic()
    with pytest.raises(ConnectError, match="after 4 attempt") as info:
        await retry_connect(FAST, failing, resource="X")
    assert calls == 4 and isinstance(info.value.__cause__, ConnectError)
    assert time.monotonic() - started < FAST.worst_case + 0.5

    calls = 0
    with pytest.raises(ConnectTimeout):
        await retry_connect(
            Reconnect(attempts=100, backoff=0.05, multiplier=1),
            failing,
            resource="X",
            deadline=anyio.current_time() + 0.2,
        )
    assert 2 <= calls < 10

    async def bug() -> None:
        raise KeyError("not a link failure")

    with pytest.raises(KeyError):  # bugs are not retried
        await retry_connect(FAST, bug, resource="X")


# -- raw socket ------------------------------------------------------------------------------


@asynccontextmanager
async def tcp(device: SimDevice, **options: Any) -> AsyncIterator[tuple[SimServer, Any]]:
    async with (
        SimServer(device) as server,
        aiotmc.open(server.resource, timeout=2, connect_timeout=1, **options) as inst,
    ):
        yield server, inst


async def test_tcp_in_flight_operation_fails_loudly_and_is_not_replayed(
    anyio_backend: str,
) -> None:
    device = counting_device()
    async with tcp(device) as (server, inst):
        transport = inst.transport
        assert isinstance(transport, SocketTransport)
        device.delay_next_responses(30)
        async with anyio.create_task_group() as tg:

            async def drop() -> None:
                await anyio.wait_all_tasks_blocked()
                server.disconnect_all()

            tg.start_soon(drop)
            with pytest.raises(ConnectionLostError):
                await inst.query("INCR?")
        # The next operation runs on a new connection; INCR? ran once, not twice.
        assert await inst.query("COUNt?") == "1"
        assert transport.reconnects == 1
        assert inst.timeout == 2  # the instrument's settings are untouched


async def test_tcp_explicit_reconnect(anyio_backend: str) -> None:
    device = counting_device()
    async with tcp(device) as (server, inst):
        transport = inst.transport
        assert isinstance(transport, SocketTransport)
        await echo(inst, 1)
        await transport.reconnect()
        with anyio.fail_after(5):
            await server.wait_connections(1)
        assert transport.reconnects == 1
        await echo(inst, 2)


async def test_tcp_policy_gives_up_in_bounded_time_then_recovers(anyio_backend: str) -> None:
    device = counting_device()
    server = SimServer(device)
    await server.__aenter__()
    port = server.port
    try:
        transport = await SocketTransport.connect(
            "127.0.0.1", port, connect_timeout=1, reconnect=FAST
        )
        inst = aiotmc.Instrument(transport, timeout=2)
        async with inst:
            await echo(inst, 1)
            await server.__aexit__(None, None, None)  # the instrument is gone
            with pytest.raises(ConnectionLostError):
                await inst.query("ECHO? 2")  # in flight: fails loudly
            started = time.monotonic()
            with pytest.raises(ConnectError, match="after 4 attempt"):
                await inst.query("ECHO? 3")  # reconnects first: 4 tries, then gives up
            assert time.monotonic() - started < FAST.worst_case + 1.0
            async with SimServer(device, port=port):  # back on the same port
                await echo(inst, 4)  # a new round of tries reaches it
            assert transport.reconnects == 1
    finally:
        await server.__aexit__(None, None, None)


async def test_tcp_policy_waits_for_a_server_that_comes_back(anyio_backend: str) -> None:
    device = counting_device()
    server = SimServer(device)
    await server.__aenter__()
    port = server.port
    policy = Reconnect(attempts=8, backoff=0.05, max_backoff=0.5)
    try:
        transport = await SocketTransport.connect(
            "127.0.0.1", port, connect_timeout=1, reconnect=policy
        )
        async with aiotmc.Instrument(transport, timeout=10) as inst:
            await echo(inst, 1)
            await server.__aexit__(None, None, None)
            with pytest.raises(ConnectionLostError):
                await inst.query("ECHO? 2")
            async with anyio.create_task_group() as tg:

                async def restart() -> None:
                    await anyio.sleep(0.1)  # the outage: shorter than the policy's patience
                    await tg.start(_serve, device, port)

                tg.start_soon(restart)
                await echo(inst, 3)  # waits through the outage, then goes on
                tg.cancel_scope.cancel()
    finally:
        await server.__aexit__(None, None, None)


async def _serve(device: SimDevice, port: int, *, task_status: Any) -> None:
    async with SimServer(device, port=port):
        task_status.started()
        await anyio.sleep_forever()


async def test_tcp_polled_srq_subscribers_keep_receiving_across_a_reconnect(
    anyio_backend: str,
) -> None:
    device = counting_device()
    async with tcp(device, srq_poll_interval=0.01) as (server, inst):
        async with inst.service_requests() as events:
            await inst.write(SRQ_ARM)
            with anyio.fail_after(5):
                first = await events.receive()
            server.disconnect_all()  # the link drops; polls fail, then reconnect
            try:
                await inst.write("*CLS")
            except ConnectionLostError:  # this write found the dead link: it fails loudly
                await inst.write("*CLS")
            assert inst.srq_poller is not None
            inst.srq_poller.rearm()
            await inst.write(SRQ_ARM)
            with anyio.fail_after(5):
                second = await events.receive()
        assert first.status & 0x40 and second.status & 0x40
        transport = inst.transport
        assert isinstance(transport, SocketTransport) and transport.reconnects >= 1


# -- USBTMC through the in-process port -------------------------------------------------------


def fake_reopen(function: UsbtmcFunction) -> Any:
    @asynccontextmanager
    async def reopen() -> AsyncIterator[UsbPort]:
        port = FakeUsbPort(function)
        try:
            yield port
        finally:
            await port.aclose()

    return reopen


@asynccontextmanager
async def usb(
    function: UsbtmcFunction, *, reconnect: Reconnect | None = None, reopen: bool = True
) -> AsyncIterator[aiotmc.Instrument]:
    opener: Any = fake_reopen(function) if reopen else None
    async with (
        open_usbtmc_transport(
            FakeUsbPort(function),
            resource=RESOURCE,
            reopen=opener,
            reconnect=reconnect,
            recovery_timeout=1.0,
            poll_interval=0.005,
        ) as transport,
        aiotmc.Instrument(transport, timeout=2) as inst,
    ):
        yield inst


async def test_usbtmc_explicit_reconnect_keeps_srq_subscribers(anyio_backend: str) -> None:
    device = counting_device()
    function = UsbtmcFunction(device)
    async with usb(function) as inst:
        transport = inst.transport
        assert isinstance(transport, UsbtmcTransport)
        async with inst.service_requests() as events:
            await inst.write(SRQ_ARM)
            with anyio.fail_after(5):
                await events.receive()
            with anyio.fail_after(5):
                await transport.reconnect()
            assert transport.reconnects == 1
            await inst.write("*CLS")  # the request falls (one message later it rises again)
            await inst.write(SRQ_ARM)
            with anyio.fail_after(5):
                await events.receive()  # the same subscription hears the new link
        await echo(inst, 1)


async def test_usbtmc_without_reopen_factory_cannot_reconnect(anyio_backend: str) -> None:
    function = UsbtmcFunction(counting_device())
    async with usb(function, reopen=False) as inst:
        transport = inst.transport
        assert isinstance(transport, UsbtmcTransport)
        with pytest.raises(UnsupportedOperation):
            await transport.reconnect()


async def test_usbtmc_unplug_replug_reconnects_in_the_background(anyio_backend: str) -> None:
    """Unplugged mid-read: that read fails loudly (and is not replayed); after the replug
    the policy's background reconnect restores the link without any operation, and the
    existing SRQ subscription hears the device again."""
    device = counting_device()
    function = UsbtmcFunction(device)
    policy = Reconnect(attempts=50, backoff=0.02, max_backoff=0.05)
    async with usb(function, reconnect=policy) as inst:
        transport = inst.transport
        assert isinstance(transport, UsbtmcTransport)
        async with inst.service_requests() as events:
            function.response_delay = 30
            async with anyio.create_task_group() as tg:

                async def unplug() -> None:
                    await anyio.wait_all_tasks_blocked()
                    function.disconnect()

                tg.start_soon(unplug)
                with pytest.raises(ConnectionLostError):
                    await inst.query("INCR?")
            function.response_delay = 0
            function.replug()
            function.inject_srq(0x41)  # queued until a reader is back on interrupt-IN
            with anyio.fail_after(5):
                event = await events.receive()  # only the background reconnect can do it
            assert event.status == 0x41
            assert transport.reconnects == 1
        assert await inst.query("COUNt?") == "1"  # INCR? ran once: not replayed
        await echo(inst, 5)


async def test_usbtmc_policy_bounds_a_device_that_stays_away(anyio_backend: str) -> None:
    function = UsbtmcFunction(counting_device())
    async with usb(function, reconnect=FAST) as inst:
        function.disconnect()
        with pytest.raises(ConnectionLostError):
            await inst.query("ECHO? 1")
        started = time.monotonic()
        with pytest.raises(ConnectError):
            await inst.query("ECHO? 2")
        assert time.monotonic() - started < FAST.worst_case + 1.0
        function.replug()
        await echo(inst, 3)


# -- USBTMC through real libusb ----------------------------------------------------------------


@pytest.mark.umockdev
def test_usbtmc_libusb_reconnect(umockdev: Any, anyio_backend: str) -> None:
    """reconnect() reopens the device by name through libusb (a new libusb context);
    after an unplug it fails with a typed error within the policy's bound."""
    bed = umockdev([echo_usb_device()])
    result = run_hardening_client(bed, "reconnect", backend=anyio_backend, timeout=60)
    print(result)
    assert result["reconnects"] == 1


@pytest.mark.umockdev
def test_open_with_reconnect_through_libusb(umockdev: Any, anyio_backend: str) -> None:
    bed = umockdev([echo_usb_device()])
    run_hardening_client(bed, "open_reconnect", backend=anyio_backend, timeout=60)


# -- the Instrument API -----------------------------------------------------------------------


async def test_instrument_reconnect_on_every_transport(anyio_backend: str) -> None:
    device = counting_device()
    async with SimServer(device) as server, aiotmc.open(server.resource, timeout=2) as inst:
        await echo(inst, 1)
        await inst.reconnect()
        transport = inst.transport
        assert isinstance(transport, SocketTransport) and transport.reconnects == 1
        assert inst.read_termination == "\n" and inst.timeout == 2
        await echo(inst, 2)
    async with aiotmc.open("SIM::reconnect::one", device=device) as inst:
        await inst.reconnect()  # nothing to replace, nothing breaks
        await echo(inst, 3)
    function = UsbtmcFunction(device)
    async with usb(function) as inst:
        await inst.reconnect()
        transport = inst.transport
        assert isinstance(transport, UsbtmcTransport) and transport.reconnects == 1
        await echo(inst, 4)
    async with usb(function, reopen=False) as inst:
        with pytest.raises(UnsupportedOperation):
            await inst.reconnect()
        await echo(inst, 5)  # still fine


async def test_instrument_reconnect_waits_for_the_exchange_in_progress(
    anyio_backend: str,
) -> None:
    device = counting_device()
    async with SimServer(device) as server, aiotmc.open(server.resource, timeout=5) as inst:
        device.delay_next_responses(0.05)
        async with anyio.create_task_group() as tg:
            answers: list[str] = []

            async def query() -> None:
                answers.append(await inst.query("INCR?"))

            tg.start_soon(query)
            await anyio.wait_all_tasks_blocked()
            await inst.reconnect()  # behind the lock: the query completes first
        assert answers == ["1"]
        assert await inst.query("COUNt?") == "1"


async def test_open_with_reconnect_policy(anyio_backend: str) -> None:
    device = counting_device()
    server = SimServer(device)
    await server.__aenter__()
    port = server.port
    try:
        async with aiotmc.open(
            server.resource, timeout=2, connect_timeout=1, reconnect=FAST
        ) as inst:
            await echo(inst, 1)
            await server.__aexit__(None, None, None)
            with pytest.raises(ConnectionLostError):
                await inst.query("INCR?")  # in flight when the link dropped: fails loudly
            with pytest.raises(ConnectError):
                await inst.query("ECHO? 2")  # four tries, then a typed error
            async with SimServer(device, port=port):
                await echo(inst, 3)  # the next operation reconnects by itself
                assert await inst.query("COUNt?") == "0"  # INCR? never ran: not replayed
    finally:
        await server.__aexit__(None, None, None)
    async with aiotmc.open("SIM::reconnect::two", device=device, reconnect=True) as inst:
        await echo(inst, 4)
    with pytest.raises(TypeError):
        async with aiotmc.open("SIM::reconnect::three", reconnect=3):  # type: ignore[arg-type]
            pass
