"""``aiotmc sim --pty --prologix PORT --prologix-pty``: the simulated instruments on
pseudo-terminals and behind simulated Prologix adapters, queried with ``aiotmc query``."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from aiotmc.cli import main

AIOTMC = [sys.executable, "-m", "aiotmc"]
SERIAL_AND_GPIB = ["--pty", "--prologix", "0", "--prologix-pty"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ptys and POSIX signals")


def test_sim_on_ptys_and_behind_prologix_adapters(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = subprocess.Popen(
        [*AIOTMC, "sim", "--device", "dmm:0", "--device", "psu:0", *SERIAL_AND_GPIB],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [[*proc.stdout.readline().split(maxsplit=2), ""][:3] for _ in range(10)]
        serial = {line[1]: line[0] for line in lines if "(serial," in line[2]}
        tcp = {line[1]: line[0] for line in lines if "Prologix on TCP" in line[2]}
        pty = {line[1]: line[0] for line in lines if "Prologix on a pty" in line[2]}
        adapters = [line[0] for line in lines if line[1] == "adapter"]
        assert serial["dmm"].startswith("ASRL/dev/") and serial["dmm"].endswith("::INSTR")
        assert tcp["psu"].startswith("PRLGX-TCPIP0::127.0.0.1::") and tcp["psu"].endswith(
            "::2::INSTR"
        )
        assert pty["dmm"].startswith("PRLGX-ASRL0::/dev/") and pty["dmm"].endswith("::1::INSTR")
        assert len(adapters) == 2 and all(a.endswith("::INTFC") for a in adapters)

        assert main(["write", serial["psu"], "VOLT 2.5"]) == 0
        assert main(["query", tcp["psu"], "VOLT?"]) == 0  # the same device behind GPIB
        assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(2.5)
        assert main(["query", pty["dmm"], "*IDN?"]) == 0
        assert "SIM-DMM" in capsys.readouterr().out
        monkeypatch.setenv("AIOTMC_GPIB0", adapters[0])
        assert main(["query", "GPIB0::1::INSTR", "*IDN?"]) == 0  # through the board table
        assert "SIM-DMM" in capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()


def test_too_many_instruments_for_one_bus(capsys: pytest.CaptureFixture[str]) -> None:
    devices = [arg for _ in range(31) for arg in ("--device", "dmm:0")]
    assert main(["sim", *devices, "--prologix", "0"]) != 0
    assert "1..30" in capsys.readouterr().err
