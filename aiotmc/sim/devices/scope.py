"""A simulated digital oscilloscope, loosely after the Keysight InfiniiVision SCPI set."""

from __future__ import annotations

import math
import sys
import time
import zlib
from array import array
from collections.abc import Callable
from typing import Final

from ..commands import (
    ILLEGAL_PARAMETER_VALUE,
    Block,
    Call,
    Response,
    ScpiError,
    command,
    format_nr3,
    short_form,
)
from ..device import Operation, SimDevice, test_pattern

__all__ = ["SimScope"]

_PERIOD: Final = 1000  # samples per period of the simulated signal
_TRIGGER_SOURCES: Final = ("BUS", "IMMediate")
_FORMATS: Final = ("BYTE", "WORD")


def _tables() -> dict[str, bytes]:
    byte = bytes(round(128 + 100 * math.sin(2 * math.pi * k / _PERIOD)) for k in range(_PERIOD))
    word = array("h", (round(25600 * math.sin(2 * math.pi * k / _PERIOD)) for k in range(_PERIOD)))
    if sys.byteorder == "big":
        word.byteswap()
    return {"BYTE": byte, "WORD": word.tobytes()}


_TABLES: Final = _tables()


class SimScope(SimDevice):
    """Oscilloscope with ``channels`` inputs showing a sine wave of 10 periods per record.

    ``:SINGle`` arms one acquisition, an operation that completes ``acquisition_time``
    seconds after the trigger: with ``:TRIGger:SOURce BUS`` (the default) a bus trigger,
    ``*TRG`` or ``:TRIGger:FORCe``; with ``IMMediate`` at once. So ``*ESE 1;*SRE 32``,
    ``:SINGle;*OPC`` and ``*TRG`` end in a service request. ``:RUN``/``:STOP`` switch
    continuous mode (which is not an operation). Waveform data (``:WAVeform:DATA?``) is a
    definite block of ``:ACQuire:POINts`` samples, ``BYTE`` (unsigned) or ``WORD`` (int16
    little-endian), scaled as ``:WAVeform:PREamble?`` says; each completed acquisition
    shifts the phase.

    Benchmark helpers: ``:WAVeform:TEST? <n>`` answers a block of ``n`` bytes 00..FF
    repeating (from one cached buffer, never copied by the device), and
    ``:WAVeform:UPLoad <block>`` accepts any block (kept, not copied);
    ``:WAVeform:UPLoad?`` answers ``<bytes>,<crc32>`` of it (the CRC costs ~25 ms per
    100 MB) and ``:WAVeform:UPLoad:SIZE?`` just ``<bytes>``.
    """

    MAX_POINTS: Final = 100_000_000
    MAX_TEST_BYTES: Final = 999_999_999

    points: int
    trigger_source: str
    running: bool
    waveform_format: str
    waveform_source: int
    timebase_scale: float
    channel_scale: list[float]
    channel_offset: list[float]

    def __init__(
        self,
        *,
        identity: str = "aiotmc,SIM-SCOPE,0001,0.1",
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        acquisition_time: float = 0.01,
        channels: int = 4,
    ) -> None:
        if channels < 1:
            raise ValueError("a scope needs at least one channel")
        #: Seconds from trigger to the end of a ``:SINGle`` acquisition.
        self.acquisition_time = acquisition_time
        self.channel_count = channels
        #: Completed single acquisitions since power-on.
        self.acquisitions = 0
        self._pending: Operation | None = None
        self._upload = memoryview(b"")
        super().__init__(identity=identity, latency=latency, clock=clock)

    def reset(self) -> None:
        super().reset()
        self._pending = None
        self.points = 1000
        self.trigger_source = "BUS"
        self.running = True
        self.waveform_format = "BYTE"
        self.waveform_source = 1
        self.timebase_scale = 1e-3
        self.channel_scale = [1.0] * self.channel_count
        self.channel_offset = [0.0] * self.channel_count

    # -- acquisition ------------------------------------------------------------------------

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self.cancel_operations()
            self._pending = None

    def _acquired(self) -> None:
        self._pending = None
        self.acquisitions += 1

    def _waveform(self) -> memoryview:
        table = _TABLES[self.waveform_format]
        width = len(table) // _PERIOD
        shift = (self.acquisitions * 37 % _PERIOD) * width
        rotated = table[shift:] + table[:shift]
        size = self.points * width
        return memoryview(rotated * -(-size // len(rotated)))[:size]

    @command(":RUN")
    def _run_cmd(self, call: Call) -> Response:
        self._cancel_pending()
        self.running = True
        return None

    @command(":STOP")
    def _stop(self, call: Call) -> Response:
        self._cancel_pending()
        self.running = False
        return None

    @command(":SINGle")
    def _single(self, call: Call) -> Response:
        self._cancel_pending()
        self.running = False
        self._pending = self.start_operation(
            self.acquisition_time,
            wait_for_trigger=self.trigger_source == "BUS",
            on_complete=self._acquired,
        )
        return None

    @command(":TRIGger:FORCe")
    def _force(self, call: Call) -> Response:
        self.handle_trigger()
        return None

    @command(":TRIGger:SOURce", args=1)
    def _trig_source_set(self, call: Call) -> Response:
        self.trigger_source = call.choice(0, _TRIGGER_SOURCES)
        return None

    @command(":TRIGger:SOURce?")
    def _trig_source_query(self, call: Call) -> Response:
        return short_form(self.trigger_source).upper()

    @command(":ACQuire:POINts", args=1)
    def _points_set(self, call: Call) -> Response:
        self.points = call.integer(0, minimum=100, maximum=self.MAX_POINTS)
        return None

    @command(":ACQuire:POINts?")
    def _points_query(self, call: Call) -> Response:
        return self.points

    @command(":ACQuire:NUMacquired?")
    def _acquired_query(self, call: Call) -> Response:
        return self.acquisitions

    @command(":TIMebase:SCALe", args=1)
    def _timebase_set(self, call: Call) -> Response:
        self.timebase_scale = call.number(0, minimum=1e-9, maximum=50.0, unit="S")
        return None

    @command(":TIMebase:SCALe?")
    def _timebase_query(self, call: Call) -> Response:
        return self.timebase_scale

    @command(":CHANnel#:SCALe", args=1)
    def _chan_scale_set(self, call: Call) -> Response:
        index = call.suffix(0, maximum=self.channel_count) - 1
        self.channel_scale[index] = call.number(0, minimum=1e-3, maximum=10.0, unit="V")
        return None

    @command(":CHANnel#:SCALe?")
    def _chan_scale_query(self, call: Call) -> Response:
        return self.channel_scale[call.suffix(0, maximum=self.channel_count) - 1]

    @command(":CHANnel#:OFFSet", args=1)
    def _chan_offset_set(self, call: Call) -> Response:
        index = call.suffix(0, maximum=self.channel_count) - 1
        self.channel_offset[index] = call.number(0, minimum=-100.0, maximum=100.0, unit="V")
        return None

    @command(":CHANnel#:OFFSet?")
    def _chan_offset_query(self, call: Call) -> Response:
        return self.channel_offset[call.suffix(0, maximum=self.channel_count) - 1]

    # -- waveform transfer ------------------------------------------------------------------

    @command(":WAVeform:SOURce", args=1)
    def _wav_source_set(self, call: Call) -> Response:
        token = call.text(0).strip().upper()
        digits = token.lstrip("CHANEL")
        if token[: len(token) - len(digits)] not in ("CHAN", "CHANNEL") or not digits.isdigit():
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, token[:20])
        number = int(digits)
        if not 1 <= number <= self.channel_count:
            raise ScpiError(ILLEGAL_PARAMETER_VALUE, token[:20])
        self.waveform_source = number
        return None

    @command(":WAVeform:SOURce?")
    def _wav_source_query(self, call: Call) -> Response:
        return f"CHAN{self.waveform_source}"

    @command(":WAVeform:FORMat", args=1)
    def _wav_format_set(self, call: Call) -> Response:
        self.waveform_format = call.choice(0, _FORMATS)
        return None

    @command(":WAVeform:FORMat?")
    def _wav_format_query(self, call: Call) -> Response:
        return self.waveform_format

    @command(":WAVeform:POINts?")
    def _wav_points(self, call: Call) -> Response:
        return self.points

    @command(":WAVeform:PREamble?")
    def _preamble(self, call: Call) -> Response:
        """format,type,points,count,xincrement,xorigin,xreference,yincrement,yorigin,yref."""
        word = self.waveform_format == "WORD"
        index = self.waveform_source - 1
        span = 10 * self.timebase_scale
        yinc = self.channel_scale[index] * 8 / (51200 if word else 200)
        fields = [
            "1" if word else "0",
            "0",
            str(self.points),
            "1",
            format_nr3(span / self.points, 6),
            format_nr3(-span / 2, 6),
            "0",
            format_nr3(yinc, 6),
            format_nr3(self.channel_offset[index], 6),
            "0" if word else "128",
        ]
        return ",".join(fields)

    @command(":WAVeform:DATA?")
    def _wav_data(self, call: Call) -> Response:
        return Block(self._waveform())

    @command(":WAVeform:TEST?", args=1)
    def _wav_test(self, call: Call) -> Response:
        return Block(test_pattern(call.integer(0, minimum=0, maximum=self.MAX_TEST_BYTES)))

    @command(":WAVeform:UPLoad", args=1)
    def _wav_upload(self, call: Call) -> Response:
        self._upload = call.block(0)
        return None

    @command(":WAVeform:UPLoad?")
    def _wav_upload_query(self, call: Call) -> Response:
        return f"{len(self._upload)},{zlib.crc32(self._upload)}"

    @command(":WAVeform:UPLoad:SIZE?")
    def _wav_upload_size(self, call: Call) -> Response:
        return len(self._upload)
