"""open_many, fan-out and acquisition through aiotmc.sync."""

from __future__ import annotations

import aiotmc
import aiotmc.sync
from aiotmc import Measurement
from aiotmc.sim.devices import create_device


def _resources() -> dict[str, tuple[str, dict[str, object]]]:
    return {
        "dmm": ("SIM::dmm::grp", {"device": create_device("dmm")}),
        "psu": ("SIM::psu::grp", {"device": create_device("psu")}),
    }


def test_open_many_fan_out_and_close(sync_backend: str) -> None:
    with aiotmc.sync.open_many({**_resources(), "bad": "TCPIP::bogus name"}) as group:
        assert sorted(group) == ["dmm", "psu"]
        assert list(group.failed) == ["bad"]
        assert group.names == ["dmm", "psu", "bad"]
        idn = group.query_all("*IDN?")
        assert idn["dmm"].unwrap().startswith("aiotmc,SIM-DMM")
        assert idn["psu"].unwrap().startswith("aiotmc,SIM-PSU")
        assert group.write_all("*CLS").ok  # the open members only
        assert group["dmm"].query("*OPC?") == "1"

        async def opc(inst: aiotmc.Instrument) -> str:
            return await inst.query("*OPC?")

        assert group.run_all(opc, names=["dmm", "psu"]).unwrap() == {"dmm": "1", "psu": "1"}
    assert group.closed
    assert group["dmm"].closed
    group.close()  # idempotent


def test_acquire_and_periodic(sync_backend: str) -> None:
    with aiotmc.sync.open_many(_resources()) as group:
        plan = {"dmm": Measurement("READ?", convert=lambda s: s), "psu": "*OPC?"}
        row = group.acquire(plan, timeout=10)
        assert row.ok
        assert row["psu"].value == "1"
        rows = list(group.periodic({"psu": "*OPC?"}, 0.001, count=3, timeout=10))
        assert [r["psu"].value for r in rows] == ["1", "1", "1"]
