"""VXI-11.2 gateways: device links ``gpib0,N[,M]`` and device_docmd on the interface
link ``gpib0``, the aiotmc client against the simulator's gateway mode."""

from __future__ import annotations

import anyio
import pytest

import aiotmc
from aiotmc.protocol.vxi11 import BusStatus, Docmd
from aiotmc.sim import SimDevice, create_device
from aiotmc.sim.vxi11_server import Vxi11Server
from aiotmc.transports.vxi11 import Vxi11Transport, gateway

pytestmark = pytest.mark.timeout(30)


def spy_triggers(device: SimDevice, log: list[str], name: str) -> SimDevice:
    handle = device.handle_trigger

    def spy() -> None:
        log.append(name)
        handle()

    device.handle_trigger = spy  # type: ignore[method-assign]
    return device


def transport_of(inst: aiotmc.Instrument) -> Vxi11Transport:
    transport = inst.transport
    assert isinstance(transport, Vxi11Transport)
    return transport


async def test_gateway_bus_commands() -> None:
    triggered: list[str] = []
    devices = {
        "gpib0,5": spy_triggers(create_device("dmm"), triggered, "5"),
        "gpib0,7": spy_triggers(create_device("psu"), triggered, "7"),
        "gpib0,9,2": spy_triggers(create_device("dmm"), triggered, "9,2"),
    }
    async with (
        Vxi11Server(devices) as server,
        aiotmc.open(server.resource("gpib0,5")) as five,
        aiotmc.open(server.resource("gpib0,9,2")) as nine,
        aiotmc.open(server.resource("gpib0"), srq=False) as interface,
    ):
        bus = transport_of(interface)
        assert "DMM" in await five.query("*IDN?")
        assert "DMM" in await nine.query("*IDN?")
        # UNL, listen 5, GET: only the device at 5 is triggered; then 9 with secondary 2.
        command = bytes([0x3F, 0x25, 0x08])
        assert await gateway.send_command(bus, command) == command
        assert triggered == ["5"]
        await gateway.send_command(bus, bytes([0x3F, 0x29, 0x62, 0x08]))
        assert triggered == ["5", "9,2"]
        assert server.buses["gpib0"].listeners == {(9, 2)}

        assert await gateway.bus_status(bus, BusStatus.REMOTE) == 0
        await gateway.set_ren(bus, True)
        assert await gateway.bus_status(bus, BusStatus.REMOTE) == 1
        await gateway.set_bus_address(bus, 21)
        assert await gateway.bus_status(bus, BusStatus.BUS_ADDRESS) == 21
        assert await gateway.bus_status(bus, BusStatus.CONTROLLER_IN_CHARGE) == 1
        await gateway.set_atn(bus, True)
        assert server.buses["gpib0"].atn
        await gateway.interface_clear(bus)
        assert server.buses["gpib0"].listeners == set()

        # SRQ on the bus: the dmm at 5 requests service.
        assert await gateway.bus_status(bus, BusStatus.SRQ) == 0
        await five.write("*SRE 32;*ESE 1;*OPC")
        assert await gateway.bus_status(bus, BusStatus.SRQ) == 1

        # What the simulated gateway cannot do, and bad arguments: typed errors, and the
        # link stays usable.
        with pytest.raises(aiotmc.LocalProtocolError, match="parameter"):
            await bus.docmd(Docmd.BUS_STATUS, b"\0\0\0\x63", datasize=4)
        with pytest.raises(ValueError, match=r"0\.\.30"):
            await gateway.set_bus_address(bus, 31)
        with pytest.raises(aiotmc.UnsupportedOperation):
            await interface.query("*IDN?")
        assert await gateway.bus_status(bus, BusStatus.BUS_ADDRESS) == 21
        # device_docmd on a device link is not a bus command
        with pytest.raises(aiotmc.UnsupportedOperation):
            await transport_of(five).docmd(Docmd.IFC_CONTROL)
        assert "DMM" in await five.query("*IDN?")


