"""Synchronized and periodic acquisition across a group; CSV export."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiotmc
from aiotmc import InstrumentGroup, Measurement, Row
from aiotmc.export import rows_to_csv
from aiotmc.sim.device import SimDevice
from aiotmc.sim.devices import create_device

from .test_group import bench, count_writes, refused_resource


@pytest.fixture(params=["sim", "tcp", "tcp-poll", "usb"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def open_bench(
    devices: dict[str, SimDevice], mode: str, **options: Any
) -> AsyncIterator[InstrumentGroup]:
    """A group over the in-process sim, plain TCP (*OPC?), TCP with polled SRQ or USB."""
    if mode == "tcp-poll":
        options["srq_poll_interval"] = 0.005
    async with (
        bench(devices, mode.removesuffix("-poll")) as resources,
        aiotmc.open_many(resources, strict=True, **options) as group,
    ):
        yield group


async def fetch_waveform(inst: aiotmc.Instrument) -> list[int]:
    values: list[int] = await inst.query_binary_values(":WAV:DATA?", "B")
    return values


def bench_devices() -> dict[str, SimDevice]:
    return {
        "dmm": create_device("dmm", measurement_time=0.002),
        "scope": create_device("scope", acquisition_time=0.002),
        "psu": create_device("psu"),
    }


PLAN = {
    "dmm": Measurement("FETC?", arm=["TRIG:SOUR BUS", "INIT"], convert=float),
    "scope": Measurement(fetch_waveform, arm=":SINGle"),
    "psu": "MEAS:VOLT?",  # not triggered: read when the triggers go out
}


def watch_triggers(devices: dict[str, SimDevice], armed: list[str]) -> list[bool]:
    """Record, at every trigger, whether every armed device had its operation pending."""
    ready: list[bool] = []
    for device in devices.values():
        original = device.handle_trigger

        def handle(original: Any = original) -> None:
            ready.append(all(devices[n].operations_pending for n in armed))
            original()

        device.handle_trigger = handle  # type: ignore[method-assign]
    return ready


async def test_acquire_arms_all_then_triggers_together(mode: str) -> None:
    devices = bench_devices()
    devices["psu"].channels[0].output = True  # type: ignore[attr-defined]
    devices["psu"].channels[0].voltage = 3.3  # type: ignore[attr-defined]
    ready = watch_triggers(devices, ["dmm", "scope"])
    async with open_bench(devices, mode) as group:
        with anyio.fail_after(10):
            row = await group.acquire(PLAN, timeout=5)
    assert row.ok, row.errors
    # the first trigger came after both instruments were armed (so did the second)
    assert len(ready) == 2 and ready[0]
    dmm, scope, psu = row["dmm"], row["scope"], row["psu"]
    assert dmm.value == pytest.approx(1.0, abs=1e-3)
    assert len(scope.value) == 1000 and max(scope.value) > 200
    assert float(psu.value) == pytest.approx(3.3)
    # stamps
    assert row.index == 0 and row.missed == 0 and row.scheduled == row.monotonic
    for sample in row.samples.values():
        assert sample.monotonic >= row.monotonic and sample.wall >= row.wall
    assert dmm.trigger_started is not None and dmm.trigger_sent is not None
    assert dmm.trigger_started <= dmm.trigger_sent
    assert psu.trigger_sent is None and psu.completion is None
    # skew: from the first trigger call starting to the last one returning
    assert row.skew is not None
    starts = [s.trigger_started for s in (dmm, scope)]
    sends = [s.trigger_sent for s in (dmm, scope)]
    assert row.skew == max(sends) - min(starts)  # type: ignore[type-var,operator]
    assert 0 <= row.skew < 1.0
    # completion: by SRQ where there is one, *OPC? otherwise
    method = "opc?" if mode == "tcp" else "srq"
    for sample in (dmm, scope):
        assert sample.completion is not None and sample.completion.method == method
        assert sample.completion.elapsed >= 0.002
        assert sample.monotonic >= sample.completion.completed
    assert devices["scope"].acquisitions == 1  # type: ignore[attr-defined]


async def test_acquire_failures_are_per_member(mode: str) -> None:
    devices = bench_devices()
    devices["psu"].add_raw_query("BROKen?", lambda args: b"n/a\n")  # not a number
    with refused_resource() as dead:
        async with bench(devices, mode.removesuffix("-poll")) as resources:
            options = {"srq_poll_interval": 0.005} if mode == "tcp-poll" else {}
            async with aiotmc.open_many({**resources, "dead": dead}, **options) as group:
                plan = {
                    **PLAN,
                    "psu": Measurement("BROKen?", trigger=False, convert=float),
                    "dead": "*IDN?",
                }
                with anyio.fail_after(10):
                    row = await aiotmc.acquire(group, plan, timeout=5)
    assert set(row.errors) == {"psu", "dead"}, row.errors
    assert isinstance(row["dead"].error, aiotmc.ConnectError)
    assert isinstance(row["psu"].error, ValueError)
    assert row["dmm"].ok and row["scope"].ok
    assert row.values["psu"] is None
    with pytest.raises(aiotmc.ConnectError):
        row["dead"].unwrap()


async def test_acquire_unknown_member() -> None:
    async with open_bench({"dmm": create_device("dmm")}, "sim") as group:
        with pytest.raises(KeyError, match="nope"):
            await group.acquire({"nope": "*IDN?"})
        with pytest.raises(KeyError, match="nope"):
            group.periodic({"nope": "*IDN?"}, 1.0)
        with pytest.raises(ValueError, match="positive"):
            group.periodic({"dmm": "*IDN?"}, 0.0)


async def test_a_member_that_cannot_arm_does_not_hold_up_the_trigger(mode: str) -> None:
    devices = bench_devices()
    ready = watch_triggers(devices, ["dmm", "scope"])
    async with open_bench(devices, mode) as group:
        devices["psu"].latency = float("inf")  # stops answering: it can never be armed
        plan = {**PLAN, "psu": Measurement("MEAS:VOLT?", arm="*CLS")}
        with anyio.fail_after(10):
            row = await group.acquire(plan, timeout=5, arm_timeout=0.5)
        devices["psu"].latency = 0.0
    assert row["dmm"].ok and row["scope"].ok, row.errors
    assert len(ready) == 2 and ready[0]
    assert isinstance(row["psu"].error, aiotmc.ReadTimeout)
    assert "not armed within 0.5 s" in str(row["psu"].error)
    assert row["psu"].monotonic - row.monotonic < 4.5  # given up at arm_timeout
    assert row.skew is not None  # the two that were armed


async def test_member_timeout_bounds_the_whole_acquisition() -> None:
    devices = {"dmm": create_device("dmm"), "psu": create_device("psu")}

    async def stuck_fetch(inst: aiotmc.Instrument) -> str:
        devices["dmm"].latency = float("inf")
        return await inst.query("FETC?", timeout=None)  # only the member's deadline ends it

    async with open_bench(devices, "sim") as group:
        with anyio.fail_after(10):
            row = await group.acquire(
                {"dmm": Measurement(stuck_fetch, arm=["TRIG:SOUR BUS", "INIT"]), "psu": "*IDN?"},
                timeout=1.0,
            )
    error = row["dmm"].error
    assert isinstance(error, aiotmc.ReadTimeout), error
    assert "acquisition not complete within 1.0 s" in str(error)
    assert row["dmm"].completion is not None  # it got as far as the fetch
    assert row["psu"].ok


# -- periodic --------------------------------------------------------------------------------


class ManualClock:
    """A clock that only moves when told to; sleeping jumps to the deadline."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        self.sleeps.append(deadline)
        await anyio.lowlevel.checkpoint()
        self.time = max(self.time, deadline)


