"""DNS-SD browsing and unicast probing, only inside a network namespace this test creates
(``unshare -n``: a private ``lo`` and nothing else, so no packet reaches a real network)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiotmc.transports.lan_discovery import resource_for

HELPER = Path(__file__).with_name("netns_discovery.py")
SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


def _namespace_command() -> tuple[list[str] | None, str]:
    """The ``unshare`` prefix that makes a network namespace here (as root, or in a user
    namespace without privileges), or None and why not."""
    if sys.platform != "linux":
        return None, "network namespaces are Linux only"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "unshare or ip (util-linux, iproute2) not installed"
    error = ""
    for prefix in (["unshare", "-n"], ["unshare", "-r", "-n"]):
        probe = subprocess.run(
            [*prefix, "sh", "-c", SETUP], capture_output=True, text=True, timeout=10
        )
        if probe.returncode == 0:
            return prefix, ""
        error = probe.stderr.strip()[:200]
    return None, f"cannot create a network namespace here: {error}"


UNSHARE, REASON = _namespace_command()


def test_resource_names_for_announcements() -> None:
    assert resource_for("_hislip._tcp.local.", "10.0.0.7", 4880) == (
        "TCPIP0::10.0.0.7::hislip0::INSTR"
    )
    assert resource_for("_hislip._tcp.local.", "10.0.0.7", 4999) == (
        "TCPIP0::10.0.0.7::hislip0,4999::INSTR"
    )
    assert resource_for("_scpi-raw._tcp.local.", "fe80::1", 5025) == (
        "TCPIP0::[fe80::1]::5025::SOCKET"
    )
    assert resource_for("_lxi._tcp.local.", "10.0.0.7", 80) == "TCPIP0::10.0.0.7::inst0::INSTR"
    assert resource_for("_http._tcp.local.", "10.0.0.7", 80) is None


@pytest.mark.skipif(UNSHARE is None, reason=REASON)
def test_browse_and_probe_in_a_private_namespace() -> None:
    """Both backends in one namespace (the helper runs asyncio, then trio)."""
    command = f"{SETUP} && exec {sys.executable} {HELPER}"
    result = subprocess.run(
        [*(UNSHARE or []), "sh", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(results) == {"asyncio", "trio"}
    for backend, found in results.items():
        browsed = found["browsed"]
        assert set(browsed) == {
            "TCPIP0::127.0.0.1::hislip0::INSTR",
            "TCPIP0::127.0.0.1::hislip0,4999::INSTR",
            "TCPIP0::127.0.0.1::5025::SOCKET",
            "TCPIP0::127.0.0.1::inst0::INSTR",
        }, (backend, browsed)
        hislip = browsed["TCPIP0::127.0.0.1::hislip0::INSTR"]
        assert "SIM-DMM hislip on simdmm.local" in hislip
        # unicast probing of the named hosts: the open HiSLIP and SCPI ports only
        listed = found["listed"]
        assert "TCPIP0::127.0.0.1::hislip0::INSTR" in listed, (backend, listed)
        assert "TCPIP0::127.0.0.1::5025::SOCKET" in listed
        assert "TCPIP0::127.0.0.1::inst0::INSTR" not in listed  # no portmapper here
        assert "SIM-DMM" in found["idn"]  # a browsed name opens
