"""An answer that does not decode raises RemoteProtocolError, and the link stays usable."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim import Raw, SimDevice
from tests.conftest import open_device

TIMEOUT = 10


def garbage_device() -> SimDevice:
    device = SimDevice()
    device.add_command("GARBage?", lambda call: Raw(b"caf\xe9 \xff\x00ok\n"))
    device.add_command("LONG?", lambda call: Raw(b"\xfe" * 500 + b"\n"))
    return device


@pytest.mark.parametrize("via", ["sim", "tcp"])
async def test_undecodable_answer_is_a_typed_error_with_escaped_bytes(via: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with open_device(garbage_device(), via) as inst:
            with pytest.raises(aiotmc.RemoteProtocolError) as info:
                await inst.query("GARB?")
            text = str(info.value)
            assert "ascii" in text and "byte 3" in text
            assert r"caf\xe9 \xff\x00ok\n" in text  # escaped, printable
            assert text.isprintable()
            assert isinstance(info.value.__cause__, UnicodeDecodeError)
            assert await inst.query("*IDN?") == "aiotmc,SIM-DEVICE,0000,0.1"


async def test_long_undecodable_answer_is_shown_truncated() -> None:
    with anyio.fail_after(TIMEOUT):
        async with open_device(garbage_device(), "sim") as inst:
            with pytest.raises(aiotmc.RemoteProtocolError) as info:
                await inst.query("LONG?")
            text = str(info.value)
            assert "(501 bytes)" in text and len(text) < 500


async def test_other_encodings_are_named() -> None:
    with anyio.fail_after(TIMEOUT):
        async with open_device(garbage_device(), "sim", encoding="utf-8") as inst:
            with pytest.raises(aiotmc.RemoteProtocolError, match="not valid utf-8"):
                await inst.query("GARB?")
