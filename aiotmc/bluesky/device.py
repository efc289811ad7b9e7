"""``ScpiDevice``: a ``StandardReadable`` whose signals share one instrument, opened by
``connect()`` and closed by :meth:`ScpiDevice.aclose`.

Subclasses make the link first, declare their signals on it, then call
``super().__init__(link, name=name)`` (ophyd-async names the children that exist then)::

    class Psu(ScpiDevice):
        def __init__(self, resource: str, name: str = "", **open_options):
            link = ScpiLink(resource, **open_options)
            with self.add_children_as_readables():
                self.voltage = scpi_signal_rw(link, "VOLT", float, units="V")
            super().__init__(link, name=name)
"""

from __future__ import annotations

from typing import Any

from ophyd_async.core import Device, DeviceConnector, DeviceMock, StandardReadable

from .link import ScpiLink

__all__ = ["ScpiConnector", "ScpiDevice"]


class ScpiConnector(DeviceConnector):
    """Opens the device's link (again with ``force_reconnect``), then connects its signals."""

    def __init__(self, link: ScpiLink) -> None:
        self.link = link
        #: True after ``connect(mock=True)``: the signals are ophyd-async mocks.
        self.mocked = False

    async def connect_mock(self, device: Device, mock: DeviceMock[Any]) -> None:
        self.mocked = True
        await super().connect_mock(device, mock)

    async def connect_real(self, device: Device, timeout: float, force_reconnect: bool) -> None:
        self.mocked = False
        await self.link.open(timeout=timeout, reopen=force_reconnect)
        await super().connect_real(device, timeout, force_reconnect)


class ScpiDevice(StandardReadable):
    """A device on one SCPI instrument (:class:`ScpiLink`).

    ``connect()`` opens the instrument in the running loop (bluesky's, under
    ``init_devices()`` or ``ensure_connected``); ``connect(mock=True)`` opens nothing.
    """

    def __init__(self, link: ScpiLink, name: str = "") -> None:
        self.link = link
        self._scpi_connector = ScpiConnector(link)
        super().__init__(name=name, connector=self._scpi_connector)

    @property
    def mocked(self) -> bool:
        """True when connected in mock mode (no instrument: verbs that talk to it directly,
        such as a ``trigger()``, should do nothing)."""
        return self._scpi_connector.mocked

    async def aclose(self) -> None:
        """Stop the monitors and close the instrument (if the link opened it); a later
        ``connect()`` opens it again. Idempotent; from the loop that connected it."""
        await self.link.aclose()
        self._connect_task = None  # the next connect() really connects
