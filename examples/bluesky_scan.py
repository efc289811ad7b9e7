"""A Bluesky scan over aiotmc instruments: step a power supply, measure with a DMM.

Needs ``pip install 'aiotmc[bluesky]'``. The instruments are simulators wired together (the
DMM measures output 1 of the supply); with real ones, give their resource names instead
(``PowerSupply("TCPIP0::192.168.1.21::5025::SOCKET")``) and drop ``device=``.

    python examples/bluesky_scan.py --points 6
"""

from __future__ import annotations

import argparse
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import StandardReadableFormat, init_devices

from aiotmc.bluesky import ScpiDevice, ScpiDmm, ScpiLink, scpi_signal_r, scpi_signal_rw
from aiotmc.sim.devices import SimDmm, SimPsu


class PowerSupply(ScpiDevice):
    """Output 1 of a bench supply: the set voltage moves, the measured values are read."""

    def __init__(self, resource: str, name: str = "", **open_options: Any) -> None:
        link = ScpiLink(resource, **open_options)
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.voltage = scpi_signal_rw(link, "VOLT", float, units="V", precision=3)
        with self.add_children_as_readables(StandardReadableFormat.UNCACHED_SIGNAL):
            self.current = scpi_signal_r(link, "MEAS:CURR?", float, units="A")
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.output = scpi_signal_rw(link, "OUTP", bool)
        super().__init__(link, name=name)


class WiredDmm(SimDmm):
    """A simulated DMM whose input is output 1 of a simulated supply."""

    def __init__(self, psu: SimPsu) -> None:
        self.psu = psu
        super().__init__(noise=1e-4)

    @property  # type: ignore[override]
    def input_voltage(self) -> float:
        return self.psu.channels[0].measure()[0]

    @input_voltage.setter
    def input_voltage(self, value: float) -> None:
        pass  # set by the supply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=6)
    args = parser.parse_args()

    psu_sim = SimPsu()
    RE = RunEngine({})
    with init_devices():  # names the devices and opens them in the RunEngine's loop
        psu = PowerSupply("SIM::example::psu", device=psu_sim)
        dmm = ScpiDmm("SIM::example::dmm", device=WiredDmm(psu_sim))

    def show(name: str, doc: dict[str, Any]) -> None:
        if name == "event":
            data = doc["data"]
            print(f"set {data['psu-voltage']:5.2f} V  measured {data['dmm-voltage']:8.5f} V")
        elif name == "stop":
            print(f"exit_status={doc['exit_status']} events={doc['num_events']}")

    try:
        RE(bps.mv(psu.output, True))
        RE(bp.scan([dmm, psu], psu.voltage, 0.0, 5.0, args.points), show)
    finally:
        for device in (psu, dmm):  # close the instruments in the loop that opened them
            call_in_bluesky_event_loop(device.aclose())


if __name__ == "__main__":
    main()
