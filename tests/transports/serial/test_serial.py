"""The serial transport on pty pairs: options, errors, bad input, hang-up, pyvisa-py."""

from __future__ import annotations

import os
import sys
import termios
from pathlib import Path

import anyio
import pytest

import aiotmc
from aiotmc.sim.pty_server import PtyServer
from aiotmc.testing import conformance_device
from aiotmc.transports.serial import SerialSettings, SerialTransport


async def test_query_through_open_and_line_settings() -> None:
    async with PtyServer(conformance_device()) as server:
        # (a pty forces 8 data bits and no parity, so those are not checked here)
        options = {"baud_rate": 115200, "stop_bits": 2, "flow_control": "rts_cts"}
        async with aiotmc.open(server.resource, **options) as inst:
            assert (await inst.query("ECHO? hello")) == "hello"
            assert inst.transport.info.kind == "serial"
            attrs = termios.tcgetattr(server._slave)  # the same tty as the client's
        assert attrs[4] == termios.B115200
        assert attrs[2] & termios.CSTOPB and attrs[2] & termios.CRTSCTS
        assert not attrs[3] & (termios.ICANON | termios.ECHO)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"parity": "sometimes"}, "parity must be one of"),
        ({"data_bits": 9}, "data_bits must be 5, 6, 7 or 8"),
        ({"stop_bits": 3}, "stop_bits must be 1, 1.5 or 2"),
        ({"baud_rate": 12345}, "not a standard rate"),
        ({"flow_control": "dtr_dsr"}, "DTR/DSR"),
    ],
)
async def test_bad_options(options: dict[str, object], message: str) -> None:
    async with PtyServer(conformance_device()) as server:
        with pytest.raises(ValueError, match=message):
            async with aiotmc.open(server.resource, **options):
                pass  # pragma: no cover


async def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="baud_rate"):
        async with aiotmc.open("ASRL/dev/does-not-exist::INSTR", baudrate=9600):
            pass  # pragma: no cover


async def test_missing_port_and_not_a_tty(tmp_path: Path) -> None:
    with pytest.raises(aiotmc.ResourceNotFoundError, match="is the adapter plugged in"):
        await SerialTransport.open(str(tmp_path / "ttyUSB9"))
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with pytest.raises(aiotmc.ConnectError, match="not a serial port"):
        await SerialTransport.open(str(plain))


async def test_permission_denied_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message names the dialout group; as root (CI) the refusal is injected."""
    import errno

    from aiotmc.transports.serial import _posix

    locked = tmp_path / "ttyS9"
    locked.write_bytes(b"")
    locked.chmod(0)
    if os.geteuid() == 0:  # root opens any file: refuse the way the kernel would

        def refuse(path: str, flags: int, mode: int = 0o777) -> int:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

        monkeypatch.setattr(_posix.os, "open", refuse)
    with pytest.raises(aiotmc.PermissionDeniedError, match="dialout"):
        await SerialTransport.open(str(locked))


async def test_never_answers_then_next_query_is_its_own() -> None:
    async with PtyServer(conformance_device()) as server:
        link = await SerialTransport.open(server.path)
        try:
            with pytest.raises(aiotmc.ReadTimeout):
                await link.exchange(
                    b"SLOW? 1e6,late\n", max_size=100, deadline=anyio.current_time() + 0.3
                )
            assert link.stale
            answer = await link.exchange(b"ECHO? mine\n", max_size=100)
            assert answer == b"mine\n"
        finally:
            await link.aclose()


async def test_line_longer_than_max_size_is_dropped_and_bounded() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    link = await SerialTransport.open(path, settle=0)
    try:
        os.write(master, b"x" * 3000)  # a line with no end
        with pytest.raises(aiotmc.ReadTimeout):
            await link.receive_message(max_size=1000, deadline=anyio.current_time() + 0.2)
        assert link._stream.decoder.pending <= 1000  # discarded as it arrived
        await link.clear()  # drops the rest of it
        os.write(master, b"y" * 3000 + b"\nok\n")  # too long, then a good one
        with pytest.raises(aiotmc.RemoteProtocolError, match="max_size"):
            await link.receive_message(max_size=1000, deadline=anyio.current_time() + 2)
        answer = await link.receive_message(max_size=1000, deadline=anyio.current_time() + 2)
        assert answer == b"ok\n"
    finally:
        await link.aclose()
        os.close(master)
        os.close(slave)


async def test_oversized_answer_then_in_step() -> None:
    async with (
        PtyServer(conformance_device()) as server,
        aiotmc.open_transport(server.resource) as link,
    ):
        with pytest.raises(aiotmc.RemoteProtocolError, match="max_size"):
            await link.exchange(b"TEXT? 20000,1\n", max_size=1000)
        assert await link.exchange(b"ECHO? next\n", max_size=100) == b"next\n"


async def test_hang_up_is_connection_lost() -> None:
    async with (
        PtyServer(conformance_device()) as server,
        aiotmc.open_transport(server.resource) as link,
    ):
        assert await link.exchange(b"ECHO? 1\n", max_size=100) == b"1\n"
        server.hang_up()
        with pytest.raises(aiotmc.ConnectionLostError):
            await link.exchange(b"ECHO? 2\n", max_size=100, deadline=anyio.current_time() + 5)
        # the next operation opens the path again: it is gone with the pty
        with pytest.raises(aiotmc.ResourceNotFoundError):
            await link.exchange(b"ECHO? 3\n", max_size=100)


async def test_break_and_discard() -> None:
    async with PtyServer(conformance_device()) as server:
        link = await SerialTransport.open(server.path)
        try:
            await link.discard()
            try:
                await link.send_break(0.01)
            except aiotmc.ConnectionLostError as exc:  # ptys may refuse a break
                pytest.skip(f"this kernel's pty has no break: {exc}")
            assert await link.exchange(b"ECHO? after\n", max_size=100) == b"after\n"
        finally:
            await link.aclose()


def test_settings_validation() -> None:
    settings = SerialSettings.from_options({"parity": 1, "stop_bits": 20, "flow_control": 2})
    assert (settings.parity, settings.stop_bits, settings.flow_control) == (1, 2.0, 2)
    with pytest.raises(ValueError, match=r"1\.5 needs 5 data bits"):
        SerialSettings(stop_bits=1.5).apply(
            list(termios.tcgetattr(0) if os.isatty(0) else _attrs())
        )


def _attrs() -> list[object]:
    master, slave = os.openpty()
    try:
        return list(termios.tcgetattr(slave))
    finally:
        os.close(master)
        os.close(slave)


_PYVISA_CLIENT = """
import sys, pyvisa
rm = pyvisa.ResourceManager("@py")
inst = rm.open_resource(sys.argv[1], timeout=5000)
inst.read_termination = inst.write_termination = "\\n"
print(inst.query("*IDN?"))
print(inst.query("ECHO? pyvisa"))
inst.close()
rm.close()
"""


async def test_pyvisa_py_accepts_the_pty_simulator() -> None:
    """pyvisa-py (``@py``, pyserial underneath) as an independent client, in a process."""
    pytest.importorskip("pyvisa")
    pytest.importorskip("pyvisa_py")
    pytest.importorskip("serial")
    async with PtyServer(conformance_device()) as server:
        with anyio.fail_after(30):
            done = await anyio.run_process(
                [sys.executable, "-c", _PYVISA_CLIENT, server.resource], check=False
            )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    idn, echo = done.stdout.decode().split("\n")[:2]
    assert idn.startswith("aiotmc,CONFORMANCE")
    assert echo == "pyvisa"
