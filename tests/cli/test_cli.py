"""The ``aiotmc`` command line, run as real subprocesses (and in-process where cheaper).

``aiotmc sim`` runs in a subprocess on free ports of 127.0.0.1; the tests learn its
resource names from the lines it prints when ready (no sleeps), and stop it with SIGINT or
SIGTERM at the end. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from anyio.from_thread import start_blocking_portal

from aiotmc import cli
from aiotmc.cli import main
from aiotmc.cli._shell import Shell
from aiotmc.sim.commands import Block
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer

AIOTMC = [sys.executable, "-m", "aiotmc"]
TIMEOUT = 30  # seconds, for any one subprocess
READY_TIMEOUT = 15  # seconds for `aiotmc sim` to print its resource lines
POSIX = sys.platform != "win32"


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIOTMC, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("aiotmc: error:")]


def free_port() -> int:
    """A port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """``aiotmc sim --device MODEL:0 ...`` in a subprocess; resources read from its stdout."""

    def __init__(self, *models: str, extra: tuple[str, ...] = ()) -> None:
        args = [arg for model in models for arg in ("--device", f"{model}:0")]
        self.proc = subprocess.Popen(
            [*AIOTMC, *extra, "sim", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read_stdout, daemon=True)
        self._pump.start()
        self.resources: dict[str, str] = {}
        try:
            for _ in models:
                line = self._lines.get(timeout=READY_TIMEOUT)
                assert line is not None, f"aiotmc sim exited early: {self.stop()[1]}"
                resource, model = line.split()
                self.resources[model] = resource
        except BaseException:
            self.stop()
            raise

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Signal the server, wait (bounded) and return ``(exit status, stderr)``."""
        proc = self.proc
        if proc.poll() is None:
            if POSIX:
                proc.send_signal(sig)
            else:  # pragma: no cover
                proc.terminate()
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a bug: make it loud
            proc.kill()
            proc.wait(timeout=10)
            raise
        finally:
            self._pump.join(timeout=10)
            assert proc.stderr is not None and proc.stdout is not None
            stderr = proc.stderr.read()
            proc.stderr.close()
            proc.stdout.close()
        return status, stderr


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    server = SimProcess("dmm", "psu", "scope")
    yield server
    status, stderr = server.stop()
    if POSIX:
        assert status == 0, stderr


# --------------------------------------------------------------------------- aiotmc sim


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sim_prints_resources_and_stops_cleanly(sig: int) -> None:
    server = SimProcess("dmm", "wavegen")
    assert set(server.resources) == {"dmm", "wavegen"}
    for resource in server.resources.values():
        assert resource.startswith("TCPIP0::127.0.0.1::")
        assert resource.endswith("::SOCKET")
    status, stderr = server.stop(sig)
    assert status == 0, stderr
    assert "stopped" in stderr
    assert "Traceback" not in stderr


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_sim_serves_the_same_instruments_over_vxi11(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen(
        [*AIOTMC, "sim", "--device", "dmm:0", "--device", "psu:0", "--vxi11", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(4)]
        sockets = {line[1]: line[0] for line in lines[:2]}
        vxi11 = {line[1]: line[0] for line in lines[2:]}
        assert [line[2:] for line in lines[2:]] == [["(VXI-11)"], ["(VXI-11)"]]
        assert vxi11["psu"].endswith("::inst1::INSTR") and "," in vxi11["psu"]
        assert main(["write", sockets["psu"], "VOLT 3.25"]) == 0
        assert main(["query", vxi11["psu"], "VOLT?"]) == 0  # the same device, over VXI-11
        assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(3.25)
        assert main(["query", vxi11["dmm"], "*IDN?"]) == 0
        assert "SIM-DMM" in capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()


def _port_111_free() -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", 111))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextlib.contextmanager
def _rpcbind() -> Iterator[None]:
    """Debian's rpcbind on 127.0.0.1:111 for the block (``-i``: registrations from
    non-reserved ports accepted); skips when it cannot run here."""
    if shutil.which("rpcbind") is None or not _port_111_free():
        pytest.skip("rpcbind is not installed, or port 111 is taken or needs root")
    proc = subprocess.Popen(
        ["rpcbind", "-f", "-i"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):  # an external daemon: wait (bounded) until it accepts
            try:
                socket.create_connection(("127.0.0.1", 111), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip("rpcbind does not run as this user")
                threading.Event().wait(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
@pytest.mark.parametrize("pmap", ["0", "111", "rpcbind"])
def test_sim_answers_the_portmapper(pmap: str) -> None:
    """``aiotmc sim --vxi11 0 --portmapper PORT`` or ``--rpcbind``: clients find the core
    port through it (pyvisa-py, which always asks port 111, when that can be arranged)."""
    with contextlib.ExitStack() as stack:
        if pmap == "rpcbind":
            stack.enter_context(_rpcbind())
        elif pmap == "111" and not _port_111_free():
            pytest.skip("port 111 is taken (rpcbind) or needs root")
        _sim_through_the_portmapper(pmap)


def _sim_through_the_portmapper(pmap: str) -> None:
    flags = ["--rpcbind"] if pmap == "rpcbind" else ["--portmapper", pmap]
    proc = subprocess.Popen(
        [*AIOTMC, "sim", "--device", "dmm:0", "--vxi11", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = [proc.stdout.readline().split() for _ in range(2)]
        port = 111
        if pmap != "rpcbind":
            note = proc.stderr.readline()
            assert "portmapper on 127.0.0.1:" in note
            port = int(note.split("127.0.0.1:")[1].split()[0])
        if pmap != "0":
            assert lines[1][0] == "TCPIP0::127.0.0.1::inst0::INSTR"  # no port needed
            pyvisa = pytest.importorskip("pyvisa")
            pytest.importorskip("pyvisa_py")
            rm = pyvisa.ResourceManager("@py")
            try:
                inst = rm.open_resource(lines[1][0])
                assert "SIM-DMM" in inst.query("*IDN?")
                inst.close()
            finally:
                rm.close()
        else:
            assert "," in lines[1][0]  # a portmapper clients cannot find: explicit port

            async def through_the_portmapper() -> str:
                import aiotmc

                name = "TCPIP0::127.0.0.1::inst0::INSTR"
                async with aiotmc.open(name, portmapper_port=port, srq=False) as inst:
                    return await inst.query("*IDN?")

            import anyio

            assert "SIM-DMM" in anyio.run(through_the_portmapper)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()


def test_sim_portmapper_needs_vxi11(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--portmapper", "0"]) == 2
    assert "--portmapper needs --vxi11" in capsys.readouterr().err


def test_sim_vxi11_gateway_needs_vxi11(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--vxi11-gateway"]) == 2
    assert "--vxi11-gateway needs --vxi11" in capsys.readouterr().err


def test_sim_port_in_use_is_one_error_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("sim", "--device", f"dmm:{port}")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert str(port) in result.stderr


def test_sim_unknown_model_is_a_usage_error() -> None:
    result = run_cli("sim", "--device", "toaster:0")
    assert result.returncode == 2
    assert "unknown simulated model 'toaster'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- query / write


def test_query_idn(sim: SimProcess) -> None:
    result = run_cli("query", sim.resources["dmm"], "*IDN?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(",") == 3
    assert result.stderr == ""


def test_query_several_commands(sim: SimProcess) -> None:
    result = run_cli("query", sim.resources["psu"], "*IDN?", "*ESE?")
    assert result.returncode == 0, result.stderr
    idn, ese = result.stdout.splitlines()
    assert idn.count(",") == 3
    assert ese.isdigit()


def test_write_then_query(sim: SimProcess) -> None:
    resource = sim.resources["psu"]
    result = run_cli("write", resource, "*ESE 36", "*SRE 16")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert run_cli("query", resource, "*ESE?", "*SRE?").stdout.split() == ["36", "16"]
    assert run_cli("write", resource, "*ESE 0", "*SRE 0", "--check").returncode == 0


def test_write_check_reports_instrument_errors(sim: SimProcess) -> None:
    result = run_cli("write", "--check", sim.resources["dmm"], "NO:SUCH:COMMand")
    assert result.returncode == 1
    assert len(error_lines(result.stderr)) == 1
    assert "-113" in result.stderr


def test_trio_backend(sim: SimProcess) -> None:
    result = run_cli("--backend", "trio", "query", sim.resources["dmm"], "*IDN?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(",") == 3


def test_options_also_after_the_subcommand(sim: SimProcess) -> None:
    result = run_cli("query", "--backend", "trio", "--timeout", "5", sim.resources["dmm"], "*IDN?")
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- read-block


@pytest.fixture(scope="module")
def block_server() -> Iterator[tuple[str, bytes]]:
    """An in-process SimServer (on a portal thread) whose ``TEST:BLOCk?`` answers a known
    1 MB payload containing every byte value, newlines and '#' included."""
    payload = bytes(range(256)) * 4096
    device = create_device("dmm")
    device.add_command("TEST:BLOCk?", lambda call: Block(payload))
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(SimServer(device)) as server,
    ):
        yield f"TCPIP0::127.0.0.1::{server.port}::SOCKET", payload


def test_read_block_writes_the_payload(block_server: tuple[str, bytes], tmp_path: Path) -> None:
    resource, payload = block_server
    out = tmp_path / "wave.bin"
    result = run_cli("read-block", resource, "TEST:BLOCk?", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == payload
    assert f"wrote {len(payload)} bytes to {out} in " in result.stderr
    assert "MB/s" in result.stderr
    assert "\r" not in result.stderr  # stderr is not a terminal: no progress display


def test_read_block_to_stdout_with_progress(block_server: tuple[str, bytes]) -> None:
    resource, payload = block_server
    result = subprocess.run(
        [*AIOTMC, "read-block", "--progress", resource, "TEST:BLOCk?", "-o", "-"],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload
    assert b"wrote 1048576 bytes to stdout" in result.stderr


def test_read_block_of_a_text_answer_fails(sim: SimProcess, tmp_path: Path) -> None:
    out = tmp_path / "nothing.bin"
    result = run_cli("--timeout", "3", "read-block", sim.resources["dmm"], "*IDN?", "-o", str(out))
    assert result.returncode == 1
    assert len(error_lines(result.stderr)) == 1
    assert not out.exists()


def test_read_block_scope_waveform(sim: SimProcess, tmp_path: Path) -> None:
    out = tmp_path / "scope.bin"
    resource = sim.resources["scope"]
    result = run_cli("read-block", resource, ":WAVeform:DATA?", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


# --------------------------------------------------------------------------- shell


def test_shell_with_piped_stdin(sim: SimProcess, tmp_path: Path) -> None:
    saved = tmp_path / "block.bin"
    script = "\n".join(
        [
            "# comments and blank lines are skipped",
            "",
            "*IDN?",
            "*ESE 16",
            "*ese?",
            ":stb",
            ":clear",
            f":block :WAVeform:DATA? > {saved}",
            ":block :WAVeform:DATA?",
            ":errors",
            ":timeout 4",
            ":help",
            ":quit",
            "*IDN?",  # after :quit: not executed
        ]
    )
    result = run_cli("shell", sim.resources["scope"], stdin=script + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].count(",") == 3  # no banner or prompt when stdin is not a terminal
    assert out[1] == "16"
    assert out[2].startswith(("0 (0x00", "16 (0x10"))
    assert out[3] == f"wrote {saved.stat().st_size} bytes to {saved}"
    assert out[4].startswith(f"{saved.stat().st_size} bytes: ")
    assert out[5] == '0, "No error"'
    assert out[6] == "timeout: 4.0"
    assert ":block CMD" in result.stdout
    assert sum(line.count(",") == 3 for line in out) == 1
    assert result.stderr == ""


def test_shell_errors_print_and_continue(sim: SimProcess) -> None:
    script = "NO:SUCH:QUERy?\n:nosuch\n:block\n*IDN?\n"
    result = run_cli("--timeout", "1", "shell", sim.resources["dmm"], stdin=script)
    assert result.returncode == 1  # piped input: any failed line makes the exit status 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    # the query times out; ':nosuch' is a local error (issue 18: never sent); ':block' lacks
    # its CMD
    assert len(errors) == 3, result.stderr
    assert "unknown shell command ':nosuch'" in errors[1]
    assert "usage: :block CMD" in errors[2]
    assert result.stdout.strip().count(",") == 3  # *IDN? still answered afterwards


def test_shell_on_sim_resource_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("*IDN?\n*OPC?\n"))
    assert main(["shell", "SIM::psu::cli_shell"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].count(",") == 3
    assert out[1] == "1"


@pytest.mark.skipif(not POSIX, reason="needs a pseudo-terminal")
def test_shell_on_a_terminal(tmp_path: Path) -> None:
    """Banner, prompt, answers, Ctrl-D and the history file, on a real pseudo-terminal."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*AIOTMC, "--timeout", "5", "shell", "SIM::dmm"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    os.close(slave)

    def read_until(token: bytes) -> bytes:
        data = b""
        deadline = time.monotonic() + READY_TIMEOUT
        while token not in data and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                data += chunk
        return data

    try:
        assert b"connected to SIM::dmm" in read_until(b"SIM::dmm> ")
        os.write(master, b"*IDN?\n")
        assert b"SIM-DMM" in read_until(b"SIM::dmm> ")
        os.write(master, b"*OPC?\n")
        assert b"1" in read_until(b"SIM::dmm> ")
        os.write(master, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion failed
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    history = (tmp_path / ".aiotmc_history").read_text()
    assert history.split() == ["*IDN?", "*OPC?"]


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_shell_ctrl_c_cancels_the_pending_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import io
    import threading

    from aiotmc.sim.commands import Raw
    from aiotmc.transports.sim import shared_device

    def hang(call: object) -> Raw:
        # The user presses Ctrl-C while this query is pending: deliver SIGINT to the main
        # thread, which waits for the answer (the event loop runs in the portal thread).
        main_thread = threading.main_thread().ident
        assert main_thread is not None
        signal.pthread_kill(main_thread, signal.SIGINT)
        return Raw(b"")  # no answer and no terminator: the query would wait forever

    shared_device("dmm", "cli_interrupt").add_command("HANG?", hang)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("HANG?\n*IDN?\n"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["--timeout", "none", "shell", "SIM::dmm::cli_interrupt"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "interrupted\n"
    assert "SIM-DMM" in captured.out  # the next line still works


# --------------------------------------------------------------------------- demo


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo(backend: str) -> None:
    result = run_cli("--backend", backend, "demo", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for model in ("dmm", "psu", "wavegen", "scope"):
        assert model in result.stdout
    for word in ("concurrent", "sequential", "speed-up", f"{backend} backend"):
        assert word in result.stdout
    assert "matches" in result.stdout
    assert result.stderr == ""


# --------------------------------------------------------------------------- errors


def test_bad_resource_is_one_line_and_usage_status() -> None:
    result = run_cli("query", "TCPIP::host::99999::SOCKET", "*IDN?")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("aiotmc: error: ")
    assert "port must be 1..65535, got '99999'" in result.stderr


def test_connection_refused_is_one_line() -> None:
    result = run_cli("--timeout", "5", "query", f"TCPIP::127.0.0.1::{free_port()}::SOCKET", "*IDN?")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "connect" in result.stderr.lower()


def test_debug_prints_the_traceback() -> None:
    resource = f"TCPIP::127.0.0.1::{free_port()}::SOCKET"
    result = run_cli("--debug", "query", resource, "*IDN?")
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "ConnectError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("aiotmc: error: ")


def test_timeout_is_one_line(sim: SimProcess) -> None:
    # A query the instrument does not answer (undefined header): ReadTimeout after 0.5 s.
    result = run_cli(
        "--timeout", "0.5", "query", sim.resources["dmm"], "NO:SUCH:QUERy?", timeout=10
    )
    assert result.returncode == 1
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert sim.resources["dmm"] in result.stderr


# --------------------------------------------------------------------------- in-process


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("list", "query", "write", "read-block", "shell", "sim", "demo"):
        assert command in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aiotmc ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["query", "SIM::dmm"], "required: CMD"),
        (["query", "FOO::x", "*IDN?"], "unknown interface type 'FOO'"),
        (["--timeout", "soon", "list"], "expected seconds or 'none'"),
        (["--timeout", "-1", "list"], "timeout must be >= 0 seconds"),
        (["--timeout", "5000", "list"], "seconds, not milliseconds: did you mean 5?"),
        (["sim", "--idle-timeout", "0"], "'none' (never)"),
        (["read-block", "SIM::scope", "B?", "-o", "x", "--max-size", "lots"], "expected a size"),
        (["--read-termination", "", "list"], "use 'none'"),
        (["--backend", "curio", "list"], "invalid choice: 'curio'"),
        (["sim", "--device", "dmm:70000"], "port must be 0..65535"),
        (["read-block", "SIM::scope", ":WAV:DATA?"], "required: -o/--output"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aiotmc: error: ")
    assert err.count("\n") == 1
    assert message in err


def test_query_sim_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "SIM::dmm::cli_query", "*IDN?", "*OPC?"]) == 0
    idn, opc = capsys.readouterr().out.splitlines()
    assert idn.count(",") == 3
    assert opc == "1"


def test_query_in_process_on_trio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", "trio", "query", "SIM::dmm::cli_trio", "*IDN?"]) == 0
    assert capsys.readouterr().out.count(",") == 3


def test_list_with_usb_discovery(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    discovery = pytest.importorskip("aiotmc._usb.discovery")
    found = [
        discovery.UsbResourceInfo(
            vid=0x0957,
            pid=0x1796,
            serial="MY123",
            interface=0,
            manufacturer="Keysight",
            product="DSO-X 2002A",
            usb488=True,
        ),
        discovery.UsbResourceInfo(vid=0x1AB1, pid=0x04CE, serial=None, interface=0),
        discovery.UsbResourceInfo(vid=1, pid=2, serial="S N", interface=0, accessible=False),
    ]
    monkeypatch.setattr(discovery, "list_usbtmc_devices", lambda **_: found)
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "USB0::0x0957::0x1796::MY123::INSTR",
        "Keysight",
        "DSO-X",
        "2002A",
        "(USB488)",
    ]
    assert out[1].split()[:2] == ["USB0::0x1AB1::0x04CE::INSTR", "USBTMC"]
    assert "no access" in out[2]
    assert [line.split()[0] for line in out[3:] if not line.startswith("ASRL")] == [
        "SIM::dmm",
        "SIM::psu",
        "SIM::wavegen",
        "SIM::scope",
    ]


def test_list_when_usb_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> list[object]:
        raise OSError(2, "libusb-1.0.so: cannot open shared object file")

    fake = ModuleType("aiotmc._usb.discovery")
    fake.alist_usbtmc_devices = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiotmc._usb.discovery", fake)
    usb_package = pytest.importorskip("aiotmc._usb")
    monkeypatch.setattr(usb_package, "discovery", fake, raising=False)
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("aiotmc: note: usb: cannot list usb resources: ")
    assert "cannot open shared object file" in captured.err
    assert captured.err.count("\n") == 1
    assert "SIM::dmm" in captured.out


def test_list_and_info_without_the_usb_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "usb1", None)  # python-libusb1 not installed
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        'aiotmc: note: usb: python-libusb1 is not installed: pip install "aiotmc[usb]"\n'
    )
    assert "SIM::scope" in captured.out
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    usb = [line for line in lines if line.split()[:1] == ["usb"]]
    assert len(usb) == 1 and "unavailable: python-libusb1 is not installed" in usb[0]
    tcp = [line for line in lines if line.split()[:1] == ["tcpip-socket"]]
    assert len(tcp) == 1 and tcp[0].endswith(": available")


def test_describe_unwraps_exception_groups() -> None:
    inner = ConnectionRefusedError(111, "Connection refused")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert cli.describe(group) == "Connection refused"
    assert cli.describe(RuntimeError()) == "RuntimeError"
    assert cli.describe(RuntimeError("boom")) == "RuntimeError: boom"


def test_device_specs() -> None:
    assert cli._device_spec("DMM") == ("dmm", None)
    assert cli._device_spec("scope:0") == ("scope", 0)
    assert cli._device_spec("psu:5026") == ("psu", 5026)


def test_history_file_is_in_home() -> None:
    assert cli.HISTORY_FILE == "~/.aiotmc_history"
    assert os.path.expanduser(cli.HISTORY_FILE) != cli.HISTORY_FILE


def test_shell_history_follows_patched_history_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shell reads ``HISTORY_FILE`` of its module when it starts, so patching it works."""
    readline = pytest.importorskip("readline")
    history = tmp_path / "history"
    monkeypatch.setattr(cli._shell, "HISTORY_FILE", str(history))
    shell = Shell(inst=None, portal=None, interactive=True)  # type: ignore[arg-type]
    with shell._history():
        readline.add_history("*IDN?")
    assert "*IDN?" in history.read_text()
