"""A simulated arbitrary waveform generator, loosely after the Keysight 33500B SCPI set."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..commands import (
    DATA_OUT_OF_RANGE,
    ILLEGAL_PARAMETER_VALUE,
    INVALID_BLOCK_DATA,
    SETTINGS_CONFLICT,
    Block,
    Call,
    Response,
    ScpiError,
    command,
    short_form,
)
from ..device import SimDevice

__all__ = ["SimWaveformGenerator", "WavegenChannel"]

FUNCTIONS: Final = ("SINusoid", "SQUare", "RAMP", "PULSe", "NOISe", "DC", "ARBitrary")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,23}")


@dataclass(slots=True)
class WavegenChannel:
    """The settings of one output."""

    function: str = "SINusoid"
    frequency: float = 1000.0
    amplitude: float = 0.1
    offset: float = 0.0
    output: bool = False
    arbitrary: str = ""


class SimWaveformGenerator(SimDevice):
    """Function/arbitrary waveform generator with ``channels`` outputs (default 2).

    ``SOURce#`` / ``OUTPut#`` suffixes pick the channel (default 1). Commands:
    ``[SOURce#:]FUNCtion``, ``[SOURce#:]FREQuency``, ``[SOURce#:]VOLTage[:AMPLitude]``,
    ``[SOURce#:]VOLTage:OFFSet``, ``OUTPut#[:STATe]``,
    ``[SOURce#:]DATA:ARBitrary <name>,<block>`` (int16 little-endian samples, between
    ``MIN_POINTS`` and ``MAX_POINTS``; an odd byte count is -161), ``DATA:ARBitrary?
    <name>`` (the samples as a block), ``DATA:ARBitrary:CATalog?``, ``DATA:ARBitrary:DELete
    <name>`` and ``[SOURce#:]FUNCtion:ARBitrary <name>``. Waveforms survive ``*RST``.
    """

    MIN_POINTS: Final = 8
    MAX_POINTS: Final = 64 * 1024 * 1024

    def __init__(
        self,
        *,
        identity: str = "aiotmc,SIM-WAVEGEN,0001,0.1",
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        channels: int = 2,
    ) -> None:
        if channels < 1:
            raise ValueError("a waveform generator needs at least one channel")
        #: Outputs, index 0 is channel 1.
        self.channels = [WavegenChannel() for _ in range(channels)]
        #: Uploaded arbitrary waveforms by upper-case name: int16 little-endian bytes.
        self.waveforms: dict[str, bytes] = {}
        super().__init__(identity=identity, latency=latency, clock=clock)

    def reset(self) -> None:
        super().reset()
        self.channels = [WavegenChannel() for _ in self.channels]

    def _ch(self, call: Call) -> WavegenChannel:
        return self.channels[call.suffix(0, maximum=len(self.channels)) - 1]

    def _name(self, call: Call, index: int) -> str:
        name = call.string(index)
        if not _NAME.fullmatch(name):
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"waveform name {name[:30]!r}")
        return name.upper()

    def _known(self, call: Call, index: int) -> str:
        name = self._name(call, index)
        if name not in self.waveforms:
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"no waveform named {name!r}")
        return name

    # -- settings ---------------------------------------------------------------------------

    @command("[SOURce#:]FUNCtion[:SHAPe]", args=1)
    def _func_set(self, call: Call) -> Response:
        channel = self._ch(call)
        function = call.choice(0, FUNCTIONS)
        if function == "ARBitrary" and not channel.arbitrary:
            raise ScpiError(SETTINGS_CONFLICT, "no arbitrary waveform selected")
        channel.function = function
        return None

    @command("[SOURce#:]FUNCtion[:SHAPe]?")
    def _func_query(self, call: Call) -> Response:
        return short_form(self._ch(call).function).upper()

    @command("[SOURce#:]FREQuency[:CW]", args=1)
    def _freq_set(self, call: Call) -> Response:
        self._ch(call).frequency = call.number(
            0, minimum=1e-6, maximum=20e6, default=1000.0, unit="HZ"
        )
        return None

    @command("[SOURce#:]FREQuency[:CW]?")
    def _freq_query(self, call: Call) -> Response:
        return self._ch(call).frequency

    @command("[SOURce#:]VOLTage[:LEVel][:IMMediate][:AMPLitude]", args=1)
    def _ampl_set(self, call: Call) -> Response:
        self._ch(call).amplitude = call.number(0, minimum=1e-3, maximum=10.0, default=0.1, unit="V")
        return None

    @command("[SOURce#:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _ampl_query(self, call: Call) -> Response:
        return self._ch(call).amplitude

    @command("[SOURce#:]VOLTage[:LEVel][:IMMediate]:OFFSet", args=1)
    def _offset_set(self, call: Call) -> Response:
        self._ch(call).offset = call.number(0, minimum=-5.0, maximum=5.0, default=0.0, unit="V")
        return None

    @command("[SOURce#:]VOLTage[:LEVel][:IMMediate]:OFFSet?")
    def _offset_query(self, call: Call) -> Response:
        return self._ch(call).offset

    @command("OUTPut#[:STATe]", args=1)
    def _output_set(self, call: Call) -> Response:
        self._ch(call).output = call.boolean(0)
        return None

    @command("OUTPut#[:STATe]?")
    def _output_query(self, call: Call) -> Response:
        return self._ch(call).output

    # -- arbitrary waveforms ----------------------------------------------------------------

    @command("[SOURce#:]DATA:ARBitrary[:DAC]", args=2)
    def _arb_upload(self, call: Call) -> Response:
        name = self._name(call, 0)
        payload = call.block(1)
        if len(payload) % 2:
            raise ScpiError(INVALID_BLOCK_DATA, f"{len(payload)} bytes is not whole int16 points")
        points = len(payload) // 2
        if not self.MIN_POINTS <= points <= self.MAX_POINTS:
            raise ScpiError(
                DATA_OUT_OF_RANGE, f"{points} points (need {self.MIN_POINTS}..{self.MAX_POINTS})"
            )
        self.waveforms[name] = payload.tobytes()
        return None

    @command("[SOURce#:]DATA:ARBitrary[:DAC]?", args=1)
    def _arb_download(self, call: Call) -> Response:
        return Block(self.waveforms[self._known(call, 0)])

    @command("[SOURce#:]DATA:ARBitrary:CATalog?")
    def _arb_catalog(self, call: Call) -> Response:
        if not self.waveforms:
            return '""'
        return ",".join(f'"{name}"' for name in self.waveforms)

    @command("[SOURce#:]DATA:ARBitrary:DELete", args=1)
    def _arb_delete(self, call: Call) -> Response:
        name = self._known(call, 0)
        for channel in self.channels:
            if channel.arbitrary == name:
                raise ScpiError(SETTINGS_CONFLICT, f"{name} is in use")
        del self.waveforms[name]
        return None

    @command("[SOURce#:]FUNCtion:ARBitrary", args=1)
    def _arb_select(self, call: Call) -> Response:
        self._ch(call).arbitrary = self._known(call, 0)
        return None

    @command("[SOURce#:]FUNCtion:ARBitrary?")
    def _arb_selected(self, call: Call) -> Response:
        return f'"{self._ch(call).arbitrary}"'
