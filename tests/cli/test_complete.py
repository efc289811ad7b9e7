"""Tab completion in ``aiotmc shell``: ``:`` commands and the SCPI headers seen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiotmc.cli._complete import ShellCompleter, headers
from aiotmc.cli._shell import _SHELL_COMMANDS

from .test_cli import AIOTMC, READY_TIMEOUT


def _all(completer: ShellCompleter, text: str) -> list[str]:
    found = []
    for state in range(100):  # bounded: readline asks until None
        match = completer.complete(text, state)
        if match is None:
            return found
        found.append(match)
    raise AssertionError("the completer never said it was done")


def test_headers_of_a_program() -> None:
    assert headers('*RST;:MEAS:VOLT? 10,0.001;:DISP:TEXT "a;b"') == [
        "*RST",
        ":MEAS:VOLT?",
        ":DISP:TEXT",
    ]


def test_shell_commands_and_learnt_headers_complete_ignoring_case() -> None:
    completer = ShellCompleter(_SHELL_COMMANDS)
    assert _all(completer, ":b") == [":block"]
    assert _all(completer, ":e") == [":errors", ":exit"]
    assert _all(completer, "*") == []  # nothing learnt yet
    completer.learn("*IDN?")
    completer.learn(":MEASure:VOLTage? 10;*OPC?")
    assert _all(completer, "*") == ["*IDN?", "*OPC?"]
    assert _all(completer, ":meas") == [":MEASure:VOLTage?"]
    assert _all(completer, ":") == [*sorted(_SHELL_COMMANDS), ":MEASure:VOLTage?"]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_tab_completes_a_header_on_a_terminal(tmp_path: Path) -> None:
    """``*ID<Tab>`` after ``*IDN?`` was sent (learnt from the history file) is ``*IDN?``."""
    import pty
    import select
    import time

    (tmp_path / ".aiotmc_history").write_text("*IDN?\n")
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
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        return data

    try:
        read_until(b"SIM::dmm> ")
        os.write(master, b"*ID\t\n")
        assert b"SIM-DMM" in read_until(b"SIM::dmm> ")
        os.write(master, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion failed
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
