"""Issue 18: a CLI that never lies. Each test failed before the fix it names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aiotmc.cli import main

from .test_cli import AIOTMC, TIMEOUT, SimProcess, error_lines, free_port, run_cli, sim

__all__ = ["sim"]  # the module-scoped `aiotmc sim` fixture, shared with test_cli

UNREACHABLE = f"TCPIP::127.0.0.1::{free_port()}::SOCKET"  # connecting would fail (status 1)


def test_write_refuses_a_query_before_opening(capsys: pytest.CaptureFixture[str]) -> None:
    # before: exit 0, the *IDN? answer read as if it were the appended *OPC?'s
    assert main(["write", UNREACHABLE, "VOLT 1;*IDN?"]) == 2
    err = capsys.readouterr().err
    assert "'*IDN?' is a query" in err and err.count("\n") == 1


def test_write_check_with_a_query_is_no_syst_err_confusion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # before: "unparsable SYST:ERR? answer" (the *IDN? answer read as the error queue)
    assert main(["write", "--check", "SIM::dmm", "*IDN?"]) == 2
    err = capsys.readouterr().err
    assert "is a query" in err and "SYST:ERR" not in err


def test_query_without_a_query_says_so_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    # before: waited the whole timeout for an answer that never comes
    assert main(["query", UNREACHABLE, "*RST"]) == 2
    assert "'*RST' is not a query" in capsys.readouterr().err
    # a string holding '?' or ';' is not a header
    assert main(["query", "SIM::dmm", "*RST;*IDN?"]) == 0
    assert main(["write", "SIM::dmm", 'DISP:TEXT "ok?;x"']) == 0


def test_shell_unknown_meta_command_is_local(sim: SimProcess) -> None:
    # before: ':bogus' was written to the instrument (which queued an undefined-header error)
    script = ":bogus\n:errors\n:MEASure:VOLTage:DC?\n"
    result = run_cli("shell", sim.resources["dmm"], stdin=script)
    assert "unknown shell command ':bogus'" in result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == '0, "No error"'  # nothing reached the instrument
    float(lines[1])  # an upper-case SCPI header with a leading ':' still goes through


def test_ipv6_address_in_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback")
    # before: "cannot connect to ::1:PORT"
    assert main(["--timeout", "5", "query", f"TCPIP::[::1]::{port}::SOCKET", "*IDN?"]) == 1
    assert f"[::1]:{port}" in capsys.readouterr().err


def test_sim_port_in_use_said_once() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("sim", "--device", f"dmm:{port}")
    # before: "cannot listen on 127.0.0.1 port P: cannot listen on 127.0.0.1:P: ..."
    assert result.stderr.count("cannot listen") == 1, result.stderr
    assert error_lines(result.stderr) == [result.stderr.strip()]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_closed_stdout_is_quiet() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -0`: the reader is gone before anything is written
    try:
        result = subprocess.run(
            [*AIOTMC, "query", "SIM::dmm", "*IDN?", "*IDN?"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)
    # before: "aiotmc: error: Broken pipe"
    assert result.stderr == ""
    assert result.returncode == 141


def test_trace_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trace", "query", "SIM::dmm", "*IDN?"]) == 0
    err = capsys.readouterr().err
    assert "aiotmc.io DEBUG SIM::dmm write '*IDN?\\n'" in err
    assert "aiotmc.io DEBUG SIM::dmm read 'aiotmc,SIM-DMM" in err
    assert main(["-v", "query", "SIM::dmm", "*IDN?"]) == 0
    err = capsys.readouterr().err
    assert "aiotmc INFO SIM::dmm: open" in err and "aiotmc.io" not in err


def test_terminations(sim: SimProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--read-termination", "none", "query", "SIM::dmm", "*IDN?"]) == 0
    assert capsys.readouterr().out.endswith(",0.1\n\n")  # the "\n" was kept
    resource = sim.resources["dmm"]
    assert main(["--read-termination", "none", "query", resource, "*IDN?"]) == 2
    assert "raw socket" in capsys.readouterr().err
    assert main(["--write-termination", "\\r\\n", "query", resource, "*IDN?"]) == 0
    assert capsys.readouterr().out.count(",") == 3


def test_timeout_zero_is_at_once_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    # before: the CLI read "0" as forever, the API as at once
    assert main(["--timeout", "0", "query", UNREACHABLE, "*IDN?"]) == 1
    assert "within 0.0 s" in capsys.readouterr().err


def test_read_block_max_size(sim: SimProcess, tmp_path: Path) -> None:
    out = tmp_path / "wave.bin"
    result = run_cli(
        "read-block", "--max-size", "16", sim.resources["scope"], ":WAV:DATA?", "-o", str(out)
    )
    assert result.returncode == 1 and "max_size=16" in result.stderr
    result = run_cli(
        "read-block", "--max-size", "1M", sim.resources["scope"], ":WAV:DATA?", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 16
