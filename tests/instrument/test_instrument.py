"""The Instrument API, run over every transport (in-process sim, TCP socket, USBTMC)."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

import aiotmc
from aiotmc import StatusByte
from aiotmc.sim.devices import create_device
from tests.conftest import OpenSim

PATTERN = bytes(range(256))


def pattern(size: int) -> bytes:
    return (PATTERN * (size // 256 + 1))[:size]


async def test_query_identity(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        idn = await inst.query("*IDN?")
        assert idn.count(",") == 3
        identity = await inst.identify()
        assert identity.model and identity.manufacturer
        assert str(inst.resource)


async def test_write_then_read(open_sim: OpenSim) -> None:
    async with open_sim("psu") as inst:
        await inst.write("VOLT 3.25")
        await inst.write("VOLT?")
        assert float(await inst.read()) == pytest.approx(3.25)
        await inst.write_raw(b"VOLT?\n")
        raw = await inst.read_raw()
        assert raw.endswith(b"\n")
        assert float(raw) == pytest.approx(3.25)


async def test_query_values_and_compound(open_sim: OpenSim) -> None:
    async with open_sim("psu") as inst:
        await inst.write("VOLT 1.5;CURR 0.25")
        volts, amps = await inst.query_many(["VOLT?", "CURR?"])
        assert float(volts) == pytest.approx(1.5)
        assert float(amps) == pytest.approx(0.25)
    async with open_sim("dmm") as inst:
        await inst.write("SAMP:COUN 5")
        values = await inst.query_values("READ?")
        assert len(values) == 5
        assert all(isinstance(v, float) for v in values)


@pytest.mark.parametrize("size", [0, 1, 10, 255, 4096, 1_000_003])
async def test_query_block_with_newlines_inside(open_sim: OpenSim, size: int) -> None:
    device = create_device("scope")
    expected = pattern(size)
    device.add_raw_query(
        "BLOCk?", lambda args: aiotmc.protocol.ieee4882.encode_block(expected) + b"\n"
    )
    async with open_sim(device=device) as inst:
        payload = await inst.query_block("BLOCk?")
        assert isinstance(payload, bytearray)
        assert payload == expected
        # the next exchange is in step
        assert "," in await inst.query("*IDN?")


async def test_query_block_into_reused_buffer(open_sim: OpenSim) -> None:
    device = create_device("scope")
    expected = pattern(70_000)
    device.add_raw_query(
        "BLOCk?", lambda args: aiotmc.protocol.ieee4882.encode_block(expected) + b"\n"
    )
    buffer = bytearray(100_000)
    async with open_sim(device=device) as inst:
        for _ in range(3):
            view = await inst.query_block("BLOCk?", into=buffer)
            assert len(view) == len(expected)
            assert view.obj is buffer
            assert bytes(view) == expected
        small = bytearray(10)
        with pytest.raises(aiotmc.LocalProtocolError, match="does not fit"):
            await inst.query_block("BLOCk?", into=small)
        assert "," in await inst.query("*IDN?")


async def test_binary_values_round_trip(open_sim: OpenSim) -> None:
    values = [(-1) ** i * i * 37 % 32768 for i in range(10_000)]
    async with open_sim("wavegen") as inst:
        await inst.write_binary_values("DATA:ARB ramp,", values, "h")
        await inst.check_errors()
        back = await inst.query_binary_values("DATA:ARB? ramp", "h")
        assert back == values
        as_tuple = await inst.query_binary_values("DATA:ARB? ramp", "h", container=tuple)
        assert as_tuple == tuple(values)


async def test_binary_values_numpy(open_sim: OpenSim) -> None:
    numpy = pytest.importorskip("numpy")
    wave = (numpy.sin(numpy.linspace(0, 6.28, 5000)) * 30000).astype("<i2")
    async with open_sim("wavegen") as inst:
        await inst.write_binary_values("DATA:ARB sine,", wave, "h")
        back = await inst.query_binary_values("DATA:ARB? sine", "h", container=numpy.ndarray)
        assert numpy.array_equal(back, wave)


async def test_status_byte_and_errors(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        await inst.write("*CLS")
        await inst.write("BOGUS:COMMand 1")
        stb = await inst.read_stb()
        assert StatusByte.EAV in stb
        errors = await inst.errors()
        assert [e.code for e in errors] == [-113]
        assert await inst.errors() == []
        await inst.write("NOPE")
        with pytest.raises(aiotmc.InstrumentError) as info:
            await inst.check_errors()
        assert info.value.code == -113
        await inst.check_errors()  # queue now empty: no error


async def test_clear_and_trigger(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        await inst.trigger()
        await inst.clear()
        assert "," in await inst.query("*IDN?")


async def test_concurrent_tasks_never_cross_answers(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    device.add_raw_query("ECHO?", lambda args: b",".join(args) + b"\n")
    results: dict[int, str] = {}
    async with open_sim(device=device) as inst:

        async def worker(n: int) -> None:
            for round_ in range(5):
                results[n * 100 + round_] = await inst.query(f"ECHO? {n * 100 + round_}")

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(40):
                    tg.start_soon(worker, n)
    assert len(results) == 200
    assert all(answer.strip() == str(key) for key, answer in results.items())


async def test_contended_queries_cancelled_anywhere_never_cross_answers(
    open_sim: OpenSim,
) -> None:
    """Cancellations land on callers in line, on callers whose query the releaser already
    sent for them (hand-over by I/O, on TCP), and on callers in their own exchange."""
    device = create_device("dmm")
    device.add_raw_query("ECHO?", lambda args: b",".join(args) + b"\n")
    rng = random.Random(20261207)
    scopes: dict[int, anyio.CancelScope] = {}
    answered: list[int] = []
    async with open_sim(device=device) as inst:

        async def worker(n: int) -> None:
            for round_ in range(8):
                key = n * 100 + round_
                with anyio.CancelScope() as scopes[key]:
                    answer = await inst.query(f"ECHO? {key}")
                    assert answer.strip() == str(key)
                    answered.append(key)
                del scopes[key]

        async def canceller() -> None:
            for _ in range(40):
                for _ in range(rng.randrange(20)):
                    await anyio.lowlevel.checkpoint()
                if scopes:
                    scopes[rng.choice(sorted(scopes))].cancel()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(worker, n)
                tg.start_soon(canceller)
            assert (await inst.query("ECHO? 999999")).strip() == "999999"
    assert 0 < len(answered) < 160  # some answered, some cancelled


async def test_late_answer_times_out_and_never_crosses(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    async with open_sim(device=device) as inst:
        device.latency = 0.3
        with anyio.fail_after(5), pytest.raises(aiotmc.ReadTimeout) as info:
            await inst.query("*IDN?", timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        device.latency = 0.0
        await inst.write("VOLT:RANG 10")
        assert float(await inst.query("VOLT:RANG?")) == pytest.approx(10)
        await anyio.sleep(0.35)  # let the abandoned answer come due; it must not surface
        assert float(await inst.query("VOLT:RANG?")) == pytest.approx(10)


async def test_answer_that_never_comes(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    async with open_sim(device=device) as inst:
        device.latency = float("inf")
        with anyio.fail_after(5), pytest.raises(aiotmc.ReadTimeout):
            await inst.query("MEAS:VOLT?", timeout=0.05)
        device.latency = 0.0
        assert "," in await inst.query("*IDN?")


async def test_cancelled_query_leaves_instrument_in_step(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    async with open_sim(device=device) as inst:
        device.latency = 0.2
        with anyio.move_on_after(0.02) as scope:
            await inst.query("*IDN?")
        assert scope.cancelled_caught
        device.latency = 0.0
        await inst.write("VOLT:RANG 100")
        assert float(await inst.query("VOLT:RANG?")) == pytest.approx(100)


async def test_calls_in_an_already_cancelled_scope_send_nothing(open_sim: OpenSim) -> None:
    """The cancellation check comes before the command is sent (cheap on the hot path)."""
    async with open_sim("psu") as inst:
        await inst.write("VOLT 1")
        assert float(await inst.query("VOLT?")) == pytest.approx(1)  # warm: the fast path
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope():  # cancelled from outside the innermost scope
                await inst.query("VOLT 7;:VOLT?")
        assert outer.cancelled_caught
        with anyio.CancelScope() as scope:
            scope.cancel()
            await inst.write("VOLT 8")
        assert scope.cancelled_caught
        with anyio.CancelScope() as scope:
            scope.cancel()
            with anyio.CancelScope(shield=True):  # a shield lets the call through
                assert float(await inst.query("VOLT?")) == pytest.approx(1)
        assert float(await inst.query("VOLT?")) == pytest.approx(1)


async def test_garbage_instead_of_block(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    device.add_raw_query("GARBage?", lambda args: b"this is not a block\n")
    async with open_sim(device=device) as inst:
        with anyio.fail_after(5), pytest.raises(aiotmc.RemoteProtocolError, match="block"):
            await inst.query_block("GARB?")
        assert "," in await inst.query("*IDN?")


async def test_oversized_block_header_fails_fast(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    device.add_raw_query("HUGE?", lambda args: b"#9999999999\n")
    async with open_sim(device=device) as inst:
        with (
            anyio.fail_after(5),
            pytest.raises(aiotmc.RemoteProtocolError, match="999999999 bytes"),
        ):
            await inst.query_block("HUGE?")
        assert "," in await inst.query("*IDN?")


async def test_response_larger_than_max_message_size(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    device.add_raw_query("LONG?", lambda args: b"x" * 5000 + b"\n")
    async with open_sim(device=device, max_message_size=1000) as inst:
        with anyio.fail_after(5), pytest.raises(aiotmc.RemoteProtocolError, match="max"):
            await inst.query("LONG?")
        assert "," in await inst.query("*IDN?")


async def test_lock_holds_a_transaction(open_sim: OpenSim) -> None:
    order: list[str] = []
    async with open_sim("psu") as inst:

        async def transaction() -> None:
            async with inst.lock():
                await inst.write("VOLT 2.0")
                order.append("set")
                order.append(await inst.query("VOLT?"))

        async def intruder() -> None:
            await inst.write("VOLT 9.0")
            order.append("intruder")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(transaction)
                await anyio.lowlevel.checkpoint()
                tg.start_soon(intruder)
    assert order[:2] == ["set", order[1]]
    assert float(order[1]) == pytest.approx(2.0)
    assert order[2] == "intruder"


async def test_closed_instrument_refuses(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        await inst.aclose()
        await inst.aclose()  # idempotent
        assert inst.closed
        with pytest.raises(anyio.ClosedResourceError):
            await inst.query("*IDN?")


async def test_service_request_on_operation_complete(open_sim: OpenSim) -> None:
    async with open_sim("scope") as inst:
        if open_sim.via == "tcp":  # type: ignore[attr-defined]
            with pytest.raises(aiotmc.UnsupportedOperation, match="service-request"):
                await inst.wait_for_srq(timeout=1)
            return
        await inst.write("*CLS;*ESE 1;*SRE 32")
        async with inst.service_requests() as events:
            await inst.write(":SINGle;*OPC")
            await inst.trigger()
            with anyio.fail_after(5):
                event = await events.receive()
        assert StatusByte.RQS in event.status
        assert StatusByte.ESB in event.status
        assert event.monotonic > 0 and event.wall > 0
        assert int(await inst.query("*ESR?")) & 1


async def test_read_stb_is_not_disturbed_by_srq(open_sim: OpenSim) -> None:
    async with open_sim("scope") as inst:
        if open_sim.via == "tcp":  # type: ignore[attr-defined]
            with pytest.raises(aiotmc.UnsupportedOperation):
                async with inst.service_requests():
                    pass  # pragma: no cover
            return
        await inst.write("*CLS;*ESE 1;*SRE 32")
        async with inst.service_requests() as events:
            await inst.write(":SINGle;*OPC")
            await inst.trigger()
            with anyio.fail_after(5):
                await events.receive()
            stb = await inst.read_stb()
            assert StatusByte.ESB in stb
