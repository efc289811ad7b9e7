"""Hostile clients against ``aiotmc sim`` in a real subprocess (loopback only).

Each case runs a hostile client (in a thread, plain blocking socket) next to a
well-behaved one (``aiotmc.open`` + ``*IDN?`` on the same simulated instrument) and
measures what the well-behaved client sees (p99 latency) and what the server costs
(growth of its resident set, read from ``/proc/<pid>/status``). The server runs on the
test's event loop backend. Figures are printed (``pytest -s``) for docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import aiotmc

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status (Linux only)"
)

MB = 1 << 20
P99_BOUND = 0.050  # seconds, the well-behaved client's *IDN?
RSS_BOUND = 64 * MB  # server growth while one hostile client acts
IDLE_RSS_BOUND = 100 * MB  # server growth for IDLE_CONNECTIONS idle clients
IDLE_CONNECTIONS = 2000
SEND_TIMEOUT = 1.0
MIN_QUERIES = 200
TIMEOUT = 60


@dataclass
class Sim:
    proc: subprocess.Popen[str]
    host: str
    port: int
    stderr: str = ""

    @property
    def resource(self) -> str:
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")  # pragma: no cover

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextlib.contextmanager
def run_sim(backend: str, *options: str) -> Iterator[Sim]:
    """``python -m aiotmc sim --device scope:0`` on 127.0.0.1, on ``backend``."""
    command = [sys.executable, "-m", "aiotmc", "--backend", backend, "sim"]
    command += ["--device", "scope:0", "--send-timeout", str(SEND_TIMEOUT), *options]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=30):
                raise AssertionError("aiotmc sim did not start in 30 s")
        line = proc.stdout.readline()
        resource = line.split()[0]  # TCPIP0::127.0.0.1::PORT::SOCKET
        _, host, port, _ = resource.split("::")
        sim = Sim(proc, host, int(port))
        yield sim
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            _, stderr = proc.communicate()
        assert "Traceback" not in stderr, stderr
    sim.stderr = stderr


@dataclass
class Observed:
    latencies: list[float] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98]


async def well_behaved(sim: Sim, hostile: Callable[[], None]) -> tuple[Observed, int]:
    """Query ``*IDN?`` while ``hostile()`` runs in a thread (and MIN_QUERIES times at
    least); returns what was observed and the server's resident set before."""
    observed = Observed()
    done = anyio.Event()
    async with aiotmc.open(sim.resource, timeout=10) as inst:
        assert (await inst.query("*IDN?")).startswith("aiotmc,SIM-SCOPE")
        baseline = sim.rss()

        async def attack() -> None:
            try:
                await anyio.to_thread.run_sync(hostile)
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(attack)
            while not done.is_set() or len(observed.latencies) < MIN_QUERIES:
                start = time.perf_counter()
                answer = await inst.query("*IDN?")
                observed.latencies.append(time.perf_counter() - start)
                assert answer.startswith("aiotmc,SIM-SCOPE")
                if len(observed.latencies) % 10 == 0:
                    observed.peak_rss = max(observed.peak_rss, sim.rss())
                    await anyio.lowlevel.checkpoint()
        observed.peak_rss = max(observed.peak_rss, sim.rss())
        # Nothing the hostile client did reached the error queue every client reads.
        assert await inst.query("SYST:ERR?") == '+0,"No error"'
    return observed, baseline


def report(name: str, observed: Observed, baseline: int) -> None:
    growth = (observed.peak_rss - baseline) / MB
    print(
        f"\n{name}: {len(observed.latencies)} *IDN? p99 {observed.p99 * 1000:.1f} ms,"
        f" max {max(observed.latencies) * 1000:.1f} ms; server RSS +{growth:.1f} MB"
    )
    assert observed.p99 <= P99_BOUND
    assert observed.peak_rss - baseline <= RSS_BOUND


