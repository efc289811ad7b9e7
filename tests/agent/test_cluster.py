"""A 3-node NATS cluster keeps remote instruments working when nodes stop: the agent and
the client move to another node (the agent by its server list, the client by the
reconnect policy and the nodes the cluster announces)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest

import aiotmc

from ..nats_server import RunningNats, free_port, require_nats


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RunningNats]]:
    require_nats()
    routes = [free_port() for _ in range(3)]
    route_urls = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
    nodes = []
    with ExitStack() as stack:
        for i, route in enumerate(routes):
            workdir = tmp_path / f"n{i}"
            workdir.mkdir()
            node = RunningNats(
                free_port(),
                workdir,
                extra=(
                    "--name",
                    f"n{i}",
                    "--cluster_name",
                    "lab",
                    "--cluster",
                    f"nats://127.0.0.1:{route}",
                    "--routes",
                    route_urls,
                ),
            )
            node.start()
            stack.callback(node.stop)
            nodes.append(node)
        yield nodes


async def query_until_ok(inst: aiotmc.Instrument, *, within: float, step: str = "") -> str:
    """Query until an answer comes (bounded): nodes and interest need a moment to settle."""
    last: Exception | None = None
    with anyio.move_on_after(within):
        for _ in range(2000):
            try:
                return await inst.query("*IDN?", timeout=1)
            except (
                aiotmc.TransportError,
                aiotmc.ResourceNotFoundError,
                aiotmc.AiotmcTimeout,
            ) as exc:
                last = exc
                await anyio.sleep(0.05)  # a bounded retry poll, not a synchronisation
    raise AssertionError(f"{step}: no answer within {within} s: {last!r}")


def start_agent(cluster: list[RunningNats]) -> subprocess.Popen[str]:
    """``aiotmc agent`` knowing every node of the cluster (its log: agent.log)."""
    with (cluster[0].workdir.parent / "agent.log").open("w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiotmc",
                "-v",
                "agent",
                "--name",
                "bench",
                "--nats",
                ",".join(node.url for node in cluster),
                "dmm=SIM::dmm",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


async def test_remote_instruments_survive_nodes_stopping(cluster: list[RunningNats]) -> None:
    n0, n1, n2 = cluster
    agent = start_agent(cluster)
    try:
        assert agent.stdout is not None and agent.stdout.readline()
        async with aiotmc.open(
            f"{n1.url}/bench/dmm",
            timeout=2,
            connect_timeout=2,
            reconnect=True,
            servers=[f"127.0.0.1:{n2.port}"],
        ) as dmm:
            assert "DMM" in (await query_until_ok(dmm, within=40, step="formed")).upper()
            n0.kill()  # the agent's node: it moves to another
            assert "DMM" in (await query_until_ok(dmm, within=40, step="n0 down")).upper()
            n1.kill()  # the client's node: the reconnect policy moves it to n2
            assert "DMM" in (await query_until_ok(dmm, within=40, step="n1 down")).upper()
            assert dmm.transport.reconnects >= 1  # type: ignore[attr-defined]
    except BaseException:
        log = cluster[0].workdir.parent / "agent.log"
        print(f"--- agent log:\n{log.read_text()[-4000:]}")
        raise
    finally:
        agent.kill()
        agent.wait(10)
        if agent.stdout is not None:
            agent.stdout.close()
