"""``aiotmc agent`` as a real process, with faults: the agent killed, the NATS server
killed and restarted. Remote operations fail with typed errors within their deadlines
while something is down, and work again once it is back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

import aiotmc

from ..nats_server import RunningNats, running_nats


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[RunningNats]:
    with running_nats(tmp_path) as server:
        yield server


@contextmanager
def agent_process(nats: RunningNats, name: str) -> Iterator[subprocess.Popen[str]]:
    log_path = nats.workdir / f"agent-{name}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiotmc",
            "-v",
            "agent",
            "--nats",
            nats.url,
            "--name",
            name,
            "--heartbeat",
            "0.2",
            "dmm=SIM::dmm",
            "psu=SIM::psu",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once every instrument is served
        assert first.startswith(f"{nats.url}/{name}/dmm"), (first, log_path.read_text())
        yield proc
    except BaseException:
        print(f"--- agent {name} log:\n{log_path.read_text()}")
        raise
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def until_answers(resource: str, *, within: float) -> str:
    """Open and query ``resource`` until it answers (bounded in time and count)."""
    last: Exception | None = None
    with anyio.move_on_after(within):
        for _ in range(1000):
            try:
                async with aiotmc.open(resource, timeout=2, connect_timeout=2) as inst:
                    return await inst.query("*IDN?")
            except (aiotmc.ConnectError, aiotmc.ResourceNotFoundError, aiotmc.AiotmcTimeout) as exc:
                last = exc
                await anyio.sleep(0.05)  # a bounded retry poll, not a synchronisation
    raise AssertionError(f"{resource} never answered within {within} s: {last!r}")


async def test_remote_instruments_of_an_agent_process(nats: RunningNats) -> None:
    with agent_process(nats, "hostA"):
        async with aiotmc.open(f"{nats.url}/hostA/psu", timeout=5) as psu:
            assert "PSU" in (await psu.query("*IDN?")).upper()
            await psu.write("VOLT 3.5")
            assert float(await psu.query("VOLT?")) == pytest.approx(3.5)


async def test_a_killed_agent_gives_typed_errors_in_time(nats: RunningNats) -> None:
    with agent_process(nats, "hostB") as proc:
        async with aiotmc.open(f"{nats.url}/hostB/dmm", timeout=1) as inst:
            await inst.query("*IDN?")
            proc.kill()
            proc.wait(10)
            with anyio.fail_after(5):  # the 1 s timeout plus the bus margin, not more
                with pytest.raises((aiotmc.ResourceNotFoundError, aiotmc.ReadTimeout)):
                    await inst.query("*IDN?")
    with pytest.raises(aiotmc.ResourceNotFoundError, match="hostB"):
        async with aiotmc.open(f"{nats.url}/hostB/dmm", connect_timeout=2):
            pass


async def test_the_agent_comes_back_after_the_nats_server_restarts(nats: RunningNats) -> None:
    with agent_process(nats, "hostC"):
        resource = f"{nats.url}/hostC/dmm"
        assert "DMM" in (await until_answers(resource, within=10)).upper()
        async with aiotmc.open(resource, timeout=1) as inst:
            nats.kill()
            with anyio.fail_after(5):
                with pytest.raises((aiotmc.ConnectionLostError, aiotmc.ReadTimeout)):
                    await inst.query("*IDN?")
        nats.start()  # same port: the agent reconnects by itself
        assert "DMM" in (await until_answers(resource, within=30)).upper()
