"""InstrumentGroup / open_many: concurrent open, per-instrument results, limits, closing.

Every test runs over every attachment of tests/conftest.py: the in-process simulator, real
loopback TCP (SimServer) and USBTMC (``aiotmc.open("USB0::...")`` down to the in-process
USB port).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest

import aiotmc
from aiotmc.group import InstrumentGroup, ResourceSpec, join_program
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import serve_many

from .conftest import TRANSPORTS, fake_usb_bus


@pytest.fixture(params=TRANSPORTS)
def via(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def bench(devices: dict[str, SimDevice], via: str) -> AsyncIterator[dict[str, ResourceSpec]]:
    """Resources for ``devices``: in-process (``SIM::`` + ``device=``), SimServers or
    emulated USB devices."""
    if via == "sim":
        yield {name: (f"SIM::{name}::group", {"device": dev}) for name, dev in devices.items()}
    elif via == "usb":
        with fake_usb_bus(devices) as resources:
            yield dict(resources)
    else:
        async with serve_many(list(devices.values())) as servers:
            yield {name: s.resource for name, s in zip(devices, servers, strict=True)}


@contextmanager
def refused_resource() -> Iterator[str]:
    """A loopback port that refuses connections (bound, not listening) while in use."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"TCPIP0::127.0.0.1::{sock.getsockname()[1]}::SOCKET"


def count_writes(device: SimDevice) -> list[bytes]:
    """Record every program message the device receives."""
    seen: list[bytes] = []
    original = device.write

    def write(message: Any) -> None:
        seen.append(bytes(message))
        original(message)

    device.write = write  # type: ignore[method-assign]
    return seen


def test_join_program() -> None:
    assert join_program(["VOLT 1", "CURR 2", "*OPC", ":OUTP ON"]) == "VOLT 1;:CURR 2;*OPC;:OUTP ON"
    assert join_program(["*CLS", "", "MEAS?"]) == "*CLS;:MEAS?"
    assert join_program([]) == ""


async def test_open_many_partial_failure(via: str) -> None:
    devices = {"dmm": create_device("dmm"), "psu": create_device("psu")}
    with refused_resource() as dead:
        async with bench(devices, via) as resources:
            resources = {"dmm": resources["dmm"], "dead": dead, "psu": resources["psu"]}
            with anyio.fail_after(10):
                async with aiotmc.open_many(resources, connect_timeout=5) as group:
                    assert list(group) == ["dmm", "psu"]
                    assert group.names == ["dmm", "dead", "psu"]
                    assert set(group.failed) == {"dead"}
                    assert isinstance(group.failed["dead"], aiotmc.ConnectError)
                    results = await group.query_all("*IDN?")
                    assert list(results) == ["dmm", "psu"] and results.ok
                    assert "SIM-DMM" in results["dmm"].unwrap()
                    # naming a member that failed to open gives its open error as result
                    results = await group.query_all({"dead": "*IDN?", "psu": "*IDN?"})
                    assert not results.ok
                    assert results.failed["dead"] is group.failed["dead"]
                    assert results["psu"].ok
                    members = list(group.values())
                assert group.closed
                assert all(inst.closed for inst in members)


async def test_open_many_strict_raises_exception_group(via: str) -> None:
    devices = {"dmm": create_device("dmm")}
    with refused_resource() as dead:
        async with bench(devices, via) as resources:
            opened: list[aiotmc.Instrument] = []
            original = aiotmc.Instrument.__init__

            def spy(self: aiotmc.Instrument, *args: Any, **kwargs: Any) -> None:
                original(self, *args, **kwargs)
                opened.append(self)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(aiotmc.Instrument, "__init__", spy)
                with pytest.raises(ExceptionGroup) as info, anyio.fail_after(10):
                    async with aiotmc.open_many(
                        {"dmm": resources["dmm"], "dead": dead}, strict=True
                    ):
                        pytest.fail("strict open_many must not enter the block")
            assert info.group_contains(aiotmc.ConnectError)
            assert "1 of 2 instruments failed to open: dead" in str(info.value)
            assert "instrument 'dead'" in info.value.exceptions[0].__notes__
            assert len(opened) == 1 and opened[0].closed  # the good one was closed again


async def test_user_exception_is_not_wrapped(via: str) -> None:
    async with bench({"dmm": create_device("dmm")}, via) as resources:
        with pytest.raises(KeyError, match="mine"):
            async with aiotmc.open_many(resources):
                raise KeyError("mine")


