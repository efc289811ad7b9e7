"""A simulated digital multimeter (DC volts), loosely after the Keysight 3446x SCPI set."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final

from ..commands import (
    DATA_STALE,
    INIT_IGNORED,
    TRIGGER_DEADLOCK,
    Call,
    Later,
    Response,
    ScpiError,
    command,
    format_nr3,
    short_form,
)
from ..device import SimDevice

__all__ = ["SimDmm"]

_TRIGGER_SOURCES: Final = ("IMMediate", "BUS", "EXTernal")
_OVERLOAD: Final = 9.9e37
_MAX_SAMPLES: Final = 1_000_000


class SimDmm(SimDevice):
    """DC voltmeter with ranges 0.1..1000 V, sample count and triggering.

    The reading is ``input_voltage`` plus Gaussian noise of ``noise`` x range drawn from
    ``random.Random(seed)`` (reproducible). Each sample takes ``measurement_time`` s;
    ``INITiate`` starts a measurement (an operation ``*OPC`` waits for), which waits for a
    bus trigger (``*TRG``) when ``TRIGger:SOURce BUS``. Commands: ``CONFigure:VOLTage[:DC]``,
    ``CONFigure?``, ``MEASure:VOLTage[:DC]?``, ``READ?``, ``FETCh?``, ``INITiate``,
    ``[SENSe:]VOLTage[:DC]:RANGe[:AUTO]``, ``SAMPle:COUNt``, ``TRIGger:SOURce``.
    """

    RANGES: Final = (0.1, 1.0, 10.0, 100.0, 1000.0)

    range: float
    auto_range: bool
    sample_count: int
    trigger_source: str
    readings: list[float]

    def __init__(
        self,
        *,
        identity: str = "aiotmc,SIM-DMM,0001,0.1",
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        input_voltage: float = 1.0,
        noise: float = 1e-6,
        measurement_time: float = 0.0,
    ) -> None:
        #: The voltage at the input terminals; tests change it at will.
        self.input_voltage = input_voltage
        self.noise = noise
        self.measurement_time = measurement_time
        self._rng = random.Random(seed)
        super().__init__(identity=identity, latency=latency, clock=clock)

    def reset(self) -> None:
        super().reset()
        self.range = 10.0
        self.auto_range = True
        self.sample_count = 1
        self.trigger_source = "IMMediate"
        self.readings = []
        self._measuring = False

    # -- model ------------------------------------------------------------------------------

    def _effective_range(self) -> float:
        if not self.auto_range:
            return self.range
        level = abs(self.input_voltage)
        return next((r for r in self.RANGES if level <= r * 1.2), self.RANGES[-1])

    def _sample(self) -> float:
        rng = self._effective_range()
        value = self.input_voltage + self._rng.gauss(0.0, self.noise * rng)
        return _OVERLOAD if abs(value) > rng * 1.2 else value

    def _initiate(self) -> None:
        if self._measuring:
            raise ScpiError(INIT_IGNORED, "measurement in progress")
        self.readings = []
        self._measuring = True
        self.start_operation(
            self.measurement_time * self.sample_count,
            wait_for_trigger=self.trigger_source != "IMMediate",
            on_complete=self._measured,
        )

    def _measured(self) -> None:
        self._measuring = False
        self.readings = [self._sample() for _ in range(self.sample_count)]

    def _fetch(self) -> Response:
        if not self.readings:
            raise ScpiError(DATA_STALE, "no readings: INITiate first")
        return list(self.readings)

    def _configure(self, call: Call) -> None:
        if call.args:
            token = call.text(0).strip().upper()
            if token in ("AUTO", "DEF", "DEFAULT"):
                self.auto_range = True
            else:
                self.range = self._pick_range(call)
                self.auto_range = False
        if len(call.args) > 1:
            call.number(1, minimum=0.0, maximum=self.range, default=0.0)

    def _pick_range(self, call: Call) -> float:
        value = call.number(0, minimum=0.0, maximum=1000.0, default=10.0, unit="V")
        return next(r for r in self.RANGES if value <= r)

    # -- commands ---------------------------------------------------------------------------

    @command("CONFigure:VOLTage[:DC]", args=(0, 2))
    def _conf_volt(self, call: Call) -> Response:
        self._configure(call)
        return None

    @command("CONFigure?")
    def _conf_query(self, call: Call) -> Response:
        rng = self._effective_range()
        return f'"VOLT {format_nr3(rng, 6)},{format_nr3(rng * 3e-7, 6)}"'

    @command("MEASure:VOLTage[:DC]?", args=(0, 2))
    def _meas_volt(self, call: Call) -> Response:
        self._configure(call)
        self.sample_count = 1
        self.trigger_source = "IMMediate"
        return self._read(call)

    @command("READ?")
    def _read(self, call: Call) -> Response:
        if self.trigger_source == "BUS":
            raise ScpiError(TRIGGER_DEADLOCK, "READ? with TRIGger:SOURce BUS")
        self._initiate()
        return Later(self._fetch)

    @command("FETCh?")
    def _fetch_query(self, call: Call) -> Response:
        return Later(self._fetch)

    @command("INITiate[:IMMediate]")
    def _init(self, call: Call) -> Response:
        self._initiate()
        return None

    @command("[SENSe:]VOLTage[:DC]:RANGe", args=1)
    def _range_set(self, call: Call) -> Response:
        self.range = self._pick_range(call)
        self.auto_range = False
        return None

    @command("[SENSe:]VOLTage[:DC]:RANGe?")
    def _range_query(self, call: Call) -> Response:
        return self._effective_range()

    @command("[SENSe:]VOLTage[:DC]:RANGe:AUTO", args=1)
    def _autorange_set(self, call: Call) -> Response:
        self.auto_range = call.boolean(0)
        return None

    @command("[SENSe:]VOLTage[:DC]:RANGe:AUTO?")
    def _autorange_query(self, call: Call) -> Response:
        return self.auto_range

    @command("SAMPle:COUNt", args=1)
    def _count_set(self, call: Call) -> Response:
        self.sample_count = call.integer(0, minimum=1, maximum=_MAX_SAMPLES)
        return None

    @command("SAMPle:COUNt?")
    def _count_query(self, call: Call) -> Response:
        return self.sample_count

    @command("TRIGger:SOURce", args=1)
    def _trig_source_set(self, call: Call) -> Response:
        self.trigger_source = call.choice(0, _TRIGGER_SOURCES)
        return None

    @command("TRIGger:SOURce?")
    def _trig_source_query(self, call: Call) -> Response:
        return short_form(self.trigger_source).upper()
