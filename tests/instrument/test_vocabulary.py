"""PyVISA's vocabulary on Instrument (docs/pyvisa.md), over every transport."""

from __future__ import annotations

import struct

import anyio
import pytest

import aiotmc
from aiotmc.protocol.ieee4882 import encode_block
from aiotmc.sim.devices import create_device
from tests.conftest import OpenSim


def _device_answering(name: str, answer: bytes) -> object:
    device = create_device("scope")
    device.add_raw_query(name, lambda args: answer)
    return device


async def test_converter_letters(open_sim: OpenSim) -> None:
    async with open_sim(device=_device_answering("VALues?", b"1,2,10\n")) as inst:
        assert await inst.query_values("VALues?", converter="f") == [1.0, 2.0, 10.0]
        assert await inst.query_values("VALues?", converter="d") == [1, 2, 10]
        assert await inst.query_values("VALues?", converter="x") == [1, 2, 16]
        assert await inst.query_values("VALues?", converter="s") == ["1", "2", "10"]
        assert await inst.query_ascii_values("VALues?", container=tuple) == (1.0, 2.0, 10.0)
        await inst.write("VALues?")
        assert await inst.read_ascii_values(converter="d") == [1, 2, 10]


async def test_bad_converter_is_local_and_sends_nothing(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        with pytest.raises(ValueError, match="unknown converter 'z'"):
            await inst.query_values("*IDN?", converter="z")
        with pytest.raises(TypeError, match="callable"):
            await inst.query_values("*IDN?", converter=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unsupported binary datatype"):
            await inst.query_binary_values("*IDN?", "bogus")
        with pytest.raises(ValueError, match="header_fmt"):
            await inst.query_binary_values("*IDN?", "h", header_fmt="ascii")
        # nothing was sent: the link is in step, no answer is pending
        assert "," in await inst.query("*IDN?")


async def test_numpy_dtype_names(open_sim: OpenSim) -> None:
    values = [-3, 0, 7, 32767, -32768, 10, 2570, 1]  # the simulator takes >= 8 int16
    async with open_sim("wavegen") as inst:
        await inst.write_binary_values("DATA:ARB ramp,", values, "int16")
        assert await inst.query_binary_values("DATA:ARB? ramp", "int16") == values
        assert await inst.query_binary_values("DATA:ARB? ramp", "h", data_points=8) == values
        with pytest.raises(aiotmc.RemoteProtocolError, match="expected 9"):
            await inst.query_binary_values("DATA:ARB? ramp", "h", data_points=9)
        assert "," in await inst.query("*IDN?")


async def test_numpy_dtype_objects(open_sim: OpenSim) -> None:
    numpy = pytest.importorskip("numpy")
    wave = numpy.arange(-5, 5, dtype="<i2")
    async with open_sim("wavegen") as inst:
        await inst.write_binary_values("DATA:ARB w,", wave, numpy.int16)
        back = await inst.query_binary_values(
            "DATA:ARB? w", numpy.dtype("int16"), container=numpy.ndarray
        )
        assert numpy.array_equal(back, wave)


@pytest.mark.parametrize("big", [False, True])
async def test_hp_header(open_sim: OpenSim, big: bool) -> None:
    items = [10, 2570, -1]  # 2570 == 0x0A0A: payload bytes equal to the terminator
    order = ">" if big else "<"
    payload = struct.pack(f"{order}3h", *items)
    answer = b"#A" + struct.pack(f"{order}H", len(payload)) + payload + b"\n"
    async with open_sim(device=_device_answering("HP?", answer)) as inst:
        got = await inst.query_binary_values("HP?", "h", header_fmt="hp", is_big_endian=big)
        assert got == items
        assert "," in await inst.query("*IDN?")


async def test_empty_header_with_data_points(open_sim: OpenSim) -> None:
    payload = struct.pack("<4H", 1, 10, 0x0A0A, 4)
    async with open_sim(device=_device_answering("RAW?", payload + b"\n")) as inst:
        got = await inst.query_binary_values("RAW?", "H", header_fmt="empty", data_points=4)
        assert got == [1, 10, 0x0A0A, 4]
        await inst.write("RAW?")
        assert await inst.read_binary_values("uint16", header_fmt="empty", data_points=4) == got
        assert "," in await inst.query("*IDN?")


async def test_read_binary_values_ieee(open_sim: OpenSim) -> None:
    payload = struct.pack("<3f", 1.5, -2.0, 0.25)
    async with open_sim(device=_device_answering("B?", encode_block(payload) + b"\n")) as inst:
        await inst.write("B?")
        assert await inst.read_binary_values("float32") == [1.5, -2.0, 0.25]


async def test_read_bytes(open_sim: OpenSim) -> None:
    async with open_sim(device=_device_answering("R?", b"ab\ncd\n")) as inst:
        await inst.write("R?")
        assert await inst.read_bytes(6) == b"ab\ncd\n"
        await inst.write("*IDN?")
        first = await inst.read_bytes(1000, break_on_termchar=True)
        assert first.endswith(b"\n") and first.count(b",") == 3
        with pytest.raises(ValueError):
            await inst.read_bytes(-1)


async def test_write_ascii_values(open_sim: OpenSim) -> None:
    async with open_sim("psu") as inst:
        await inst.write_ascii_values("VOLT", [2.5])
        assert float(await inst.query("VOLT?")) == 2.5
        await inst.write_ascii_values("VOLT", [1.25], converter="f")
        assert float(await inst.query("VOLT?")) == 1.25
        await inst.write_ascii_values("VOLT", [3], converter=lambda v: f"{v}.5")
        assert float(await inst.query("VOLT?")) == 3.5
        with pytest.raises(ValueError, match="unknown converter"):
            await inst.write_ascii_values("VOLT", [1], converter="q")


async def test_stb_and_query_delay(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        assert isinstance(await inst.stb(), aiotmc.StatusByte)
        inst.query_delay = 0.01
        assert "," in await inst.query("*IDN?")
        start = anyio.current_time()
        assert "," in await inst.query("*IDN?", delay=0.05)
        assert anyio.current_time() - start >= 0.05
        assert "," in await inst.query("*IDN?", delay=0)


async def test_read_termination_none(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        if open_sim.via == "tcp":  # type: ignore[attr-defined]
            with pytest.raises(ValueError, match="terminat"):
                inst.read_termination = None
            assert inst.read_termination == "\n"
            return
        inst.read_termination = None
        assert inst.read_termination is None
        assert (await inst.query("*IDN?")).endswith("\n")
        inst.read_termination = "\n"
        assert not (await inst.query("*IDN?")).endswith("\n")
