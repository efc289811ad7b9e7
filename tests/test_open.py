"""aiotmc.open(): dispatch by resource kind, option checking, unsupported kinds."""

from __future__ import annotations

import pytest

import aiotmc


async def test_unknown_simulator_model_is_not_found() -> None:
    with pytest.raises(aiotmc.ResourceNotFoundError, match="nosuch"):
        async with aiotmc.open("SIM::nosuch"):
            pass  # pragma: no cover


async def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="quirks"):
        async with aiotmc.open("SIM::dmm", quirks=None):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="device"):
        async with aiotmc.open("TCPIP::127.0.0.1::5025::SOCKET", device=None):
            pass  # pragma: no cover


async def test_bad_name_is_invalid_resource_name() -> None:
    with pytest.raises(aiotmc.InvalidResourceName) as info:
        async with aiotmc.open("TCPIP::host::99999::SOCKET"):
            pass  # pragma: no cover
    assert isinstance(info.value, ValueError)
    assert "99999" in str(info.value)


async def test_shared_simulator_by_name() -> None:
    async with aiotmc.open("SIM::psu::shared_a") as a, aiotmc.open("SIM::psu::shared_a") as b:
        await a.write("VOLT 4.5")
        assert float(await b.query("VOLT?")) == pytest.approx(4.5)
    async with aiotmc.open("SIM::psu::shared_b") as c:
        assert float(await c.query("VOLT?")) != pytest.approx(4.5)


async def test_list_resources_names_usb_instruments(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiotmc._usb import discovery

    found = [
        discovery.UsbResourceInfo(vid=0x0957, pid=0x1796, serial="MY1", interface=0),
        discovery.UsbResourceInfo(vid=0x1AB1, pid=0x04CE, serial=None, interface=0),
    ]

    async def fake() -> list[discovery.UsbResourceInfo]:
        return found

    monkeypatch.setattr(discovery, "alist_usbtmc_devices", fake)
    listed = await aiotmc.list_resources()
    assert [r for r in listed if not r.startswith("ASRL")] == [
        "USB0::0x0957::0x1796::MY1::INSTR",
        "USB0::0x1AB1::0x04CE::INSTR",
    ]
