"""bluesky's RunEngine drives ScpiDmm on a simulated DMM: the documents of ``count``, moves
of read-write signals, bus triggering, typed errors.

asyncio only (ophyd-async's loop): the RunEngine runs its own loop in a thread.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import bluesky.plan_stubs as bps
import bluesky.plans as bp
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus
from ophyd_async.core import NotConnectedError, init_devices, set_mock_value

import aiotmc
from aiotmc import ConnectError, InstrumentError, ResourceNotFoundError
from aiotmc.bluesky import ScpiDmm, TriggerSource
from aiotmc.sim.devices import SimDmm

from .conftest import in_loop

Documents = list[tuple[str, dict[str, Any]]]


def _readings_of_twin(count: int, **sim_options: Any) -> list[float]:
    """What a DMM built like the one under test measures ``count`` times (READ?)."""
    twin = SimDmm(**sim_options)

    async def main() -> list[float]:
        async with aiotmc.open("SIM::bluesky::twin", device=twin) as inst:
            return [float(await inst.query("READ?")) for _ in range(count)]

    return anyio.run(main)


def test_count_emits_start_descriptor_events_and_stop(
    RE: RunEngine,
    dmm: tuple[ScpiDmm, SimDmm],
) -> None:
    device, _sim = dmm
    docs: Documents = []
    RE(bp.count([device], num=5), lambda name, doc: docs.append((name, doc)))

    assert [name for name, _ in docs] == ["start", "descriptor", *["event"] * 5, "stop"]
    start = docs[0][1]
    assert start["plan_name"] == "count"
    assert start["detectors"] == ["dmm"]
    assert start["num_points"] == 5

    descriptor = docs[1][1]
    assert descriptor["name"] == "primary"
    assert descriptor["data_keys"]["dmm-voltage"] == {
        "dtype": "number",
        "dtype_numpy": "<f8",
        "shape": [],
        "source": "scpi://SIM::bluesky::dmm/FETCh?",
        "units": "V",
        "precision": 6,
        "object_name": "dmm",
    }
    assert descriptor["hints"] == {"dmm": {"fields": ["dmm-voltage"]}}
    config = descriptor["configuration"]["dmm"]
    assert config["data"] == {
        "dmm-voltage_range": 1.0,  # auto range for a 1 V input
        "dmm-auto_range": True,
        "dmm-trigger_source": TriggerSource.IMMEDIATE,
    }
    assert config["data_keys"]["dmm-trigger_source"]["choices"] == ["IMMediate", "BUS", "EXTernal"]
    assert config["data_keys"]["dmm-trigger_source"]["dtype"] == "string"
    assert config["data_keys"]["dmm-auto_range"]["dtype"] == "boolean"
    assert config["data_keys"]["dmm-voltage_range"]["source"].endswith("/VOLTage:DC:RANGe?")

    events = [doc for name, doc in docs if name == "event"]
    assert [e["seq_num"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["descriptor"] == descriptor["uid"] for e in events)
    values = [e["data"]["dmm-voltage"] for e in events]
    assert values == _readings_of_twin(5, noise=1e-3, seed=11)
    assert len(set(values)) == 5  # five measurements, not one read five times
    stamps = [e["timestamps"]["dmm-voltage"] for e in events]
    assert stamps == sorted(stamps) and start["time"] - 5 < stamps[0] <= docs[-1][1]["time"]

    stop = docs[-1][1]
    assert stop["exit_status"] == "success"
    assert stop["num_events"] == {"primary": 5}
    assert stop["run_start"] == start["uid"]


def test_mv_changes_the_instrument(
    RE: RunEngine,
    dmm: tuple[ScpiDmm, SimDmm],
) -> None:
    device, sim = dmm
    RE(bps.mv(device.voltage_range, 100.0))
    assert float(in_loop(RE, device.link.instrument.query("VOLT:RANG?"))) == 100.0
    assert in_loop(RE, device.link.instrument.query("VOLT:RANG:AUTO?")) == "0"
    assert sim.range == 100.0 and sim.auto_range is False
    assert in_loop(RE, device.voltage_range.get_value()) == 100.0
    location = in_loop(RE, device.voltage_range.locate())
    assert location == {"setpoint": 100.0, "readback": 100.0}

    RE(bps.abs_set(device.auto_range, True, wait=True))
    assert in_loop(RE, device.link.instrument.query("VOLT:RANG:AUTO?")) == "1"


def test_count_with_a_bus_trigger(
    RE: RunEngine,
    dmm: tuple[ScpiDmm, SimDmm],
) -> None:
    device, sim = dmm
    RE(bps.mv(device.trigger_source, TriggerSource.BUS))
    assert in_loop(RE, device.link.instrument.query("TRIG:SOUR?")) == "BUS"
    docs: Documents = []
    RE(bp.count([device], num=2), lambda name, doc: docs.append((name, doc)))
    values = [doc["data"]["dmm-voltage"] for name, doc in docs if name == "event"]
    assert values == _readings_of_twin(2, noise=1e-3, seed=11)
    assert docs[-1][1]["exit_status"] == "success"
    assert sim.trigger_source == "BUS"


def test_an_instrument_error_fails_the_move_with_instrument_error(
    RE: RunEngine,
    dmm: tuple[ScpiDmm, SimDmm],
) -> None:
    device, sim = dmm
    with pytest.raises(FailedStatus) as caught:
        RE(bps.mv(device.voltage_range, 5000.0))
    error = caught.value.__cause__
    assert isinstance(error, InstrumentError)
    assert error.code == -222
    assert sim.range == 10.0  # unchanged
    assert in_loop(RE, device.link.instrument.query("SYST:ERR?")).startswith("+0")  # drained
    RE(bp.count([device], num=1))  # still usable


def test_connect_failures_keep_their_aiotmc_type(RE: RunEngine) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NotConnectedError) as caught, init_devices():
        absent = ScpiDmm("SIM::nosuchmodel")  # noqa: F841 - init_devices finds it by name
        refused = ScpiDmm(f"TCPIP0::127.0.0.1::{port}::SOCKET", connect_timeout=5)  # noqa: F841
    errors = caught.value.sub_errors
    assert set(errors) == {"absent", "refused"}
    assert isinstance(errors["absent"], ResourceNotFoundError)
    assert isinstance(errors["refused"], ConnectError)


def test_devices_close_and_reconnect(RE: RunEngine) -> None:
    device = ScpiDmm("SIM::bluesky::again", device=SimDmm(), name="again")
    in_loop(RE, device.connect())
    instrument = device.link.instrument
    in_loop(RE, device.aclose())
    assert instrument.closed and not device.link.is_open
    in_loop(RE, device.aclose())  # idempotent
    in_loop(RE, device.connect())  # opens again
    assert device.link.is_open and device.link.instrument is not instrument
    RE(bp.count([device], num=1))
    RE(bps.wait_for([device.aclose]))  # closing from a plan, as docs/bluesky.md says
    assert not device.link.is_open


def test_mock_mode_opens_nothing(RE: RunEngine) -> None:
    device = ScpiDmm("SIM::nosuchmodel", name="mocked")
    in_loop(RE, device.connect(mock=True))
    assert not device.link.is_open
    set_mock_value(device.voltage, 1.5)
    docs: Documents = []
    RE(bp.count([device], num=1), lambda name, doc: docs.append((name, doc)))
    (event,) = [doc for name, doc in docs if name == "event"]
    assert event["data"]["mocked-voltage"] == 1.5
