"""Serial through ``socat`` pty bridges (Debian's socat): the client opens socat's pty,
socat forwards to the pty simulator. aiotmc and pyvisa-py as clients, an unplugged
adapter (socat killed: the device path vanishes) and the reconnect policy."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

import aiotmc
from aiotmc.reconnect import Reconnect
from aiotmc.sim.pty_server import PtyServer
from aiotmc.testing import conformance_device
from aiotmc.transports.serial import SerialTransport

from .socat import socat_bridge

pytestmark = pytest.mark.timeout(60)


async def test_query_and_resync_through_socat(tmp_path: Path) -> None:
    link = tmp_path / "ttyV0"
    async with (
        PtyServer(conformance_device()) as server,
        socat_bridge(server.path, link),
        aiotmc.open(f"ASRL{link}::INSTR", baud_rate=115200, settle=0.6) as inst,
    ):
        assert await inst.query("ECHO? via socat") == "via socat"
        block = await inst.query_binary_values("BIN? 3000,7", datatype="B", container=bytes)
        assert len(block) == 3000
        with pytest.raises(aiotmc.ReadTimeout):
            await inst.query("SLOW? 0.2,late", timeout=0.1)
        # socat hides the client's flush from the simulator: the late answer arrives
        # within the quiet period (settle) of the next operation's resynchronisation
        assert await inst.query("ECHO? mine", timeout=5) == "mine"


async def test_unplugged_adapter_then_reconnect(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB0"
    policy = Reconnect(attempts=2, backoff=0.01)
    async with PtyServer(conformance_device()) as server, AsyncExitStack() as stack:
        bridge = await stack.enter_async_context(socat_bridge(server.path, link))
        inst = await stack.enter_async_context(
            aiotmc.open(f"ASRL{link}::INSTR", reconnect=policy, settle=0.02)
        )
        assert await inst.query("ECHO? 1") == "1"
        bridge.terminate()  # the adapter is unplugged: the path vanishes
        await bridge.wait()
        assert not link.exists()
        with pytest.raises(aiotmc.ConnectionLostError):
            await inst.query("ECHO? 2", timeout=5)
        with pytest.raises(aiotmc.ConnectError, match="not restored"):
            await inst.query("ECHO? 3", timeout=5)  # still unplugged: both tries fail
        async with socat_bridge(server.path, link):  # plugged in again
            assert await inst.query("ECHO? 4", timeout=5) == "4"
            transport = inst.transport
            assert isinstance(transport, SerialTransport)
            assert transport.reopens == 1


_PYVISA = """
import sys, pyvisa
rm = pyvisa.ResourceManager("@py")
inst = rm.open_resource(sys.argv[1], timeout=5000)
inst.read_termination = inst.write_termination = "\\n"
print(inst.query("ECHO? pyvisa through socat"))
inst.close()
rm.close()
"""


async def test_pyvisa_py_through_socat(tmp_path: Path) -> None:
    pytest.importorskip("pyvisa_py")
    pytest.importorskip("serial")
    link = tmp_path / "ttyV1"
    async with PtyServer(conformance_device()) as server, socat_bridge(server.path, link):
        with anyio.fail_after(30):
            done = await anyio.run_process(
                [sys.executable, "-c", _PYVISA, f"ASRL{link}::INSTR"], check=False
            )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert done.stdout.decode().strip() == "pyvisa through socat"
