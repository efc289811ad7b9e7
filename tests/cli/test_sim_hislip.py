"""``aiotmc sim --hislip PORT``: the same instruments over HiSLIP, optionally TLS + SASL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trustme

import aiotmc
from aiotmc.cli import main

AIOTMC = [sys.executable, "-m", "aiotmc"]
POSIX = sys.platform != "win32"


def _serve(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AIOTMC, "sim", "--device", "dmm:0", "--device", "psu:0", "--hislip", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_sim_serves_the_same_instruments_over_hislip(capsys: pytest.CaptureFixture[str]) -> None:
    proc = _serve()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(4)]
        sockets = {line[1]: line[0] for line in lines[:2]}
        hislip = {line[1]: line[0] for line in lines[2:]}
        assert [line[2:] for line in lines[2:]] == [["(HiSLIP)"], ["(HiSLIP)"]]
        assert "::hislip0," in hislip["psu"]
        assert main(["write", sockets["psu"], "VOLT 2.5"]) == 0
        assert main(["query", hislip["psu"], "VOLT?"]) == 0  # the same device, over HiSLIP
        assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(2.5)
    finally:
        _stop(proc)


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_sim_hislip_with_tls_and_users(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    users = tmp_path / "users"
    users.write_text("# test users\nada:lovelace\n", encoding="utf-8")
    proc = _serve(
        "--hislip-tls", str(cert), str(key), "--hislip-require-tls", "--hislip-users", str(users)
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(4)]
        resource = lines[2][0]

        async def ask() -> str:
            with anyio.fail_after(20):
                async with aiotmc.open(
                    resource, tls_ca_file=str(ca_file), username="ada", password="lovelace"
                ) as inst:
                    assert inst.transport.info.details["encryption"].startswith("TLS")
                    return await inst.query("*IDN?")

        assert "SIM-DMM" in anyio.run(ask)
    finally:
        _stop(proc)


def test_hislip_options_need_hislip(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--hislip-overlapped"]) == 2
    assert "need --hislip PORT" in capsys.readouterr().err
    assert main(["sim", "--hislip", "0", "--hislip-require-tls"]) == 2
    assert "need --hislip-tls" in capsys.readouterr().err


def test_hislip_strict_option() -> None:
    from aiotmc.cli import build_parser
    from aiotmc.cli._sim import _hislip_options

    args = build_parser().parse_args(["sim", "--hislip", "0", "--hislip-strict"])
    assert _hislip_options(args) == {"overlapped": False, "strict": True}
    args = build_parser().parse_args(["sim", "--hislip", "0"])
    assert "strict" not in _hislip_options(args)
    assert main(["sim", "--hislip-strict"]) == 2