async def poll(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` (about another process: no event to wait for)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_for_reset(sock: socket.socket, timeout: float) -> float:
    """Seconds until the peer reset ``sock`` (SO_ERROR), without reading from it."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"the server did not drop the client within {timeout} s")


async def test_200_mb_line(anyio_backend: str) -> None:
    """A 200 MB line with no newline is dropped as it arrives; the client then resyncs."""

    def hostile() -> None:
        with socket.create_connection((sim.host, sim.port), timeout=30) as sock:
            sock.sendall(b"MEAS:VOLT ")
            chunk = b"1" * MB
            for _ in range(200):
                sock.sendall(chunk)
            sock.sendall(b"\n*IDN?\n")  # the long line ends: next message is served
            answer = sock.makefile("rb").readline()
            assert answer.startswith(b"aiotmc,SIM-SCOPE"), answer[:80]

    with anyio.fail_after(TIMEOUT), run_sim(anyio_backend) as sim:
        observed, baseline = await well_behaved(sim, hostile)
    report("200 MB line", observed, baseline)


async def test_block_header_then_silence(anyio_backend: str) -> None:
    """``#9268000000`` announces 268 MB and sends nothing: nothing is allocated for it."""

    def hostile() -> None:
        with socket.create_connection((sim.host, sim.port), timeout=30) as sock:
            sock.sendall(b":WAV:UPL #9268000000")
            sock.sendall(b"\x00" * 1000)
            time.sleep(1.0)  # silence while the well-behaved client keeps querying

    with anyio.fail_after(TIMEOUT), run_sim(anyio_backend) as sim:
        observed, baseline = await well_behaved(sim, hostile)
    report("#9 header then silence", observed, baseline)


async def test_client_that_never_reads(anyio_backend: str) -> None:
    """Pipelined queries with 1 MB answers, never read: dropped after the send timeout,
    never holding the device lock while its socket is full."""
    dropped_after: list[float] = []

    def hostile() -> None:
        with socket.create_connection((sim.host, sim.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(b":WAV:TEST? 1000000\n" * 64)
            dropped_after.append(wait_for_reset(sock, SEND_TIMEOUT + 10))

    with anyio.fail_after(TIMEOUT), run_sim(anyio_backend) as sim:
        observed, baseline = await well_behaved(sim, hostile)
    report("queries never read", observed, baseline)
    assert dropped_after and dropped_after[0] <= SEND_TIMEOUT + 5


@pytest.mark.slow
async def test_2000_idle_connections(anyio_backend: str) -> None:
    """2,000 idle clients cost the server little memory; descriptors come back flat."""
    import resource

    needed = IDLE_CONNECTIONS + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard limit on open files ({hard}) is below {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        with anyio.fail_after(TIMEOUT), run_sim(anyio_backend) as sim:
            async with aiotmc.open(sim.resource, timeout=10) as inst:
                assert (await inst.query("*IDN?")).startswith("aiotmc,SIM-SCOPE")
                base_fds, baseline = sim.descriptors(), sim.rss()

                def connect_all() -> list[socket.socket]:
                    return [
                        socket.create_connection((sim.host, sim.port), timeout=10)
                        for _ in range(IDLE_CONNECTIONS)
                    ]

                clients = await anyio.to_thread.run_sync(connect_all)
                try:
                    await poll(lambda: sim.descriptors() >= base_fds + IDLE_CONNECTIONS)
                    latencies = []
                    for _ in range(MIN_QUERIES):
                        start = time.perf_counter()
                        assert (await inst.query("*IDN?")).startswith("aiotmc,SIM-SCOPE")
                        latencies.append(time.perf_counter() - start)
                    growth = sim.rss() - baseline
                finally:
                    for client in clients:
                        client.close()
                await poll(lambda: sim.descriptors() <= base_fds)  # it noticed the closes
                p99 = statistics.quantiles(latencies, n=100)[98]
                print(
                    f"\n{IDLE_CONNECTIONS} idle connections: server RSS +{growth / MB:.1f} MB"
                    f" ({growth / IDLE_CONNECTIONS / 1024:.1f} KiB each),"
                    f" *IDN? p99 {p99 * 1000:.1f} ms"
                )
                assert growth <= IDLE_RSS_BOUND
                assert await inst.query("*IDN?") != ""
    finally:
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_cli_limits_reach_the_server(anyio_backend: str) -> None:
    """``--max-connections`` and ``--idle-timeout`` are the server's; violations go to
    stderr, once per connection."""
    options = ("--max-connections", "1", "--idle-timeout", "0.5")
    with anyio.fail_after(TIMEOUT), run_sim(anyio_backend, *options) as sim:

        def clients() -> None:
            with socket.create_connection((sim.host, sim.port), timeout=10) as first:
                first.sendall(b"*IDN?\n")
                assert first.makefile("rb").readline().startswith(b"aiotmc,SIM-SCOPE")
                try:  # over the cap: reset at once (even before connect() returns)
                    with socket.create_connection((sim.host, sim.port), timeout=10) as second:
                        assert second.recv(100) == b""
                except ConnectionResetError:
                    pass
                start = time.monotonic()
                try:  # idle: dropped after 0.5 s
                    assert first.recv(100) == b""
                except ConnectionResetError:
                    pass
                assert time.monotonic() - start < 5

        await anyio.to_thread.run_sync(clients)
    assert sim.stderr.count("connection limit: 1 clients connected") == 1
    assert sim.stderr.count("idle timeout: nothing received for 0.5 s") == 1
