"""The ready-made simulated instruments and create_device()."""

from __future__ import annotations

import struct
import zlib

import pytest

from aiotmc.protocol.ieee4882 import decode_block
from aiotmc.sim import (
    MODELS,
    SimDevice,
    SimDmm,
    SimPsu,
    SimScope,
    SimWaveformGenerator,
    create_device,
    test_pattern,
)

from .test_device import FakeClock, ask, codes


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def block_of(device: SimDevice, message: bytes) -> bytes:
    device.write(message)
    response = device.read()
    assert response is not None
    return decode_block(response)


# -- factory ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "cls"),
    [("dmm", SimDmm), ("psu", SimPsu), ("wavegen", SimWaveformGenerator), ("scope", SimScope)],
)
def test_create_device(model: str, cls: type[SimDevice]) -> None:
    device = create_device(model, latency=0.25)
    assert type(device) is cls
    assert device.latency == 0.25
    assert ask(create_device(model.upper()), "*IDN?").startswith("aiotmc,SIM-")
    assert MODELS[model] is cls


def test_create_device_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="dmm, psu, scope, wavegen"):
        create_device("oscilloscope")


def test_models_have_distinct_identities() -> None:
    idns = {ask(create_device(m), "*IDN?") for m in MODELS}
    assert len(idns) == len(MODELS)


# -- DMM ----------------------------------------------------------------------------------------


def test_dmm_measure_is_near_the_input_and_reproducible() -> None:
    a, b, c = SimDmm(seed=1), SimDmm(seed=1), SimDmm(seed=2)
    a.input_voltage = b.input_voltage = c.input_voltage = 3.3
    ra = [float(ask(a, "MEAS:VOLT:DC?")) for _ in range(5)]
    rb = [float(ask(b, "MEASURE:VOLTAGE?")) for _ in range(5)]
    rc = [float(ask(c, "MEAS:VOLT?")) for _ in range(5)]
    assert ra == rb
    assert ra != rc
    assert all(abs(v - 3.3) < 1e-3 for v in ra + rc)
    assert len(set(ra)) == 5  # noisy


def test_dmm_sample_count_and_read() -> None:
    dmm = SimDmm()
    values = ask(dmm, "SAMP:COUN 4;:READ?").split(",")
    assert len(values) == 4
    assert ask(dmm, "SAMP:COUN?") == "4"
    assert ask(dmm, "FETC?").split(",") == values  # FETCh? returns the same readings


def test_dmm_ranges_and_overload() -> None:
    dmm = SimDmm(input_voltage=5.0)
    assert float(ask(dmm, "VOLT:RANG?")) == 10.0  # autorange
    assert ask(dmm, "VOLT:RANG:AUTO?") == "1"
    dmm.write(b"CONF:VOLT:DC 1")
    assert ask(dmm, "VOLT:RANG:AUTO?;:VOLT:DC:RANG?") == "0;+1.000000000E+00"
    assert ask(dmm, "CONF?") == '"VOLT +1.000000E+00,+3.000000E-07"'
    assert float(ask(dmm, "READ?")) == 9.9e37  # 5 V on the 1 V range
    dmm.write(b"SENS:VOLT:RANG 100")
    assert abs(float(ask(dmm, "READ?")) - 5.0) < 1e-2
    dmm.write(b"VOLT:RANG 2000")
    assert codes(dmm) == [-222]


def test_dmm_bus_trigger(clock: FakeClock) -> None:
    dmm = SimDmm(clock=clock, measurement_time=0.1)
    dmm.write(b"TRIG:SOUR BUS;SAMP:COUN 2")
    assert ask(dmm, "TRIG:SOUR?") == "BUS"
    dmm.write(b"READ?")
    assert codes(dmm) == [-214]
    dmm.write(b"INIT;*OPC")
    dmm.write(b"FETC?")
    assert dmm.read() is None
    dmm.trigger()
    clock.advance(0.19)
    assert dmm.read() is None
    clock.advance(0.01)
    response = dmm.read()
    assert response is not None and len(response.split(b",")) == 2
    assert dmm.event_status & 1


def test_dmm_fetch_without_init_and_double_init(clock: FakeClock) -> None:
    dmm = SimDmm(clock=clock, measurement_time=1.0)
    dmm.write(b"FETC?")
    assert dmm.read() is None
    assert codes(dmm) == [-230]
    dmm.write(b"INIT;INIT")
    assert codes(dmm) == [-230, -213]
    dmm.write(b"*RST")
    assert ask(dmm, "SAMP:COUN?;TRIG:SOUR?") == "1;IMM"


# -- PSU ----------------------------------------------------------------------------------------