async def test_concurrency_limit_is_honoured(via: str) -> None:
    devices = {f"dmm{i}": create_device("dmm", latency=0.005) for i in range(8)}
    async with bench(devices, via) as resources, aiotmc.open_many(resources, limit=3) as group:
        active = peak = 0

        def counting(inst: aiotmc.Instrument) -> None:
            query = inst.query

            async def wrapped(command: str, **kwargs: Any) -> str:
                nonlocal active, peak
                active += 1
                peak = max(peak, active)
                try:
                    return await query(command, **kwargs)
                finally:
                    active -= 1

            inst.query = wrapped  # type: ignore[method-assign]

        for inst in group.values():
            counting(inst)
        with anyio.fail_after(10):
            results = await group.query_all("MEAS:VOLT?")
        assert results.ok and len(results) == 8
        assert peak == 3
        peak = 0
        with anyio.fail_after(10):
            await group.query_all("MEAS:VOLT?", limit=5)
        assert peak == 5
        peak = 0
        shared = anyio.CapacityLimiter(2)
        with anyio.fail_after(10):
            await group.query_all("MEAS:VOLT?", limit=shared)
        assert peak == 2
        peak = 0
        with anyio.fail_after(10):
            await group.query_all("MEAS:VOLT?", limit=None)
        assert peak == 8


async def test_timeout_on_one_member_spares_the_others(via: str) -> None:
    slow = create_device("dmm")
    slow.latency = float("inf")  # never answers
    devices = {"slow": slow, "a": create_device("dmm"), "b": create_device("psu")}
    async with bench(devices, via) as resources, aiotmc.open_many(resources) as group:
        with anyio.fail_after(10):
            results = await group.query_all("*IDN?", timeout=0.5)
        assert isinstance(results["slow"].error, aiotmc.ReadTimeout)
        assert results["a"].ok and results["b"].ok
        assert results.succeeded.keys() == {"a", "b"}
        assert results["a"].elapsed < results["slow"].elapsed
        with pytest.raises(ExceptionGroup) as info:
            results.unwrap()
        assert info.group_contains(aiotmc.ReadTimeout)
        slow.latency = 0.0
        # the timed-out member recovered: its next exchange gets its own answer
        with anyio.fail_after(10):
            again = await group.query_all({"slow": "*IDN?"}, strict=True)
        assert "SIM-DMM" in again["slow"].unwrap()


async def test_strict_fan_out_raises_exception_group(via: str) -> None:
    slow = create_device("dmm")
    slow.latency = float("inf")
    devices = {"slow": slow, "ok": create_device("dmm")}
    async with bench(devices, via) as resources, aiotmc.open_many(resources) as group:
        with pytest.raises(ExceptionGroup) as info, anyio.fail_after(10):
            await group.query_all("*IDN?", timeout=0.5, strict=True)
        assert info.group_contains(aiotmc.ReadTimeout)
        assert "1 of 2 instruments failed: slow" in str(info.value)


async def test_group_closes_every_member_when_cancelled(via: str) -> None:
    devices = {f"dev{i}": create_device(m) for i, m in enumerate(["dmm", "psu", "scope"])}
    async with bench(devices, via) as resources:
        members: list[aiotmc.Instrument] = []
        with anyio.CancelScope() as scope:
            async with aiotmc.open_many(resources) as group:
                members = list(group.values())
                assert len(members) == 3
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert group.closed
        assert all(inst.closed for inst in members)


async def test_group_closes_from_another_task_and_a_cancelled_scope(via: str) -> None:
    """open_many holds no task group across its block: the notebook pattern works."""
    devices = {f"dev{i}": create_device(m) for i, m in enumerate(["dmm", "psu"])}
    async with bench(devices, via) as resources:
        opening = aiotmc.open_many(resources)
        group = await opening.__aenter__()
        members = list(group.values())
        results: list[str] = []

        async def use() -> None:
            results.extend((await group.query_all("*IDN?")).unwrap().values())

        async def close() -> None:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await opening.__aexit__(None, None, None)

        async with anyio.create_task_group() as tg:
            tg.start_soon(use)
        async with anyio.create_task_group() as tg:
            tg.start_soon(close)
        assert len(results) == 2 and all("SIM-" in r for r in results)
        assert group.closed and all(inst.closed for inst in members)
        assert "SIM-" in results[0]  # this task's scopes are intact: it can still await
        await anyio.lowlevel.checkpoint()


