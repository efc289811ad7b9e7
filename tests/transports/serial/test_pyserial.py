"""The pyserial backend (Windows' serial transport) on Linux, against the pty simulator:
the conformance kit, a cancellation storm, options, the unplugged device."""

from __future__ import annotations

import random
import sys
import termios
from contextlib import AsyncExitStack

import anyio
import pytest

import aiotmc
from aiotmc.sim.pty_server import PtyServer
from aiotmc.testing import CHECKS, KitOptions, check_transport, conformance_device
from aiotmc.testing.storm import Storm
from aiotmc.transports import serial as serial_transport
from aiotmc.transports.serial import SerialSettings, SerialTransport, choose_backend
from aiotmc.transports.serial._pyserial import INSTALL_HINT, pyserial_options

from ...hardening.storm import iterations

pytest.importorskip("serial")

PYSERIAL = {"serial_backend": "pyserial"}
#: every operation cancelled at each await point costs a resynchronisation (two quiet
#: periods of ``settle`` and worker-thread hops): smaller sweeps than the POSIX kit's
KIT = KitOptions(cancel_block_size=20_000, max_steps=300)


async def test_conformance_over_pyserial() -> None:
    async with PtyServer(conformance_device()) as server:
        with anyio.fail_after(120):
            report = await check_transport(
                lambda: aiotmc.open_transport(
                    server.resource, baud_rate=115200, settle=0.02, **PYSERIAL
                ),
                options=KIT,
            )
    print({name: str(stats) for name, stats in report.items()})
    assert list(report) == list(CHECKS)
    sweep = report["cancellation"]
    assert sweep.cancelled > 50 and sweep.completed > 5, sweep
    assert report["close"].steps > 10


async def test_cancellation_storm_over_pyserial() -> None:
    """Cancellations and deadlines at random points: every later answer is its own."""
    device = conformance_device()
    async with PtyServer(device) as server:

        async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
            inst = await stack.enter_async_context(
                aiotmc.open(server.resource, timeout=5, settle=0.03, **PYSERIAL)
            )
            assert inst.transport.info.details["backend"] == "pyserial"
            return inst

        storm = Storm(
            random.Random(20261208),
            opener,
            block_sizes=(64, 20_000),
            upload_sizes=(1000, 20_000),
            latency=lambda delay: device.delay_next_responses(delay),
        )
        with anyio.fail_after(60):
            report = await storm.run(iterations(60))
    print(report.as_dict())
    assert report.outcomes["cancelled"] + report.outcomes["fail_after"] > 20
    assert not report.typed_errors, report.typed_errors


async def test_line_settings_through_pyserial() -> None:
    async with PtyServer(conformance_device()) as server:
        options = {"baud_rate": 115200, "stop_bits": 2, "flow_control": "rts_cts"}
        async with aiotmc.open(server.resource, **options, **PYSERIAL) as inst:
            assert await inst.query("ECHO? threads") == "threads"
            assert inst.transport.info.details["backend"] == "pyserial"
            attrs = termios.tcgetattr(server._slave)  # the same tty as the client's
        assert attrs[4] == termios.B115200
        assert attrs[2] & termios.CSTOPB and attrs[2] & termios.CRTSCTS
        assert not attrs[3] & (termios.ICANON | termios.ECHO)


async def test_unplugged_device_is_connection_lost() -> None:
    async with PtyServer(conformance_device()) as server:
        link = await SerialTransport.open(server.path, backend="pyserial")
        try:
            assert await link.exchange(b"ECHO? 1\n", max_size=100) == b"1\n"
            server.hang_up()
            with pytest.raises(aiotmc.ConnectionLostError):
                await link.exchange(b"ECHO? 2\n", max_size=100, deadline=anyio.current_time() + 5)
            # the next operation opens the path again: it is gone with the pty
            with pytest.raises(aiotmc.ResourceNotFoundError, match="plugged in"):
                await link.exchange(b"ECHO? 3\n", max_size=100)
        finally:
            await link.aclose()


async def test_never_answers_then_next_query_is_its_own() -> None:
    async with PtyServer(conformance_device()) as server:
        link = await SerialTransport.open(server.path, backend="pyserial")
        try:
            with pytest.raises(aiotmc.ReadTimeout):
                await link.exchange(
                    b"SLOW? 1e6,late\n", max_size=100, deadline=anyio.current_time() + 0.3
                )
            assert link.stale
            assert await link.exchange(b"ECHO? mine\n", max_size=100) == b"mine\n"
            await link.discard()
            await link.send_break(0.01)
            assert await link.exchange(b"ECHO? after\n", max_size=100) == b"after\n"
        finally:
            await link.aclose()


async def test_missing_port_and_bad_backend() -> None:
    with pytest.raises(aiotmc.ResourceNotFoundError, match="is the adapter plugged in"):
        await SerialTransport.open("/dev/aiotmc-no-such-tty", backend="pyserial")
    with pytest.raises(ValueError, match="serial_backend must be one of"):
        async with aiotmc.open("ASRL/dev/ttyS0::INSTR", serial_backend="winapi"):
            pass  # pragma: no cover


async def test_pyserial_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_transport, "_pyserial_unavailable", lambda: INSTALL_HINT)
    with pytest.raises(ImportError, match=r'pip install "aiotmc\[serial\]"'):
        async with aiotmc.open("ASRL/dev/ttyS0::INSTR", serial_backend="pyserial"):
            pass  # pragma: no cover
    # the default backend on Linux does not need pyserial
    assert serial_transport.TRANSPORT.unavailable() is None


def test_backend_choice_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_backend("auto") == ("pyserial" if sys.platform == "win32" else "posix")
    assert choose_backend("pyserial") == "pyserial"
    monkeypatch.setattr(sys, "platform", "win32")
    assert choose_backend("auto") == "pyserial"
    with pytest.raises(ValueError, match="needs termios"):
        choose_backend("posix")
    monkeypatch.setattr(serial_transport, "_pyserial_unavailable", lambda: INSTALL_HINT)
    assert serial_transport.TRANSPORT.unavailable() == INSTALL_HINT


def test_pyvisa_options_map_to_pyserial() -> None:
    settings = SerialSettings.from_options(
        {"baud_rate": 19200, "data_bits": 7, "parity": "mark", "stop_bits": 20}
    )
    assert pyserial_options(settings) == {
        "baudrate": 19200,
        "bytesize": 7,
        "parity": "M",
        "stopbits": 2,
        "xonxoff": False,
        "rtscts": False,
        "dsrdtr": False,
    }
    dtr = SerialSettings.from_options({"flow_control": 4, "data_bits": 5, "stop_bits": 1.5})
    assert pyserial_options(dtr)["dsrdtr"] and pyserial_options(dtr)["stopbits"] == 1.5
    with pytest.raises(ValueError, match=r"1\.5 needs 5 data bits"):
        pyserial_options(SerialSettings(stop_bits=1.5))
