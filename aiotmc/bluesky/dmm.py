"""``ScpiDmm``: a triggerable DC voltmeter, ready for ``bp.count([dmm], num=5)``.

The SCPI set is the common one of bench DMMs (Keysight 3446x and compatibles, and the
simulator ``SIM::dmm``): ``trigger()`` starts a measurement with ``INIT`` and waits for it
with ``*OPC?`` (after a bus trigger, ``*TRG``, when ``TRIGger:SOURce BUS``); ``read()``
fetches it with ``FETCh?``.
"""

from __future__ import annotations

from typing import Any

from bluesky.protocols import Triggerable
from ophyd_async.core import AsyncStatus, StandardReadableFormat, StrictEnum

from .._exceptions import RemoteProtocolError
from ..instrument import Instrument
from .device import ScpiDevice
from .link import ScpiLink
from .signals import scpi_signal_r, scpi_signal_rw

__all__ = ["ScpiDmm", "TriggerSource"]


class TriggerSource(StrictEnum):
    """``TRIGger:SOURce`` choices (the instrument answers the short forms)."""

    IMMEDIATE = "IMMediate"
    BUS = "BUS"
    EXTERNAL = "EXTernal"


class ScpiDmm(ScpiDevice, Triggerable):
    """A DC voltmeter: ``voltage`` is read (hinted), range and trigger source are
    configuration.

    Args:
        resource: a resource name (``"TCPIP0::192.168.1.20::5025::SOCKET"``, ``"SIM::dmm"``)
            opened by ``connect()``, or an open :class:`~aiotmc.Instrument`.
        name: the device name (``init_devices()`` gives the variable's name).
        open_options: keyword options of :func:`aiotmc.open` (``timeout=``, ``device=``...).
    """

    def __init__(self, resource: str | Instrument, name: str = "", **open_options: Any) -> None:
        link = ScpiLink(resource, **open_options)
        with self.add_children_as_readables(StandardReadableFormat.HINTED_UNCACHED_SIGNAL):
            self.voltage = scpi_signal_r(link, "FETCh?", float, units="V", precision=6)
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.voltage_range = scpi_signal_rw(link, "VOLTage:DC:RANGe", float, units="V")
            self.auto_range = scpi_signal_rw(link, "VOLTage:DC:RANGe:AUTO", bool)
            self.trigger_source = scpi_signal_rw(link, "TRIGger:SOURce", TriggerSource)
        super().__init__(link, name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        """Measure once: ``INIT`` (and ``*TRG`` with a bus trigger), then ``*OPC?``.

        With ``TRIGger:SOURce EXTernal`` it waits for the external trigger until the
        instrument's timeout (:class:`~aiotmc.ReadTimeout`). Raises what the exchanges
        raise; :class:`~aiotmc.RemoteProtocolError` if ``*OPC?`` does not answer 1.
        Does nothing in mock mode.
        """
        if self.mocked:
            return  # mock signals hold the values (ophyd_async.core.set_mock_value)
        inst = self.link.instrument
        source = await self.trigger_source.get_value()
        async with inst.lock():
            if source is TriggerSource.BUS:
                await inst.write("INIT")
                await inst.trigger()
                answer = await inst.query("*OPC?")
            else:
                answer = await inst.query("INIT;*OPC?")
        if answer.strip() != "1":
            raise RemoteProtocolError(f"{inst.resource}: INIT;*OPC? answered {answer[:80]!r}")
