"""GPIB0::N::INSTR through the board table: pyvisa-py's two-step form with a Prologix
adapter (TCP and serial), the ``adapter=`` option, ``AIOTMC_GPIB<n>``, a VXI-11.2 gateway
as a board, and the errors."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sim.prologix_server import PrologixServer
from aiotmc.testing import conformance_device
from aiotmc.transports.gpib import attach_board, board, boards, detach_board, parse_board
from aiotmc.transports.prologix import PrologixTransport


def test_parse_board() -> None:
    tcp = parse_board("prlgx-tcpip1::192.0.2.9::1234::INTFC")
    assert (tcp.kind, tcp.host, tcp.port, tcp.number) == ("prologix-tcpip", "192.0.2.9", 1234, 1)
    assert tcp.name == "PRLGX-TCPIP1::192.0.2.9::1234::INTFC"
    serial = parse_board("PRLGX-ASRL0::/dev/ttyUSB0::INTFC")
    assert (serial.kind, serial.host) == ("prologix-asrl", "/dev/ttyUSB0")
    gateway = parse_board("TCPIP0::gw.example::gpib0::INSTR")
    assert (gateway.kind, gateway.host, gateway.interface) == ("vxi11", "gw.example", "gpib0")
    assert parse_board("linux-gpib").kind == "linux-gpib"
    for bad in ("TCPIP0::h::inst0::INSTR", "PRLGX-TCPIP0::h::INTFC", "GPIB0::1::INSTR", "x"):
        with pytest.raises(ValueError, match=r"not a GPIB board|port|address"):
            parse_board(bad)


def test_table_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOTMC_GPIB2", "PRLGX-TCPIP0::192.0.2.2::1234::INTFC")
    assert attach_board("PRLGX-TCPIP1::192.0.2.1::1234::INTFC") == 1
    try:
        assert boards()[1] == "PRLGX-TCPIP1::192.0.2.1::1234::INTFC"
        assert boards()[2] == "PRLGX-TCPIP0::192.0.2.2::1234::INTFC"
        with board("linux-gpib", board=1):
            assert boards()[1] == "linux-gpib"
        assert boards()[1].startswith("PRLGX-TCPIP1")  # restored
    finally:
        detach_board(1)
    assert 1 not in boards()


async def test_two_step_form_over_prologix() -> None:
    """pyvisa-py's order: the INTFC resource makes the adapter board 0, then GPIB0::N."""
    devices = {5: create_device("dmm"), 12: conformance_device()}
    async with PrologixServer(devices) as server:
        with board(server.interface):
            async with (
                aiotmc.open("GPIB0::5::INSTR") as dmm,
                aiotmc.open("GPIB0::12::INSTR") as kit,
                aiotmc.open(server.resource(12)) as same,  # the one-string form
            ):
                assert isinstance(kit.transport, PrologixTransport)
                assert kit.transport.adapter is same.transport.adapter  # one bus, one lock
                assert kit.resource == "GPIB0::12::INSTR"
                assert await dmm.query("*IDN?") == devices[5].identity
                assert await kit.query("ECHO? two-step") == "two-step"
        assert server.connections <= 1


@pytest.mark.parametrize("how", ["option", "environment"])
async def test_adapter_option_and_environment(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with PrologixServer({3: conformance_device()}, pty=True) as server:
        options: dict[str, object] = {"srq_interval": 0.02}
        if how == "option":
            options["adapter"] = server.interface
        else:
            monkeypatch.setenv("AIOTMC_GPIB4", server.interface)
        async with aiotmc.open("GPIB4::3::INSTR", **options) as inst:
            assert await inst.query("ECHO? serial adapter") == "serial adapter"


async def test_bad_board_and_option() -> None:
    with pytest.raises(ValueError, match="not a GPIB board"):
        async with aiotmc.open("GPIB0::5::INSTR", adapter="TCPIP0::h::inst0::INSTR"):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"libgpib.*do not apply"):
        async with aiotmc.open(
            "GPIB0::5::INSTR", adapter="PRLGX-TCPIP0::127.0.0.1::1234::INTFC", libgpib="x"
        ):
            pass  # pragma: no cover
    with anyio.fail_after(10), pytest.raises(aiotmc.ConnectError):
        async with PrologixServer({}) as server:
            port = server.port
        async with aiotmc.open(
            "GPIB0::5::INSTR", adapter=f"PRLGX-TCPIP0::127.0.0.1::{port}::INTFC"
        ) as inst:
            await inst.query("*IDN?")
