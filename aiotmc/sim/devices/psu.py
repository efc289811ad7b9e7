"""A simulated multi-channel DC power supply, loosely after the Keysight E3631A/E36300."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..commands import (
    ILLEGAL_PARAMETER_VALUE,
    Call,
    Response,
    ScpiError,
    command,
    format_nr3,
)
from ..device import SimDevice

__all__ = ["PsuChannel", "SimPsu"]


@dataclass(slots=True)
class PsuChannel:
    """Settings and limits of one output; ``load`` (ohms) is what is connected to it."""

    max_voltage: float
    max_current: float
    load: float = 10.0
    voltage: float = 0.0
    current: float = 1.0
    output: bool = False

    def measure(self) -> tuple[float, float, str]:
        """(voltage, current, mode) at the terminals: CV, CC, or OFF."""
        if not self.output:
            return 0.0, 0.0, "OFF"
        wanted = self.voltage / self.load if self.load > 0 else float("inf")
        if wanted <= self.current:
            return self.voltage, wanted, "CV"
        return self.current * self.load, self.current, "CC"


class SimPsu(SimDevice):
    """DC supply with ``channels`` outputs (default 3: 0-6 V/5 A, 0-25 V/1 A, 0-25 V/1 A).

    Commands act on the selected channel (``INSTrument:NSELect 1..n``,
    ``INSTrument[:SELect] CH<n>``) unless a suffix names one (``OUTPut2``):
    ``[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]``, ``[SOURce:]CURRent[...]``,
    ``OUTPut#[:STATe]``, ``OUTPut#:MODE?`` (CV/CC/OFF),
    ``MEASure[:SCALar]:VOLTage[:DC]?``, ``MEASure[:SCALar]:CURRent[:DC]?``,
    ``APPLy [CH<n>,]<volts>[,<amps>]`` and ``APPLy?``. The load on each output is a
    resistor (``channels[i].load``); an output in current limit regulates current (CC).
    """

    def __init__(
        self,
        *,
        identity: str = "aiotmc,SIM-PSU,0001,0.1",
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        limits: Sequence[tuple[float, float]] = ((6.0, 5.0), (25.0, 1.0), (25.0, 1.0)),
    ) -> None:
        self._limits = tuple(limits)
        if not self._limits:
            raise ValueError("a power supply needs at least one channel")
        #: The outputs, index 0 is channel 1.
        self.channels = [PsuChannel(v, i) for v, i in self._limits]
        self.selected = 1
        super().__init__(identity=identity, latency=latency, clock=clock)

    def reset(self) -> None:
        super().reset()
        for channel in self.channels:
            channel.voltage = 0.0
            channel.current = min(1.0, channel.max_current)
            channel.output = False
        self.selected = 1

    # -- helpers ----------------------------------------------------------------------------

    def _channel(self, number: int | None = None) -> PsuChannel:
        return self.channels[(number or self.selected) - 1]

    def _suffix_channel(self, call: Call) -> PsuChannel:
        return self._channel(call.suffix(0, default=self.selected, maximum=len(self.channels)))

    def _parse_channel(self, token: str) -> int | None:
        token = token.strip().upper()
        for prefix in ("CH", "OUTPUT", "OUTP", "OUT", "P"):
            if token.startswith(prefix) and token[len(prefix) :].isdigit():
                number = int(token[len(prefix) :])
                if 1 <= number <= len(self.channels):
                    return number
        return None

    # -- commands ---------------------------------------------------------------------------

    @command("INSTrument[:SELect]", args=1)
    def _inst_select(self, call: Call) -> Response:
        number = self._parse_channel(call.text(0))
        if number is None:
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, call.text(0)[:20])
        self.selected = number
        return None

    @command("INSTrument[:SELect]?")
    def _inst_select_query(self, call: Call) -> Response:
        return f"CH{self.selected}"

    @command("INSTrument:NSELect", args=1)
    def _inst_nselect(self, call: Call) -> Response:
        self.selected = call.integer(0, minimum=1, maximum=len(self.channels))
        return None

    @command("INSTrument:NSELect?")
    def _inst_nselect_query(self, call: Call) -> Response:
        return self.selected

    @command("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]", args=1)
    def _volt_set(self, call: Call) -> Response:
        channel = self._channel()
        channel.voltage = call.number(0, minimum=0.0, maximum=channel.max_voltage, unit="V")
        return None

    @command("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _volt_query(self, call: Call) -> Response:
        return self._channel().voltage

    @command("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]", args=1)
    def _curr_set(self, call: Call) -> Response:
        channel = self._channel()
        channel.current = call.number(0, minimum=0.0, maximum=channel.max_current, unit="A")
        return None

    @command("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]?")
    def _curr_query(self, call: Call) -> Response:
        return self._channel().current

    @command("OUTPut#[:STATe]", args=1)
    def _output_set(self, call: Call) -> Response:
        self._suffix_channel(call).output = call.boolean(0)
        return None

    @command("OUTPut#[:STATe]?")
    def _output_query(self, call: Call) -> Response:
        return self._suffix_channel(call).output

    @command("OUTPut#:MODE?")
    def _output_mode(self, call: Call) -> Response:
        return self._suffix_channel(call).measure()[2]

    @command("MEASure[:SCALar]:VOLTage[:DC]?")
    def _meas_volt(self, call: Call) -> Response:
        return self._channel().measure()[0]

    @command("MEASure[:SCALar]:CURRent[:DC]?")
    def _meas_curr(self, call: Call) -> Response:
        return self._channel().measure()[1]

    @command("APPLy", args=(1, 3))
    def _apply(self, call: Call) -> Response:
        first = 0
        number = self._parse_channel(call.text(0))
        if number is not None:
            first = 1
        elif len(call.args) > 2:
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"channel {call.text(0)[:20]!r}")
        channel = self._channel(number)
        voltage = call.number(first, minimum=0.0, maximum=channel.max_voltage, unit="V")
        current = channel.current
        if len(call.args) > first + 1:
            current = call.number(first + 1, minimum=0.0, maximum=channel.max_current, unit="A")
        if number is not None:
            self.selected = number
        channel.voltage, channel.current = voltage, current
        return None

    @command("APPLy?")
    def _apply_query(self, call: Call) -> Response:
        channel = self._channel()
        return f'"{format_nr3(channel.voltage, 6)},{format_nr3(channel.current, 6)}"'