async def test_group_closes_when_cancelled_during_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # one member never finishes connecting; the scope is cancelled once the other is open
    import aiotmc.transports.tcp.transport as tcp  # where SocketTransport.connect looks it up

    opened: list[aiotmc.Instrument] = []
    first_open = anyio.Event()
    original_init = aiotmc.Instrument.__init__
    original_connect = tcp.connect_socket

    def spy(self: aiotmc.Instrument, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        opened.append(self)
        first_open.set()

    async def connect(host: str, port: int, *, timeout: float | None) -> socket.socket:
        if port == 9:  # the "hung" member
            await first_open.wait()
            scope.cancel()
            await anyio.sleep_forever()
        return await original_connect(host, port, timeout=timeout)

    monkeypatch.setattr(aiotmc.Instrument, "__init__", spy)
    monkeypatch.setattr(tcp, "connect_socket", connect)
    async with bench({"dmm": create_device("dmm")}, "tcp") as resources:
        with anyio.fail_after(10), anyio.CancelScope() as scope:
            async with aiotmc.open_many(
                {"dmm": resources["dmm"], "hung": "TCPIP0::127.0.0.1::9::SOCKET"}
            ):
                pytest.fail("open_many cannot finish")  # pragma: no cover
        assert scope.cancelled_caught
        assert len(opened) == 1 and opened[0].closed


async def test_query_all_batches_queries_per_instrument(via: str) -> None:
    psus = {f"psu{i}": create_device("psu") for i in range(3)}
    messages = {name: count_writes(dev) for name, dev in psus.items()}
    async with bench(psus, via) as resources, aiotmc.open_many(resources) as group:
        for name, inst in group.items():
            await inst.write(f"VOLT {int(name[-1]) + 1}.5")
            await inst.query("*OPC?")  # the server has handled the write
        for seen in messages.values():
            seen.clear()
        with anyio.fail_after(10):
            results = await group.query_all({name: ["VOLT?", "*IDN?", "CURR?"] for name in group})
        for name, result in results.items():
            volt, idn, curr = result.unwrap()
            assert float(volt) == pytest.approx(int(name[-1]) + 1.5)
            assert idn == "aiotmc,SIM-PSU,0001,0.1"  # commas inside one answer are kept
            assert float(curr) == pytest.approx(1.0)
            # one compound program message per instrument, not three
            assert [m.strip() for m in messages[name]] == [b"VOLT?;*IDN?;:CURR?"]


async def test_write_all_compound_and_mixed(via: str) -> None:
    psus = {"a": create_device("psu"), "b": create_device("psu")}
    messages = {name: count_writes(dev) for name, dev in psus.items()}
    async with bench(psus, via) as resources, aiotmc.open_many(resources) as group:
        with anyio.fail_after(10):
            written = await group.write_all({"a": ["VOLT 1.25", "OUTP ON"], "b": "VOLT 2.5"})
        assert written.ok and written.unwrap() == {"a": None, "b": None}
        with anyio.fail_after(10):
            volts = await group.query_all("MEAS:VOLT?")
        assert [m.strip() for m in messages["a"]] == [b"VOLT 1.25;:OUTP ON", b"MEAS:VOLT?"]
        assert float(volts["a"].unwrap()) == pytest.approx(1.25)
        assert float(volts["b"].unwrap()) == 0.0  # output off


async def test_unknown_member_is_a_key_error(via: str) -> None:
    async with (
        bench({"dmm": create_device("dmm")}, via) as resources,
        aiotmc.open_many(resources) as group,
    ):
        with pytest.raises(KeyError, match="nope"):
            await group.query_all({"nope": "*IDN?"})
        with pytest.raises(KeyError):
            group["nope"]


async def test_run_all_and_result_api(via: str) -> None:
    devices = {"dmm": create_device("dmm"), "psu": create_device("psu")}
    async with bench(devices, via) as resources, aiotmc.open_many(resources) as group:

        async def ident(inst: aiotmc.Instrument) -> str:
            identity = await inst.identify()
            if identity.model == "SIM-PSU":
                raise ValueError("no PSUs please")
            return identity.model

        with anyio.fail_after(10):
            results = await group.run_all(ident)
        assert results["dmm"].unwrap() == "SIM-DMM"
        assert isinstance(results.failed["psu"], ValueError)
        with pytest.raises(ValueError, match="no PSUs"):
            results["psu"].unwrap()
        assert "psu=<ValueError>" in repr(results)
        only = await group.run_all(ident, names=["dmm"], strict=True)
        assert only.unwrap() == {"dmm": "SIM-DMM"}


async def test_group_from_existing_instruments(via: str) -> None:
    async with bench({"dmm": create_device("dmm")}, via) as resources:
        spec = resources["dmm"]
        resource, options = spec if isinstance(spec, tuple) else (spec, {})
        async with aiotmc.open(resource, **options) as inst:
            async with InstrumentGroup({"dmm": inst}) as group:
                results = await group.query_all("*IDN?", strict=True)
                assert results["dmm"].ok
            assert group.closed and inst.closed
            await group.aclose()  # idempotent


def test_group_can_be_built_without_an_event_loop() -> None:
    group = InstrumentGroup(limit=4)
    assert len(group) == 0 and group.limit == 4 and not group.closed


async def test_empty_group() -> None:
    async with aiotmc.open_many({}) as group:
        assert len(group) == 0
        assert (await group.query_all("*IDN?")).ok