async def test_pass_control_to_a_device_and_back() -> None:
    """PASS_CONTROL over real sockets: while the device at 5 is controller in charge,
    what needs the CIC (bus commands, ATN, every operation on a device link) is a typed
    error and the links stay usable; control comes back when the device returns it, or
    by IFC from the gateway (the system controller)."""
    devices = {"gpib0,5": create_device("dmm"), "gpib0,7": create_device("psu")}
    async with (
        Vxi11Server(devices) as server,
        aiotmc.open(server.resource("gpib0,7"), timeout=5) as seven,
        aiotmc.open(server.resource("gpib0"), srq=False, timeout=5) as interface,
    ):
        bus, model = transport_of(interface), server.buses["gpib0"]
        assert "PSU" in await seven.query("*IDN?")
        with pytest.raises(aiotmc.LocalProtocolError, match="parameter"):
            await gateway.pass_control(bus, 31)
        with pytest.raises(aiotmc.TransportError, match="error 17"):
            await gateway.pass_control(bus, 12)  # nobody there to take control
        for _ in range(2):
            await gateway.pass_control(bus, 5)
            assert model.controller == 5
            assert await gateway.bus_status(bus, BusStatus.CONTROLLER_IN_CHARGE) == 0
            assert await gateway.bus_status(bus, BusStatus.SYSTEM_CONTROLLER) == 1
            for needs_cic in (
                gateway.send_command(bus, bytes([0x3F, 0x27])),
                gateway.set_atn(bus, True),
                gateway.pass_control(bus, 7),
                interface.clear(),
                seven.query("*IDN?"),
                seven.write("*CLS"),
                seven.read_stb(),
                seven.trigger(),
            ):
                with pytest.raises(aiotmc.TransportError, match="error 17"):
                    await needs_cic
            await gateway.set_ren(bus, True)  # REN is the system controller's
            assert model.return_control()  # the device passes control back
            assert await gateway.bus_status(bus, BusStatus.CONTROLLER_IN_CHARGE) == 1
            assert "PSU" in await seven.query("*IDN?")
        await gateway.pass_control(bus, 5)
        await gateway.interface_clear(bus)  # the system controller takes control back
        assert model.in_charge
        assert "PSU" in await seven.query("*IDN?")
        await gateway.send_command(bus, bytes([0x3F]))


async def test_interface_clear_command_clears_every_device() -> None:
    devices = {"gpib0,5": create_device("dmm"), "gpib0,7": create_device("psu")}
    async with (
        Vxi11Server(devices) as server,
        aiotmc.open(server.resource("gpib0"), srq=False) as interface,
    ):
        for device in devices.values():
            device.write(b"*IDN?\n")
        await gateway.send_command(transport_of(interface), bytes([0x14]))  # DCL
        assert all(device.read() is None for device in devices.values())
        await interface.clear()  # device_clear on the interface link: DCL too
        assert server.buses["gpib0"].commands[-1] == b"\x14"


async def test_unknown_interface_is_resource_not_found() -> None:
    async with Vxi11Server({"gpib0,5": create_device("dmm")}) as server:
        with pytest.raises(aiotmc.ResourceNotFoundError, match="create_link"):
            async with aiotmc.open(server.resource("gpib1"), srq=False):
                pass  # pragma: no cover


async def test_links_to_one_host_share_one_interrupt_listener() -> None:
    """Two links (two GPIB devices behind one gateway): one listener and one background
    task; each service request reaches the link whose device raised it; the listener
    outlives the first link closed and stops with the last."""
    from aiotmc._background import running
    from aiotmc.transports.vxi11.interrupt import shared_listeners

    tasks, listeners = running(), shared_listeners()
    devices = {"gpib0,5": create_device("dmm"), "gpib0,7": create_device("dmm")}
    async with Vxi11Server(devices) as server:
        async with aiotmc.open(server.resource("gpib0,5")) as a:
            async with aiotmc.open(server.resource("gpib0,7")) as b:
                assert transport_of(a)._interrupts is not None
                assert transport_of(a)._interrupts is transport_of(b)._interrupts
                assert shared_listeners() == listeners + 1
                assert running() == tasks + 1
                await a.write("*SRE 32;*ESE 1")
                await b.write("*SRE 32;*ESE 1")
                async with a.service_requests() as to_a, b.service_requests() as to_b:
                    await b.write("*OPC")
                    with anyio.fail_after(5):
                        event = await to_b.receive()
                    assert event.status & aiotmc.StatusByte.ESB
                    await a.write("*OPC")
                    with anyio.fail_after(5):
                        await to_a.receive()
                    with pytest.raises(anyio.WouldBlock):
                        to_b.receive_nowait()  # a's request went to a only
            assert shared_listeners() == listeners + 1  # a still uses it
            assert await a.query("*ESR?") in ("0", "1")  # a new edge for the next *OPC
            async with a.service_requests() as to_a:
                await a.write("*OPC")
                with anyio.fail_after(5):
                    await to_a.receive()
        assert shared_listeners() == listeners
        assert running() == tasks
