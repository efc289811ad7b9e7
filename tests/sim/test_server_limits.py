"""SimServer's per-connection limits, in process (asyncio and trio, loopback only)."""

from __future__ import annotations

import errno
import logging
import socket

import anyio
import pytest

from aiotmc.sim import SimServer, create_device
from aiotmc.sim.server import raise_fd_limit

from .test_server import arb, connect

TIMEOUT = 10
IDN = b"aiotmc,SIM-DMM,0001,0.1\n"


async def until_closed(client_stream: anyio.abc.SocketStream) -> None:
    """Read until the server closes the connection (EOF or reset)."""
    for _ in range(1000):
        try:
            await client_stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return
    raise AssertionError("the server kept the connection open")


async def test_text_over_the_limit_is_dropped_and_the_client_resyncs() -> None:
    device = create_device("dmm")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device, max_text_size=1000) as server, connect(server) as client:
            await client.send(b"MEAS:VOLT " + b"1" * 5000)
            await client.send(b"2" * 5000 + b"\n")
            assert await client.query(b"*IDN?\n") == IDN
            assert server.violations == {"text too long": 1}
            assert device.errors == []  # not in the queue every client reads


async def test_block_over_the_limit_is_skipped_by_count() -> None:
    device = create_device("wavegen")
    payload = b"\n;" * 1000  # newlines inside the block must not end the message
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device, max_message_size=1000) as server, connect(server) as client:
            await client.send(b"DATA:ARB x,#42000" + payload + b"\n*IDN?\n")
            assert (await client.receive()).startswith(b"aiotmc,SIM-WAVEGEN")
            assert server.violations == {"block too large": 1}
            assert device.errors == []
            # a block within the limit still works on the same connection
            await client.send(b"DATA:ARB y," + arb([1, 2, 3, 4] * 8) + b"\n")
            assert await client.query(b"DATA:ARB:CAT?\n") == b'"Y"\n'
            assert device.errors == []


async def test_block_header_allocates_nothing_up_front() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm")) as server, connect(server) as hostile:
            await hostile.send(b"DATA #9268000000abc")
            async with connect(server) as client:
                assert await client.query(b"*IDN?\n") == IDN
            [conn] = [c for c in server._connections if c.framer.pending]
            assert conn.framer.pending < 100  # what arrived, not what was announced


async def test_too_many_elements_is_dropped() -> None:
    device = create_device("dmm")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device, max_elements=10) as server, connect(server) as client:
            await client.send(b'X "a"' + b',"a"' * 20 + b"\n")
            assert await client.query(b"*IDN?\n") == IDN
            assert server.violations == {"too many elements": 1}
            assert device.errors == []


async def test_long_header_is_answered_with_112_and_echo_is_escaped() -> None:
    device = create_device("dmm")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server, connect(server) as client:
            await client.send(b"A" * 100_000 + b"\n")
            answer = await client.query(b"SYST:ERR?\n")
            assert answer.startswith(b'-112,"Program mnemonic too long; header of more than 256')
            await client.send(b"\xff\xfeBAD\x01 1\n")
            answer = await client.query(b"SYST:ERR?\n")
            assert answer == b"-102,\"Syntax error; bad header '\\xff\\xfeBAD\\x01'\"\n"
            assert answer.isascii()


async def test_idle_client_is_dropped() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm"), idle_timeout=0.2) as server:
            async with connect(server) as idle:
                await until_closed(idle.stream)
            await server.wait_connections(0)
            assert server.violations == {"idle timeout": 1}
            async with connect(server) as client:  # a busy client is not idle
                assert await client.query(b"*IDN?\n") == IDN


async def test_client_that_never_reads_does_not_hold_the_device() -> None:
    """With no send timeout at all, other clients are still served: no lock while draining."""
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("scope"), send_timeout=None) as server:
            with socket.create_connection((server.host, server.port)) as hostile:
                hostile.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                hostile.sendall(b":WAV:TEST? 4000000\n" * 4)  # answers fill every buffer
                async with connect(server) as client:
                    for _ in range(20):
                        assert (await client.query(b"*IDN?\n")).startswith(b"aiotmc,SIM-SCOPE")


async def test_client_that_never_reads_is_dropped_after_the_send_timeout() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("scope"), send_timeout=0.2) as server:
            with socket.create_connection((server.host, server.port)) as hostile:
                hostile.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                hostile.sendall(b":WAV:TEST? 4000000\n" * 4)
                await server.wait_connections(1)
                await server.wait_connections(0)
                assert server.violations == {"send timeout": 1}
                error = hostile.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert error in (0, errno.ECONNRESET)


async def test_connection_cap() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm"), max_connections=2) as server:
            async with connect(server) as first, connect(server) as second:
                await server.wait_connections(2)
                try:
                    third = await anyio.connect_tcp(server.host, server.port)
                except OSError:
                    pass  # reset before the connection was even reported (trio)
                else:
                    async with third:
                        await until_closed(third)
                assert server.violations == {"connection limit": 1}
                assert await first.query(b"*IDN?\n") == IDN
                assert await second.query(b"*IDN?\n") == IDN
            await server.wait_connections(0)
            async with connect(server) as again:
                assert await again.query(b"*IDN?\n") == IDN


async def test_violations_are_logged_once_per_connection_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiotmc.sim.server")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm"), max_text_size=10) as server:
            async with connect(server) as client:
                for _ in range(5):
                    await client.send(b"X" * 50 + b"\n")
                assert await client.query(b"*IDN?\n") == IDN
            assert len(caplog.records) == 1
            assert "text too long" in caplog.records[0].getMessage()
            for _ in range(30):
                async with connect(server) as client:
                    await client.send(b"X" * 50 + b"\n")
                    assert await client.query(b"*IDN?\n") == IDN
            assert server.violations == {"text too long": 35}
            assert len(caplog.records) == 10  # 10 per 10 s, whatever the clients do


def test_limits_are_validated() -> None:
    device = create_device("dmm")
    with pytest.raises(ValueError, match="max_text_size"):
        SimServer(device, max_text_size=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        SimServer(device, idle_timeout=0)


def test_raise_fd_limit_never_lowers() -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(1) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


class _ExhaustedListener:
    """A listener whose accept() always fails as at the descriptor limit."""

    def __init__(self) -> None:
        self.calls = 0

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")


async def test_accept_at_the_descriptor_limit_backs_off_and_logs_little(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiotmc.sim.server")
    listener = _ExhaustedListener()
    server = SimServer(create_device("dmm"))
    with anyio.move_on_after(1.0):
        await server._accept_loop(listener)  # type: ignore[arg-type]
    assert 3 <= listener.calls <= 12  # one try per 0.1 s, not a busy loop
    assert server.violations == {"accept failed": listener.calls}
    assert len(caplog.records) <= 10
    assert "Too many open files" in caplog.records[0].getMessage()


async def test_connection_cap_holds_for_a_burst_of_connects() -> None:
    """Connections accepted in one go count against the cap before their tasks run."""
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm"), max_connections=3) as server:
            burst = [socket.create_connection((server.host, server.port)) for _ in range(10)]
            try:
                await server.wait_connections(3)
                for _ in range(100):
                    if server.violations["connection limit"] == 7:
                        break
                    await anyio.sleep(0.01)  # the accept loop resets the other 7
                assert server.violations == {"connection limit": 7}
                assert server.connections == 3
            finally:
                for sock in burst:
                    sock.close()
