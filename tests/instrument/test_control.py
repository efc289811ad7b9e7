"""One control surface on Instrument: remote / local / lockout and the indicator pulse.

On a USB488 device they send REN_CONTROL, GO_TO_LOCAL, LOCAL_LOCKOUT and INDICATOR_PULSE
(checked against the emulated device's state); elsewhere they raise UnsupportedOperation.
"""

from __future__ import annotations

import pytest

import aiotmc
from aiotmc import RenMode
from aiotmc.sim.devices import create_device
from aiotmc.sim.usbtmc_device import VENDOR_REGISTER
from tests.conftest import OpenSim, open_device

# (mode, remote enabled after it, front panel locked after it), starting from remote+lockout
REN_CASES = [
    (RenMode.ASSERT, True, True),
    (RenMode.ASSERT_ADDRESS, True, True),
    (RenMode.DEASSERT, False, False),
    (RenMode.DEASSERT_GTL, False, False),
    (RenMode.ADDRESS_GTL, True, False),
    (RenMode.ASSERT_LLO, True, True),
    (RenMode.ASSERT_ADDRESS_LLO, True, True),
]


@pytest.mark.parametrize(("mode", "remote", "locked"), REN_CASES, ids=lambda v: str(v))
async def test_control_ren_on_usb488(mode: RenMode, remote: bool, locked: bool) -> None:
    async with open_device(create_device("dmm"), "usb") as inst:
        function = inst.function  # type: ignore[attr-defined]
        await inst.remote(lockout=True)
        assert function.remote_enabled and function.local_lockout
        await inst.control_ren(int(mode))
        assert (function.remote_enabled, function.local_lockout) == (remote, locked)
        assert "SIM-DMM" in await inst.query("*IDN?")  # the link is still in step


async def test_remote_local_lockout_and_indicator(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        if open_sim.via != "usb":  # type: ignore[attr-defined]
            for call in (inst.remote, inst.local, inst.local_lockout, inst.indicator_pulse):
                with pytest.raises(aiotmc.UnsupportedOperation, match=inst.resource):
                    await call()
            with pytest.raises(aiotmc.UnsupportedOperation):
                await inst.control_ren(RenMode.ASSERT)
            assert "SIM-DMM" in await inst.query("*IDN?")
            return
        function = inst.function  # type: ignore[attr-defined]
        await inst.local_lockout()
        assert function.remote_enabled and function.local_lockout
        await inst.local()
        assert not function.remote_enabled and not function.local_lockout
        await inst.remote()
        assert function.remote_enabled and not function.local_lockout
        await inst.indicator_pulse()
        assert function.seen.indicator_pulses == 1


async def test_invalid_ren_mode_is_a_value_error(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        with pytest.raises(ValueError, match="7"):
            await inst.control_ren(7)


async def test_vendor_messages_and_control_transfers_reach_instrument(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        if open_sim.via != "usb":  # type: ignore[attr-defined]
            for call in (
                lambda: inst.vendor_write(b"x"),
                lambda: inst.vendor_read(8),
                lambda: inst.control_transfer(0xC1, VENDOR_REGISTER, 0, 0, 8),
            ):
                with pytest.raises(aiotmc.UnsupportedOperation, match="vendor"):
                    await call()
            return
        function = inst.function  # type: ignore[attr-defined]
        await inst.vendor_write(b"\x00raw vendor bytes\xff")
        assert bytes(function.vendor_data) == b"\x00raw vendor bytes\xff"
        assert await inst.vendor_read(64) == b"\x00raw vendor bytes\xff"  # the emulator echoes
        assert await inst.control_transfer(0x41, VENDOR_REGISTER, 3, 0, b"cal") == b""
        assert await inst.control_transfer(0xC1, VENDOR_REGISTER, 3, 0, 16) == b"cal"
        with pytest.raises(aiotmc.LocalProtocolError):
            await inst.control_transfer(0x80, 6, 0x0100, 0, 18)  # a standard request
        assert "SIM-DMM" in await inst.query("*IDN?")