def test_psu_constant_voltage_and_current_limit() -> None:
    psu = SimPsu()
    psu.channels[0].load = 10.0
    psu.write(b"VOLT 5;CURR 1;OUTP ON")
    assert ask(psu, "MEAS:VOLT?;MEAS:CURR?;OUTP:MODE?") == ("+5.000000000E+00;+5.000000000E-01;CV")
    psu.write(b"CURR 0.1")
    assert ask(psu, "MEAS:SCAL:VOLT:DC?;MEAS:CURR?;OUTP:MODE?") == (
        "+1.000000000E+00;+1.000000000E-01;CC"
    )
    psu.write(b"OUTP OFF")
    assert ask(psu, "MEAS:VOLT?;OUTP?;OUTP:MODE?") == "+0.000000000E+00;0;OFF"


def test_psu_channels_by_selection_and_suffix() -> None:
    psu = SimPsu()
    psu.channels[1].load = 100.0
    psu.write(b"INST:NSEL 2;:VOLT 12;:OUTP2 ON")
    assert ask(psu, "INST?;INST:NSEL?") == "CH2;2"
    assert ask(psu, "OUTP1?;OUTP2?;OUTP?") == "0;1;1"
    assert float(ask(psu, "MEAS:VOLT?")) == 12.0
    psu.channels[1].load = 10.0  # 1.2 A wanted, 1 A limit: constant current
    assert ask(psu, "MEAS:VOLT?;OUTP2:MODE?") == "+1.000000000E+01;CC"
    psu.write(b"INST CH1")
    assert float(ask(psu, "VOLT?")) == 0.0
    assert psu.channels[1].voltage == 12.0


def test_psu_apply() -> None:
    psu = SimPsu()
    psu.write(b"APPL CH3,20,0.5")
    assert psu.selected == 3
    assert ask(psu, "APPL?") == '"+2.000000E+01,+5.000000E-01"'
    psu.write(b"INST:NSEL 1;:APPL 2.5")
    assert (psu.channels[0].voltage, psu.channels[0].current) == (2.5, 1.0)


def test_psu_errors() -> None:
    psu = SimPsu()
    psu.write(b"VOLT 7")  # channel 1 is a 6 V output
    psu.write(b"OUTP4 ON")
    psu.write(b"INST CH9")
    psu.write(b"INST:NSEL 0")
    assert codes(psu) == [-222, -114, -224, -222]


# -- waveform generator -------------------------------------------------------------------------


def arb_block(samples: list[int]) -> bytes:
    payload = struct.pack(f"<{len(samples)}h", *samples)
    digits = str(len(payload)).encode()
    return b"#%d%s%s" % (len(digits), digits, payload)


def test_wavegen_arbitrary_upload_download_roundtrip() -> None:
    gen = SimWaveformGenerator()
    samples = [10, 0x0A0A, 0x3B0A, -1, 32767, -32768, 0x0A3B, 0]  # 0x0A and ';' bytes inside
    gen.write(b"DATA:ARB ramp1," + arb_block(samples) + b"\n")
    assert gen.errors == []
    payload = block_of(gen, b"DATA:ARB? RAMP1")
    assert list(struct.unpack(f"<{len(samples)}h", payload)) == samples
    gen.write(b'SOUR:DATA:ARB:DAC "second",' + arb_block([1] * 8))
    assert ask(gen, "DATA:ARB:CAT?") == '"RAMP1","SECOND"'


def test_wavegen_rejects_bad_uploads() -> None:
    gen = SimWaveformGenerator()
    gen.write(b"DATA:ARB odd,#17abcdefg")  # 7 bytes: not whole int16 points
    gen.write(b"DATA:ARB few," + arb_block([1, 2, 3]))  # below MIN_POINTS
    gen.write(b"DATA:ARB short,#220abc")  # the block claims more than was sent
    gen.write(b"DATA:ARB 9bad," + arb_block([0] * 8))
    gen.write(b"DATA:ARB? nothere")
    assert codes(gen) == [-161, -222, -161, -224, -224]
    assert ask(gen, "DATA:ARB:CAT?") == '""'


def test_wavegen_settings_and_arb_selection() -> None:
    gen = SimWaveformGenerator()
    gen.write(b"FREQ 1 MHZ;VOLT 2;VOLT:OFFS -0.5;:SOUR2:FUNC SQU;:OUTP2 ON")
    assert ask(gen, "FREQ?;VOLT?;VOLT:OFFS?") == (
        "+1.000000000E+06;+2.000000000E+00;-5.000000000E-01"
    )
    assert ask(gen, "FUNC?;SOUR2:FUNC?;OUTP?;OUTP2?") == "SIN;SQU;0;1"
    gen.write(b"FUNC ARB")
    assert codes(gen) == [-221]  # no waveform selected yet
    gen.write(b"DATA:ARB w," + arb_block([0] * 8) + b";:FUNC:ARB w;:FUNC ARB")
    assert ask(gen, "FUNC?;FUNC:ARB?") == 'ARB;"W"'
    gen.write(b"DATA:ARB:DEL w")
    assert codes(gen)[-1] == -221  # in use
    gen.write(b"*RST;:DATA:ARB:DEL w")
    assert ask(gen, "DATA:ARB:CAT?;FREQ?") == '"";+1.000000000E+03'
    gen.write(b"SOUR3:FREQ 1")
    assert codes(gen)[-1] == -114


