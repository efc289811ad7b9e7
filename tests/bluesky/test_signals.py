"""SCPI signals on simulated instruments: every datatype read, written and described, and
the typed errors (bad answers, bad values, read-only, not connected, timeouts, wrong loop).

asyncio only (ophyd-async); the wrong-loop test uses the RunEngine's loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd_async.core import Array1D, NotConnectedError, StrictEnum, SubsetEnum

import aiotmc
from aiotmc import LocalProtocolError, ReadTimeout, RemoteProtocolError, UnsupportedOperation
from aiotmc.bluesky import (
    ScpiDmm,
    ScpiLink,
    ScpiSignalBackend,
    scpi_signal_r,
    scpi_signal_rw,
    scpi_signal_w,
)
from aiotmc.sim.devices import SimDmm, SimScope, SimWaveformGenerator

from .conftest import in_loop


class Shape(StrictEnum):
    SINUSOID = "SINusoid"
    SQUARE = "SQUare"
    RAMP = "RAMP"
    PULSE = "PULSe"
    NOISE = "NOISe"
    DC = "DC"
    ARBITRARY = "ARBitrary"


class SomeShapes(SubsetEnum):
    SINUSOID = "SINusoid"


async def test_enum_bool_float_signals_read_write_and_describe() -> None:
    sim = SimWaveformGenerator()
    async with aiotmc.open("SIM::bluesky::wavegen", device=sim) as inst:
        shape = scpi_signal_rw(inst, "SOUR1:FUNC", Shape, name="shape")
        output = scpi_signal_rw(inst, "OUTP1", bool, name="output")
        amplitude = scpi_signal_rw(
            inst, "SOUR1:VOLT", float, write="SOUR1:VOLT {value:.3f}", units="Vpp", name="amp"
        )
        for signal in (shape, output, amplitude):
            await signal.connect()

        assert await shape.get_value() is Shape.SINUSOID  # the instrument answers "SIN"
        await shape.set(Shape.SQUARE)
        assert await inst.query("SOUR1:FUNC?") == "SQU"
        await shape.set("RAMP")  # a member's value is accepted too
        assert await shape.get_value() is Shape.RAMP

        assert await output.get_value() is False
        await output.set(True)
        assert await inst.query("OUTP1?") == "1"
        assert sim.channels[0].output is True

        await amplitude.set(1.23456)  # the template's format spec rounds it
        assert sim.channels[0].amplitude == 1.235
        assert await amplitude.get_value() == 1.235

        described = await shape.describe()
        assert described["shape"]["dtype"] == "string"
        assert described["shape"]["choices"] == [m.value for m in Shape]
        assert described["shape"]["source"] == "scpi://SIM::bluesky::wavegen/SOUR1:FUNC?"
        assert (await amplitude.describe())["amp"]["units"] == "Vpp"
        assert (await output.describe())["output"]["dtype"] == "boolean"
        reading = (await amplitude.read())["amp"]
        assert reading["value"] == 1.235 and reading["alarm_severity"] == 0
        location = await amplitude.locate()
        assert location == {"setpoint": 1.23456, "readback": 1.235}

        subset = scpi_signal_r(inst, "SOUR1:FUNC?", SomeShapes, name="subset")
        await subset.connect()
        assert await subset.get_value() == "RAMP"  # not a member: kept as text


async def test_int_str_and_list_signals() -> None:
    sim = SimDmm()
    async with aiotmc.open("SIM::bluesky::dmm", device=sim) as inst:
        count = scpi_signal_rw(inst, "SAMP:COUN", int, name="count")
        idn = scpi_signal_r(inst, "*IDN?", str, name="idn")
        config = scpi_signal_r(inst, "CONF?", str, name="config")
        error = scpi_signal_r(inst, "SYST:ERR?", Sequence[str], name="error")  # type: ignore[type-abstract]
        for signal in (count, idn, config, error):
            await signal.connect()
        await count.set(3)
        assert sim.sample_count == 3 and await count.get_value() == 3
        assert await idn.get_value() == "aiotmc,SIM-DMM,0001,0.1"
        assert (await config.get_value()).startswith("VOLT ")  # the quotes are removed
        assert await error.get_value() == ["+0", "No error"]
        described = await error.describe()
        assert described["error"]["dtype"] == "array" and described["error"]["shape"] == [2]


async def test_arrays_from_ascii_lists_and_binary_blocks() -> None:
    dmm_sim = SimDmm(noise=1e-3)
    async with aiotmc.open("SIM::bluesky::dmm", device=dmm_sim) as inst:
        await inst.write("SAMP:COUN 4")
        readings = scpi_signal_r(inst, "READ?", Array1D[np.float64], units="V", name="readings")
        await readings.connect()
        values = await readings.get_value()
        assert values.dtype == np.float64 and values.shape == (4,)
        assert values.tolist() == pytest.approx(dmm_sim.readings, rel=1e-9)
        described = (await readings.describe())["readings"]
        assert described["dtype"] == "array"
        assert described["shape"] == [4]
        assert described["dtype_numpy"] == "<f8"

    scope_sim = SimScope()
    async with aiotmc.open("SIM::bluesky::scope", device=scope_sim) as inst:
        await inst.write(":WAV:FORM BYTE")
        trace = scpi_signal_r(inst, ":WAV:DATA?", Array1D[np.uint8], binary=True, name="trace")
        await trace.connect()
        described = (await trace.describe())["trace"]  # reads once for the shape
        assert described["shape"] == [scope_sim.points]
        assert described["dtype_numpy"] == "|u1"
        got = await trace.get_value()
        expected = await inst.query_binary_values(":WAV:DATA?", "uint8", container=np.ndarray)
        assert got.dtype == np.uint8 and np.array_equal(got, expected)
        assert len(set(got.tolist())) > 10  # a waveform, not a constant


async def test_write_only_signal_and_read_only_put() -> None:
    sim = SimDmm()
    async with aiotmc.open("SIM::bluesky::dmm", device=sim) as inst:
        rng = scpi_signal_w(inst, "VOLT:RANG {value}", float, name="rng")
        await rng.connect()
        await rng.set(0.1)
        assert sim.range == 0.1
        backend = rng._connector.backend
        assert isinstance(backend, ScpiSignalBackend)
        assert backend.source("rng", read=True) == "scpi://SIM::bluesky::dmm/VOLT:RANG {value}"
        with pytest.raises(UnsupportedOperation, match="write-only"):
            await backend.get_reading()
        with pytest.raises(UnsupportedOperation, match="write-only"):
            backend.set_callback(lambda reading: None)

        idn = scpi_signal_r(inst, "*IDN?", str, name="idn")
        read_only = idn._connector.backend
        with pytest.raises(UnsupportedOperation, match="read-only"):
            await read_only.put("x")


async def test_unparsable_answers_and_unwritable_values_are_typed() -> None:
    sim = SimDmm()
    async with aiotmc.open("SIM::bluesky::dmm", device=sim) as inst:
        not_a_number = scpi_signal_r(inst, "*IDN?", float, name="bad")
        await not_a_number.connect()
        with pytest.raises(RemoteProtocolError, match="SIM-DMM"):
            await not_a_number.get_value()
        level = scpi_signal_rw(inst, "VOLT:RANG", float, name="level")
        await level.connect()
        for bad in ("ten", True, None):
            with pytest.raises((LocalProtocolError, UnsupportedOperation)):
                await level.set(bad)  # type: ignore[arg-type]
        shape = scpi_signal_rw(inst, "TRIG:SOUR", Shape, name="shape")
        await shape.connect()
        with pytest.raises(RemoteProtocolError, match="one of SINusoid"):
            await shape.get_value()  # "IMM" is no Shape
        with pytest.raises(LocalProtocolError):
            await shape.set("TRIANGLE")  # type: ignore[arg-type]
        assert await inst.query("*OPC?") == "1"  # still usable, nothing was sent


async def test_a_read_timeout_arrives_as_ophyds_timeout_caused_by_read_timeout() -> None:
    sim = SimDmm()
    async with aiotmc.open("SIM::bluesky::dmm", device=sim, timeout=0.1) as inst:
        fetch = scpi_signal_r(inst, "FETC?", float, name="fetch")
        await fetch.connect()
        with pytest.raises(TimeoutError) as caught:
            await fetch.get_value()  # no measurement yet: the simulator never answers
        # ophyd-async re-raises any TimeoutError as TimeoutError(source), from aiotmc's
        assert str(caught.value) == "scpi://SIM::bluesky::dmm/FETC?"
        assert isinstance(caught.value.__cause__, ReadTimeout)
        errors = await inst.errors()  # the instrument is usable afterwards
        assert [e.code for e in errors] == [-230]


async def test_signals_before_connect_and_after_close() -> None:
    link = ScpiLink("SIM::bluesky::later", device=SimDmm())
    level = scpi_signal_r(link, "VOLT:RANG?", float, name="level")
    with pytest.raises(NotConnectedError, match="connect the device first"):
        await level._connector.backend.get_value()
    await level.connect()
    assert await level.get_value() == 1.0
    await link.aclose()
    with pytest.raises(NotConnectedError):
        await level._connector.backend.get_value()
    assert repr(link) == "<ScpiLink SIM::bluesky::later not open>"


def test_a_link_is_used_from_the_loop_that_opened_it(RE: RunEngine) -> None:
    link = ScpiLink("SIM::bluesky::loop", device=SimDmm())
    level = scpi_signal_r(link, "VOLT:RANG?", float, name="level")
    in_loop(RE, level.connect())  # opened in the RunEngine's loop
    assert in_loop(RE, level.get_value()) == 1.0
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(level._connector.backend.get_value())
    in_loop(RE, link.aclose())


def test_bad_declarations_are_refused_when_made() -> None:
    link = ScpiLink("SIM::dmm")
    with pytest.raises(ValueError, match=r"\{value\}"):
        scpi_signal_w(link, "VOLT:RANG", float)
    with pytest.raises(ValueError, match=r"\{value\}"):
        scpi_signal_rw(link, "VOLT", float, write="VOLT {level}")
    with pytest.raises(ValueError, match="bad write template"):
        scpi_signal_rw(link, "VOLT", float, write="VOLT {value")
    with pytest.raises(TypeError, match="SCPI signals support"):
        scpi_signal_r(link, "X?", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="binary=True"):
        scpi_signal_r(link, "X?", float, binary=True)
    with pytest.raises(ValueError, match="a query, a write template or both"):
        ScpiSignalBackend(float, link, read=None)


async def test_a_device_on_an_open_instrument_leaves_it_open() -> None:
    sim = SimDmm(noise=1e-3, seed=2)
    async with aiotmc.open("SIM::bluesky::given", device=sim) as inst:
        dmm = ScpiDmm(inst, name="given")
        await dmm.connect()
        assert dmm.link.instrument is inst
        await dmm.trigger()
        reading = await dmm.read()
        assert reading["given-voltage"]["value"] == pytest.approx(sim.readings[0], rel=1e-9)
        await dmm.aclose()
        assert not inst.closed  # not the device's to close
        assert await inst.query("*OPC?") == "1"
    with pytest.raises(TypeError, match="open options"):
        ScpiLink(inst, timeout=1)
