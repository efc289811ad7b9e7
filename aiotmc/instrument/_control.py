"""The control surface of :class:`~aiotmc.Instrument`: status byte, clear, trigger, the
error queue, remote/local, the indicator, locks across clients and USBTMC vendor
messages. What a bus lacks raises :class:`~aiotmc.UnsupportedOperation`."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio

from .._exceptions import (
    InstrumentError,
    RemoteProtocolError,
    ResourceBusyError,
    UnsupportedOperation,
)
from .._log import log
from .._types import DEFAULT, Default, StatusByte
from ..transports.base import (
    BytesLike,
    RenMode,
    SupportsDeviceLock,
    SupportsIndicatorPulse,
    SupportsRemoteLocal,
    SupportsVendorMessages,
)
from ._base import InstrumentBase

__all__ = ["ControlMethods"]

_MAX_ERRORS: Final = 100  # bound on SYST:ERR? reads in check_errors()


class ControlMethods(InstrumentBase):
    """Control methods of :class:`~aiotmc.Instrument`."""

    # -- status, clear, trigger, errors -----------------------------------------------------

    async def read_stb(self, *, timeout: float | Default | None = DEFAULT) -> StatusByte:
        """Read the status byte: serial poll where the bus has one, ``*STB?`` otherwise."""
        if self.transport.info.capabilities.read_stb:
            return StatusByte(await self._locked(timeout, self.transport.read_stb))
        return StatusByte(int(await self.query("*STB?", timeout=timeout)))

    async def stb(self, *, timeout: float | Default | None = DEFAULT) -> StatusByte:
        """PyVISA's ``stb`` property: reading it is I/O, so here it is a coroutine
        (``await inst.stb()``); the same as :meth:`read_stb`."""
        return await self.read_stb(timeout=timeout)

    async def clear(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Device clear (bus-level where available; a raw socket reconnects)."""
        log.info("%s: device clear", self.resource)
        await self._locked(timeout, self.transport.clear, what="clear")

    async def trigger(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Trigger: bus-level where available, ``*TRG`` otherwise."""
        if self.transport.info.capabilities.trigger:
            await self._locked(timeout, self.transport.trigger)
        else:
            await self.write("*TRG", timeout=timeout)

    async def errors(self, *, timeout: float | Default | None = DEFAULT) -> list[InstrumentError]:
        """Drain the SCPI error queue (``SYST:ERR?`` until ``0``); at most 100 entries."""
        found: list[InstrumentError] = []
        async with self.lock():
            for _ in range(_MAX_ERRORS):
                text = await self.query("SYST:ERR?", timeout=timeout)
                code_text, _, message = text.partition(",")
                try:
                    code = int(code_text.strip())
                except ValueError:
                    raise RemoteProtocolError(f"unparsable SYST:ERR? answer {text!r}") from None
                if code == 0:
                    break
                found.append(
                    InstrumentError(code, message.strip().strip('"'), resource=self.resource)
                )
        return found

    async def check_errors(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Raise the first queued instrument error (all of them in ``.errors``), if any."""
        found = await self.errors(timeout=timeout)
        if found:
            first = found[0]
            first.errors = found  # type: ignore[attr-defined]
            raise first

    # -- remote / local, indicator ------------------------------------------------------------

    async def control_ren(
        self, mode: RenMode | int, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Remote-enable operations, PyVISA's ``control_ren``: ``mode`` is a
        :class:`~aiotmc.RenMode` or its VISA number (1: remote, 2: local, 4: lockout...).

        Raises :class:`~aiotmc.UnsupportedOperation` where the bus or the device has no
        remote/local control (raw sockets, USBTMC devices without USB488 REN_CONTROL).
        """
        ren = RenMode(mode)
        transport = self.transport
        if not (
            isinstance(transport, SupportsRemoteLocal) and transport.info.capabilities.remote_local
        ):
            raise UnsupportedOperation(f"{self.resource}: no remote/local control on this link")
        await self._locked(timeout, functools.partial(transport.control_ren, ren))

    async def remote(
        self, *, lockout: bool = False, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Put the instrument in remote (``lockout=True``: also lock its front panel)."""
        mode = RenMode.ASSERT_ADDRESS_LLO if lockout else RenMode.ASSERT_ADDRESS
        await self.control_ren(mode, timeout=timeout)

    async def local(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Return the instrument to local (go to local, then release remote enable)."""
        await self.control_ren(RenMode.DEASSERT_GTL, timeout=timeout)

    async def local_lockout(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Remote with the front panel locked; the same as ``remote(lockout=True)``."""
        await self.remote(lockout=True, timeout=timeout)

    async def indicator_pulse(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Blink the instrument's activity indicator to find it on the bench (USBTMC).

        Raises :class:`~aiotmc.UnsupportedOperation` where the bus or device cannot.
        """
        transport = self.transport
        if not (
            isinstance(transport, SupportsIndicatorPulse)
            and transport.info.capabilities.indicator_pulse
        ):
            raise UnsupportedOperation(f"{self.resource}: no indicator pulse on this link")
        await self._locked(timeout, transport.indicator_pulse)

    # -- locks across clients (VXI-11, HiSLIP) ---------------------------------------------

    def _device_lock(self) -> SupportsDeviceLock:
        transport = self.transport
        if not (isinstance(transport, SupportsDeviceLock) and transport.info.capabilities.locking):
            raise UnsupportedOperation(f"{self.resource}: no locking across clients on this link")
        return transport

    async def lock_excl(
        self, lock_timeout: float = 0.0, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Lock the instrument against every other client (PyVISA's ``lock_excl``).

        Waits up to ``lock_timeout`` seconds for another client's lock to go; raises
        :class:`~aiotmc.ResourceBusyError` when it is not granted. This is a lock in the
        instrument (VXI-11 device_lock, HiSLIP exclusive lock); :meth:`lock` is the
        in-process one that keeps this program's own tasks apart.
        """
        if not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be >= 0 seconds, got {lock_timeout!r}")
        transport = self._device_lock()
        lock = functools.partial(transport.lock, timeout=lock_timeout)
        if await self._locked(timeout, lock, extra=lock_timeout) is False:
            raise ResourceBusyError(
                f"{self.resource}: locked by another client for more than {lock_timeout} s"
            )

    async def unlock(self, *, timeout: float | Default | None = DEFAULT) -> None:
        """Release the lock taken with :meth:`lock_excl`."""
        await self._locked(timeout, self._device_lock().unlock)

    @asynccontextmanager
    async def lock_context(
        self, lock_timeout: float = 0.0, *, timeout: float | Default | None = DEFAULT
    ) -> AsyncIterator[None]:
        """``async with inst.lock_context(5):`` the instrument locked against other
        clients for the block (PyVISA's ``lock_context``); unlocked even when cancelled."""
        await self.lock_excl(lock_timeout, timeout=timeout)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.unlock(timeout=timeout)

    # -- vendor-specific messages (USBTMC) ---------------------------------------------------

    def _vendor(self) -> SupportsVendorMessages:
        transport = self.transport
        if not (
            isinstance(transport, SupportsVendorMessages)
            and transport.info.capabilities.vendor_messages
        ):
            raise UnsupportedOperation(f"{self.resource}: no vendor-specific messages on this link")
        return transport

    async def vendor_write(
        self, data: BytesLike, *, timeout: float | Default | None = DEFAULT
    ) -> None:
        """Send ``data`` as one USBTMC VENDOR_SPECIFIC_OUT message (vendor tools' channel)."""
        await self._locked(timeout, functools.partial(self._vendor().vendor_write, data))

    async def vendor_read(
        self, max_size: int, *, timeout: float | Default | None = DEFAULT
    ) -> bytes:
        """Read one USBTMC VENDOR_SPECIFIC_IN message of at most ``max_size`` bytes."""
        return await self._locked(timeout, functools.partial(self._vendor().vendor_read, max_size))

    async def control_transfer(
        self,
        request_type: int,
        request: int,
        value: int = 0,
        index: int = 0,
        data_or_length: BytesLike | int = 0,
        *,
        timeout: float | Default | None = DEFAULT,
    ) -> bytes:
        """A USB class or vendor control transfer on the default endpoint.

        ``request_type`` is bmRequestType: device-to-host (bit 7 set) reads up to
        ``data_or_length`` bytes and returns them; host-to-device sends the bytes in
        ``data_or_length`` and returns ``b""``. Standard requests and data stages over
        4096 bytes raise :class:`~aiotmc.LocalProtocolError` before anything is sent.
        """
        transfer = functools.partial(
            self._vendor().control_transfer, request_type, request, value, index, data_or_length
        )
        return await self._locked(timeout, transfer)