# -- scope --------------------------------------------------------------------------------------


def test_scope_single_opc_then_trg_raises_srq(clock: FakeClock) -> None:
    scope = SimScope(clock=clock, acquisition_time=0.2)
    seen: list[int] = []
    scope.add_srq_listener(seen.append)
    scope.write(b"*ESE 1;*SRE 32")
    scope.write(b":SINGle;*OPC")
    clock.advance(5)
    scope.poll()
    assert seen == []  # armed, waiting for the trigger
    scope.write(b"*TRG")
    assert scope.next_deadline() == pytest.approx(clock.now + 0.2)
    clock.advance(0.1)
    scope.poll()
    assert seen == []
    clock.advance(0.1)
    scope.poll()
    assert seen == [0x60]
    assert scope.acquisitions == 1
    assert ask(scope, "*ESR?;:ACQ:NUMacquired?") == "1;1"


def test_scope_immediate_trigger_and_opc_query(clock: FakeClock) -> None:
    scope = SimScope(clock=clock, acquisition_time=0.5)
    scope.write(b":TRIG:SOUR IMM;:SING;*OPC?")
    assert scope.read() is None
    clock.advance(0.5)
    assert scope.read() == b"1\n"
    scope.write(b":TRIG:FORC")  # nothing armed: harmless
    assert scope.errors == []


def test_scope_stop_cancels_single(clock: FakeClock) -> None:
    scope = SimScope(clock=clock)
    scope.write(b":SING;:STOP;*OPC")
    assert not scope.operations_pending
    assert scope.event_status == 1
    scope.write(b":SING")
    scope.write(b":TRIG:FORC")
    clock.advance(1)
    scope.poll()
    assert scope.acquisitions == 1


def test_scope_waveform_data_and_preamble() -> None:
    scope = SimScope()
    scope.write(b":ACQ:POIN 2500")
    data = block_of(scope, b":WAV:DATA?")
    assert len(data) == 2500
    assert min(data) >= 20 and max(data) <= 236
    assert ask(scope, ":WAV:FORM WORD;:WAV:FORM?;:WAV:POIN?") == "WORD;2500"
    words = block_of(scope, b":WAVeform:DATA?")
    assert len(words) == 5000
    values = struct.unpack("<2500h", words)
    assert max(values) == 25600 and min(values) == -25600
    fields = ask(scope, ":WAV:PRE?").split(",")
    assert fields[:4] == ["1", "0", "2500", "1"]
    assert float(fields[4]) == pytest.approx(10e-3 / 2500)
    scope.write(b":WAV:SOUR CHAN2;:CHAN2:SCAL 0.5;:CHAN2:OFFS 1")
    assert ask(scope, ":WAV:SOUR?;:CHAN2:SCAL?") == "CHAN2;+5.000000000E-01"
    scope.write(b":WAV:SOUR CHAN9;:ACQ:POIN 10")
    assert codes(scope) == [-224, -222]


def test_scope_waveform_changes_with_each_acquisition() -> None:
    scope = SimScope(acquisition_time=0.0)
    first = block_of(scope, b":WAV:DATA?")
    scope.write(b":TRIG:SOUR IMM;:SING;*WAI")
    assert block_of(scope, b":WAV:DATA?") != first


@pytest.mark.parametrize("size", [0, 1, 255, 256, 1000, 70_000])
def test_scope_test_payload(size: int) -> None:
    scope = SimScope()
    payload = block_of(scope, b":WAV:TEST? %d" % size)
    assert payload == (bytes(range(256)) * (size // 256 + 1))[:size]


def test_test_payload_is_not_copied() -> None:
    scope = SimScope()
    scope.write(b":WAV:TEST? 300000")
    first = scope.read_parts()
    scope.write(b":WAV:TEST? 200000")
    second = scope.read_parts()
    assert first is not None and second is not None
    assert first[0] == b"#6300000"
    view_a, view_b = first[1], second[1]
    assert isinstance(view_a, memoryview) and isinstance(view_b, memoryview)
    assert view_a.obj is view_b.obj is test_pattern(1).obj  # one shared buffer


def test_scope_upload_sink() -> None:
    scope = SimScope()
    payload = bytes(range(256)) * 40 + b"\n"
    scope.write(b":WAV:UPL #%d%d%s" % (len(str(len(payload))), len(payload), payload))
    assert (
        ask(scope, ":WAV:UPL?;UPL:SIZE?") == f"{len(payload)},{zlib.crc32(payload)};{len(payload)}"
    )