async def test_periodic_rows_are_drift_free() -> None:
    period = 0.02
    async with open_bench(
        {"dmm": create_device("dmm"), "psu": create_device("psu")}, "sim"
    ) as group:
        with anyio.fail_after(20):
            rows = [
                row
                async for row in group.periodic(
                    {"dmm": "MEAS:VOLT?", "psu": "MEAS:CURR?"}, period, count=15
                )
            ]
    assert len(rows) == 15
    start = rows[0].scheduled
    previous = -1
    for row in rows:
        # on the absolute grid, k * period from the first row: no accumulated drift
        assert row.scheduled == start + row.index * period
        assert row.index == previous + 1 + row.missed
        previous = row.index
        # never early, and late by far less than a period plus scheduling noise
        assert row.monotonic >= row.scheduled - 1e-6
        assert row.monotonic - row.scheduled < 0.25  # generous for loaded machines
        assert row.ok
    assert rows[-1].monotonic - rows[0].monotonic == pytest.approx(
        rows[-1].index * period, abs=0.25
    )


async def test_periodic_counts_missed_periods_with_a_slow_consumer() -> None:
    clock = ManualClock()
    dmm = create_device("dmm")
    writes = count_writes(dmm)
    period = 1.0
    async with open_bench({"dmm": dmm}, "sim") as group:
        rows: list[Row] = []
        acquisition = aiotmc.periodic(group, {"dmm": "MEAS:VOLT?"}, period, count=6, clock=clock)
        async for row in acquisition:
            rows.append(row)
            # backpressure: exactly one reading per row, none taken ahead of the consumer
            assert len(writes) == len(rows)
            if row.index == 1:
                clock.time += 3.5 * period  # a slow consumer: boundaries 2, 3, 4 pass
            elif row.index == 5:
                clock.time += 0.25 * period  # a little busy: no boundary passes
    assert [r.index for r in rows] == [0, 1, 4, 5, 6, 7]
    assert [r.missed for r in rows] == [0, 0, 2, 0, 0, 0]
    assert acquisition.missed == 2 and acquisition.rows == 6
    assert [r.scheduled for r in rows] == [1000.0 + i for i in (0, 1, 4, 5, 6, 7)]
    # row 4 ran at once (late), the others after sleeping to their boundary
    assert clock.sleeps == [1001.0, 1005.0, 1006.0, 1007.0]
    with pytest.raises(StopAsyncIteration):
        await acquisition.__anext__()


