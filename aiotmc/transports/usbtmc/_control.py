"""USBTMC and USB488 control requests: status byte, device clear, remote/local,
indicator pulse.

:class:`UsbtmcControl` sends them as class control requests (READ_STATUS_BYTE's answer
comes on interrupt-IN when the interface has one: :mod:`._reader` hands it over by
bTag); each passes the same guards as a message, and a device clear the same recovery.
"""

from __future__ import annotations

import math
from typing import Final

import anyio

from ..._exceptions import (
    AiotmcTimeout,
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    SessionBrokenError,
    UnsupportedOperation,
    WriteTimeout,
)
from ..._types import RenMode
from ...protocol.events import ControlRequest
from ...protocol.usb488 import (
    go_to_local_request,
    local_lockout_request,
    parse_read_status_byte,
    read_status_byte_request,
    ren_control_request,
)
from ...protocol.usbtmc import UsbtmcStatus, parse_status
from ._link import UsbtmcLink
from ._reader import StbWaiter

__all__ = ["UsbtmcControl"]

# USB488 requests for each VISA remote-enable operation, in order
_REN_STEPS: Final[dict[RenMode, tuple[str, ...]]] = {
    RenMode.DEASSERT: ("ren_off",),
    RenMode.ASSERT: ("ren_on",),
    RenMode.DEASSERT_GTL: ("gtl", "ren_off"),
    RenMode.ASSERT_ADDRESS: ("ren_on",),
    RenMode.ASSERT_LLO: ("ren_on", "llo"),
    RenMode.ASSERT_ADDRESS_LLO: ("ren_on", "llo"),
    RenMode.ADDRESS_GTL: ("gtl",),
}

_SUCCESS: Final = UsbtmcStatus.SUCCESS
_TAG_RETRIES: Final = 3  # READ_STATUS_BYTE retries while the interrupt endpoint is busy


class UsbtmcControl(UsbtmcLink):
    """Status byte, device clear, remote/local and indicator pulse."""

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        """USB488 READ_STATUS_BYTE; the answer comes on interrupt-IN when there is one.

        Raises UnsupportedOperation on a plain USBTMC interface, ReadTimeout past
        ``deadline`` (a late answer is dropped by the interrupt reader).
        """
        if not self._capabilities.usb488:
            raise UnsupportedOperation(f"{self._resource}: not a USB488 interface (no status byte)")
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            return await self._within(deadline, ReadTimeout, self._read_stb())
        finally:
            self._busy = False

    async def _read_stb(self) -> int:
        port = self._port
        interface = port.interface_number
        reader = self._reader if self._interrupt_endpoint is not None else None
        for attempt in range(_TAG_RETRIES + 1):
            tag = self._stb_tags.next()
            waiter: StbWaiter | None = None
            if reader is not None:
                if reader.error is not None:
                    raise reader.error
                waiter = reader.waiter(tag)
            try:
                reply = parse_read_status_byte(
                    await port.control(read_status_byte_request(tag, interface))
                )
                if reply.status is UsbtmcStatus.INTERRUPT_IN_BUSY and attempt < _TAG_RETRIES:
                    await anyio.sleep(self._poll_interval)
                    continue
                if reply.status is not _SUCCESS:
                    raise RemoteProtocolError(f"READ_STATUS_BYTE returned {reply.status.name}")
                if reply.tag != tag:
                    raise RemoteProtocolError(
                        f"READ_STATUS_BYTE answered bTag {reply.tag}, asked {tag}"
                    )
                if waiter is None:
                    return reply.status_byte
                await waiter.event.wait()
                if waiter.error is not None:
                    raise waiter.error
                return waiter.value
            finally:
                if reader is not None:
                    reader.forget(tag)
        raise RemoteProtocolError("READ_STATUS_BYTE: the interrupt endpoint stays busy")

    async def clear(self, *, deadline: float = math.inf) -> None:
        """Device clear (INITIATE_CLEAR / CHECK_CLEAR_STATUS / clear bulk-OUT halt).

        On failure the transport is broken and SessionBrokenError is raised; a clear that
        is cancelled or times out part-way (WriteTimeout) is finished (shielded, bounded)
        before the cancellation or timeout propagates.
        """
        if self._lost is not None or self._broken is not None:
            await self._restore(deadline)
        self._begin()
        try:
            await self._within(deadline, WriteTimeout, self._recovery.device_clear())
            self._settled()
        except AiotmcTimeout as exc:
            await self._after_error(exc, force_clear=True)
            raise
        except Exception as exc:
            if isinstance(exc, ConnectionLostError):
                self._lost = exc
                raise
            self._broken = f"device clear failed: {exc}"
            raise SessionBrokenError(
                f"device clear failed ({exc}); reopen the instrument", resource=self._resource
            ) from exc
        except BaseException as exc:
            await self._after_error(exc, force_clear=True)
            raise
        finally:
            self._busy = False

    async def control_ren(self, mode: RenMode, *, deadline: float = math.inf) -> None:
        """A VISA remote-enable operation as USB488 REN_CONTROL / GO_TO_LOCAL /
        LOCAL_LOCKOUT requests (USB488 has no addressing: ``ASSERT_ADDRESS*`` act like
        ``ASSERT*``). Raises WriteTimeout when the deadline passes part-way."""
        caps = self._capabilities
        if not (caps.usb488 and caps.ren_control):
            raise UnsupportedOperation(f"{self._resource}: no USB488 remote/local control")
        interface = self._port.interface_number
        requests = []
        for step in _REN_STEPS[RenMode(mode)]:
            if step == "gtl":
                requests.append(go_to_local_request(interface))
            elif step == "llo":
                requests.append(local_lockout_request(interface))
            else:
                requests.append(ren_control_request(step == "ren_on", interface))
        await self._class_requests(requests, deadline, f"remote-enable operation {mode.name}")

    async def set_remote(self, remote: bool, *, lockout: bool = False) -> None:
        """REN_CONTROL (+ LOCAL_LOCKOUT), or GO_TO_LOCAL + REN off for ``remote=False``."""
        if remote:
            await self.control_ren(RenMode.ASSERT_LLO if lockout else RenMode.ASSERT)
        else:
            await self.control_ren(RenMode.DEASSERT_GTL)

    async def indicator_pulse(self, *, deadline: float = math.inf) -> None:
        """Blink the device's activity indicator (USBTMC INDICATOR_PULSE)."""
        if not self._capabilities.indicator_pulse:
            raise UnsupportedOperation(f"{self._resource}: no INDICATOR_PULSE")
        await self._class_requests([self._conn.indicator_pulse()], deadline, "INDICATOR_PULSE")

    async def _class_requests(
        self, requests: list[ControlRequest], deadline: float, what: str
    ) -> None:
        """Send class requests that leave no message state behind, in order, each checked
        for SUCCESS; stopping part-way (deadline, cancellation) needs no recovery."""
        self._begin()
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                for request in requests:
                    status = parse_status(await self._port.control(request))
                    if status is not _SUCCESS:
                        raise RemoteProtocolError(
                            f"{self._resource}: request {request.request} returned {status.name}"
                        )
            if scope.cancelled_caught:
                raise WriteTimeout(f"{self._resource}: {what} not done before the deadline")
        finally:
            self._busy = False
