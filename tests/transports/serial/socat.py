"""A ``socat`` bridge between two serial ports: a new pty (a symlink at ``link``) joined to
an existing tty, as a USB-serial adapter or a terminal server joins a host to a line."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process


def socat_binary() -> str:
    """The socat executable; skipped where it is missing, a failure in CI."""
    found = shutil.which("socat")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("socat is not installed (scripts/test.sh installs it)")
        pytest.skip("socat is not installed")
    return found


@asynccontextmanager
async def socat_bridge(target: str, link: Path) -> AsyncIterator[Process]:
    """Run ``socat`` joining ``target`` (a tty path) to a new pty at ``link``; yields once
    both ends are open (socat says so on stderr), stops it at the end."""
    command = [
        socat_binary(),
        "-d",
        "-d",
        f"pty,raw,echo=0,link={link}",
        f"file:{target},raw,echo=0",
    ]
    process = await anyio.open_process(command)
    try:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(10):
            while b"starting data transfer loop" not in seen:
                seen += await process.stderr.receive()
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:  # pragma: no cover - socat ignored SIGTERM
                process.kill()
                await process.wait()
            await process.aclose()
