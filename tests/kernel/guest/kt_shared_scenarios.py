"""The umockdev tier's client scenarios, rerun on the real kernel stack.

``tests/usb/umockdev_client.py`` holds client scenarios written against umockdev's device
process. Those that only need a plugged instrument and the control commands ``unplug``
and ``interrupt 81XX`` run here unchanged, in-process: a small unix-socket server stands
in for the umockdev control socket and forwards to the host's device hub. Scenarios that
need umockdev's ioctl statistics stay in the umockdev tier.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .link import PID, VID, HostLink

SHARED = {
    "idn_roundtrip": "dmm",
    "transport_block": "scope",
    "read_stb": "dmm",
    "srq": "dmm",
    "unplug": "dmm",
    "busy": "dmm",
    "misuse": "dmm",
}


class ControlProxy:
    """The umockdev control protocol (one command per line, JSON replies) -> HostLink."""

    def __init__(self, host: HostLink, path: Path) -> None:
        self.host = host
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _command(self, line: str) -> Any:
        verb, _, rest = line.strip().partition(" ")
        if verb == "unplug":
            self.host.unplug(wait=False)
            return None
        if verb == "interrupt":
            data = bytes.fromhex(rest)
            if data[:1] != b"\x81":
                raise ValueError(f"only SRQ notifications can be injected here, not {rest}")
            return self.host.call("inject_srq", data[1])
        if verb == "ping":
            return "pong"
        raise ValueError(f"{verb!r} needs the umockdev device process")

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for raw in stream:
                try:
                    reply = {"ok": True, "result": self._command(raw.decode())}
                except Exception as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


@pytest.fixture
def proxy(plugged: HostLink, tmp_path: Path) -> Iterator[ControlProxy]:
    control = ControlProxy(plugged, tmp_path / "control.sock")
    yield control
    control.close()


@pytest.fixture(params=["thread", "pollfd"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("name", sorted(SHARED))
async def test_umockdev_scenario(
    name: str, driver: str, proxy: ControlProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios = pytest.importorskip("tests.usb.umockdev_client")
    if name not in scenarios.SCENARIOS:
        pytest.skip(f"scenario {name!r} is no longer in tests/usb/umockdev_client.py")
    device = proxy.host.plug(SHARED[name])
    info = {"devices": [{"serial": device.serial, "vid": VID, "pid": PID}], "pid": os.getpid()}
    monkeypatch.setenv("AIOTMC_UMOCKDEV_INFO", json.dumps(info))
    monkeypatch.setenv("AIOTMC_UMOCKDEV_CONTROL", str(proxy.path))
    env = scenarios.Env(driver)
    try:
        await scenarios.SCENARIOS[name](env)
    finally:
        await env.aclose()
