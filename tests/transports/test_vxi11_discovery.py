"""VXI-11 discovery: portmapper GETPORT over UDP, loopback only."""

from __future__ import annotations

import socket

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

import aiotmc
from aiotmc.cli import main
from aiotmc.sim import create_device
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.transports.vxi11.discovery import discover


async def test_finds_the_simulator_by_host_and_by_subnet() -> None:
    async with Vxi11Server(create_device("dmm"), portmapper_port=0) as server:
        port = server.portmapper_port
        assert port is not None
        found = await discover(["127.0.0.1"], port=port, timeout=2)
        assert [f.resource for f in found] == ["TCPIP0::127.0.0.1::inst0::INSTR"]
        assert str(server.port) in found[0].description
        # 127.0.0.2 is asked too (loopback), nobody answers there
        found = await discover(["127.0.0.0/30"], port=port, timeout=0.5)
        assert [f.resource for f in found] == ["TCPIP0::127.0.0.1::inst0::INSTR"]
        assert server.calls.count(("portmapper-udp", 3)) == 2


async def test_nothing_there_and_nothing_asked() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    unused = probe.getsockname()[1]
    probe.close()
    assert await discover(["127.0.0.1"], port=unused, timeout=0.3) == []
    assert await discover([]) == []
    with pytest.raises(ValueError, match="max_hosts"):
        await discover(["10.0.0.0/16"], max_hosts=256)


async def test_simulator_ignores_junk_datagrams() -> None:
    async with Vxi11Server(create_device("dmm"), portmapper_port=0) as server:
        port = server.portmapper_port
        assert port is not None
        async with await anyio.create_udp_socket(family=socket.AF_INET) as udp:
            await udp.sendto(b"\xff" * 13, "127.0.0.1", port)
            await udp.sendto(b"", "127.0.0.1", port)
        found = await discover(["127.0.0.1"], port=port, timeout=2)
        assert len(found) == 1


async def test_list_resources_asks_the_hosts_named() -> None:
    async with Vxi11Server(create_device("dmm"), portmapper_port=0) as server:
        port = server.portmapper_port
        assert port is not None
        found = await aiotmc.list_resources(
            vxi11_hosts="127.0.0.1, 127.0.0.2", vxi11_portmapper_port=port, vxi11_timeout=1
        )
        lan = [name for name in found if name.startswith("TCPIP")]  # ASRL ports may be listed too
        assert lan == ["TCPIP0::127.0.0.1::inst0::INSTR"]  # nobody on 127.0.0.2
        assert server.calls.count(("portmapper-udp", 3)) == 1
        server.calls.clear()
        await aiotmc.list_resources()  # nothing named: nothing sent
        assert ("portmapper-udp", 3) not in server.calls
    with pytest.raises(TypeError, match="vxi11_hostz"):
        await aiotmc.list_resources(vxi11_hostz="127.0.0.1")


def test_cli_list_vxi11_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    with start_blocking_portal() as portal:
        server = Vxi11Server(create_device("dmm"), portmapper_port=0)
        with portal.wrap_async_context_manager(server):
            port = server.portmapper_port
            assert port is not None
            args = ["--vxi11-hosts", "127.0.0.1", "--portmapper-port", str(port)]
            status = main(["list", *args, "--vxi11-timeout", "2"])
    assert status == 0
    assert "TCPIP0::127.0.0.1::inst0::INSTR" in capsys.readouterr().out