async def test_periodic_with_triggered_members(mode: str) -> None:
    devices = bench_devices()
    async with open_bench(devices, mode) as group:
        with anyio.fail_after(20):
            rows = [row async for row in group.periodic(PLAN, 0.01, count=3, timeout=5)]
    assert all(row.ok for row in rows), [row.errors for row in rows]
    assert devices["scope"].acquisitions == 3  # type: ignore[attr-defined]
    assert all(row.skew is not None for row in rows)


# -- CSV -------------------------------------------------------------------------------------


async def test_csv_round_trip(tmp_path: Path) -> None:
    devices = bench_devices()
    with refused_resource() as dead:
        async with (
            bench(devices, "sim") as resources,
            aiotmc.open_many({**resources, "dead": dead}) as group,
        ):
            plan = {**PLAN, "dead": "*IDN?", "psu": ["MEAS:VOLT?", "MEAS:CURR?"]}
            with anyio.fail_after(20):
                rows = [row async for row in group.periodic(plan, 0.005, count=3, timeout=5)]
    path = tmp_path / "rows.csv"
    assert aiotmc.write_csv(rows, path) == 3
    with path.open(newline="", encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 3
    assert list(table[0])[:6] == ["index", "scheduled", "monotonic", "wall", "missed", "skew"]
    assert "dmm" in table[0] and "dmm.monotonic" in table[0] and "dead.error" in table[0]
    for row, line in zip(rows, table, strict=True):
        assert int(line["index"]) == row.index
        assert float(line["scheduled"]) == row.scheduled  # floats written exactly
        assert float(line["wall"]) == row.wall
        assert int(line["missed"]) == row.missed
        assert float(line["skew"]) == row.skew
        assert float(line["dmm"]) == row["dmm"].value
        assert float(line["dmm.monotonic"]) == row["dmm"].monotonic
        assert [int(v) for v in line["scope"].split(";")] == row["scope"].value
        assert line["psu"].split(";") == row["psu"].value
        assert line["dmm.error"] == "" and line["dead"] == ""
        assert line["dead.error"].startswith("ConnectError: ")
    # an open file, chosen columns, appending without a header
    buffer = io.StringIO()
    aiotmc.write_csv(rows[:1], buffer, names=["dmm"])
    aiotmc.write_csv(rows[1:], buffer, names=["dmm"], header=False)
    lines = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert lines[0] == [
        "index",
        "scheduled",
        "monotonic",
        "wall",
        "missed",
        "skew",
        "dmm",
        "dmm.monotonic",
        "dmm.error",
    ]
    assert len(lines) == 4
    assert rows_to_csv(rows) == path.read_bytes().decode("utf-8")
    assert aiotmc.write_csv([], tmp_path / "empty.csv") == 0


def test_csv_cells() -> None:
    from aiotmc.export import _cell

    assert _cell(None) == ""
    assert _cell(0.1) == "0.1" and float(_cell(1 / 3)) == 1 / 3
    assert _cell(b"\x00\xff") == "00ff"
    assert _cell([1, 2.5, "x"]) == "1;2.5;x"
    assert _cell(True) == "True"
    assert math.isnan(float(_cell(float("nan"))))
