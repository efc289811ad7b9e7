"""``aiotmc read-block``: streamed into the output file, progress from the transport."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiotmc
from aiotmc.cli import main
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer
from aiotmc.sync._portal import portal_for

from .test_cli import AIOTMC, READY_TIMEOUT, run_cli

SIZE = 3_000_000
COMMAND = f":WAVeform:TEST? {SIZE}"


def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.fixture(scope="module")
def scope() -> Iterator[str]:
    """A simulated scope on a raw socket (served by aiotmc.sync's loop thread)."""
    with portal_for("asyncio").hold(SimServer(create_device("scope"))) as server:
        yield server.resource


async def test_the_tcp_transport_reports_a_block_as_it_arrives() -> None:
    seen: list[tuple[int, int]] = []
    async with SimServer(create_device("scope")) as server, aiotmc.open(server.resource) as inst:
        inst.transport.block_progress = lambda got, size: seen.append((got, size))  # type: ignore[attr-defined]
        payload = await inst.query_block(COMMAND, max_size=SIZE)
    assert bytes(payload) == _pattern(SIZE)
    assert seen[-1] == (SIZE, SIZE)
    assert all(size == SIZE for _, size in seen)
    assert [got for got, _ in seen] == sorted(got for got, _ in seen)


def test_the_payload_goes_to_the_file_and_replaces_it_whole(scope: str, tmp_path: Path) -> None:
    out = tmp_path / "wave.bin"
    out.write_bytes(b"older and longer than nothing")
    assert main(["read-block", scope, COMMAND, "-o", str(out)]) == 0
    assert out.read_bytes() == _pattern(SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.bin"]  # no temporary left
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_a_failed_read_leaves_the_old_file_and_no_temporary(scope: str, tmp_path: Path) -> None:
    out = tmp_path / "wave.bin"
    out.write_bytes(b"keep me")
    result = run_cli("read-block", "--max-size", "1000", scope, COMMAND, "-o", str(out))
    assert result.returncode == 1 and "max_size=1000" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.bin"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX device file")
def test_a_device_as_output_is_written_not_replaced(scope: str) -> None:
    assert main(["read-block", scope, ":WAVeform:TEST? 1000", "-o", os.devnull]) == 0
    assert Path(os.devnull).is_char_device()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_shows_bytes_percent_and_rate_on_a_terminal(scope: str, tmp_path: Path) -> None:
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    out = tmp_path / "wave.bin"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [*AIOTMC, "read-block", scope, COMMAND, "-o", str(out)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    data = b""
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while b"wrote " not in data and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion failed
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    text = data.decode(errors="replace")
    assert "3.0/3.0 MB" in text and "100%" in text and "MB/s" in text
    assert f"wrote {SIZE} bytes to {out}" in text
    assert out.read_bytes() == _pattern(SIZE)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
