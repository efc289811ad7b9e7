"""SimServer over real TCP sockets on loopback (asyncio and trio)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from aiotmc.protocol import NEED_DATA
from aiotmc.protocol.framing import MessageDecoder
from aiotmc.protocol.ieee4882 import decode_block
from aiotmc.sim import (
    SimDevice,
    SimServer,
    SimWaveformGenerator,
    create_device,
    serve_forever,
    serve_many,
)

TIMEOUT = 10


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class Client:
    """A minimal raw-socket SCPI client with block-aware framing."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.decoder = MessageDecoder(max_message_size=1 << 28)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def receive(self) -> bytes:
        while True:
            message = self.decoder.next_message()
            if message is not NEED_DATA:
                assert isinstance(message, bytes)
                return message
            chunk = await self.stream.receive(1 << 20)
            self.decoder.receive_data(chunk)

    async def query(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.receive()

    async def receive_all(self) -> bytes:
        """Everything until the server closes the connection."""
        data = bytearray(self.decoder.buffered)
        while True:
            try:
                data += await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return bytes(data)


@asynccontextmanager
async def connect(server: SimServer) -> AsyncIterator[Client]:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        yield Client(stream)


def arb(samples: list[int]) -> bytes:
    payload = struct.pack(f"<{len(samples)}h", *samples)
    return b"#%d%d%s" % (len(str(len(payload))), len(payload), payload)


async def test_query_over_ipv4() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm")) as server:
            assert server.port > 0
            assert server.resource == f"TCPIP0::127.0.0.1::{server.port}::SOCKET"
            async with connect(server) as client:
                assert await client.query(b"*IDN?\n") == b"aiotmc,SIM-DMM,0001,0.1\n"
                assert server.connections == 1
                assert await client.query(b"*ESE 4;*ESE?;BOGUS;SYST:ERR?\n") == (
                    b'4;-113,"Undefined header; BOGUS"\n'
                )


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this host")
async def test_query_over_ipv6() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("psu"), host="::1") as server:
            assert server.resource == f"TCPIP0::[::1]::{server.port}::SOCKET"
            async with connect(server) as client:
                assert await client.query(b"*IDN?\n") == b"aiotmc,SIM-PSU,0001,0.1\n"


async def test_messages_split_and_pipelined_in_one_segment() -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            SimServer(create_device("dmm", latency=0.01)) as server,
            connect(server) as client,
        ):
            await client.send(b"*ID")
            await client.send(b"N?\n*ESE 1;*ESE?\n*OPC?\n")
            # each message waits for the previous answer: nothing is interrupted
            assert await client.receive() == b"aiotmc,SIM-DMM,0001,0.1\n"
            assert await client.receive() == b"1\n"
            assert await client.receive() == b"1\n"
            assert server.device.errors == []


async def test_block_upload_and_download_with_newlines() -> None:
    gen = create_device("wavegen")
    samples = [0x0A0A, 0x0A3B, 0x3B0A, -1, 0, 1, 2, 0x0A] * 4
    with anyio.fail_after(TIMEOUT):
        async with SimServer(gen) as server, connect(server) as client:
            await client.send(b"DATA:ARB nl," + arb(samples) + b"\n")
            assert await client.query(b"DATA:ARB:CAT?\n") == b'"NL"\n'
            response = await client.query(b"DATA:ARB? nl\n")
            assert struct.unpack(f"<{len(samples)}h", decode_block(response)) == tuple(samples)
            assert gen.errors == []


async def test_large_block_upload_fast_path_and_following_query() -> None:
    gen = SimWaveformGenerator()
    samples = list(range(-32768, 32768)) * 4  # 512 KiB, every byte value incl. 0x0A
    block = arb(samples)
    with anyio.fail_after(TIMEOUT):
        async with SimServer(gen) as server, connect(server) as client:
            response = await client.query(b"DATA:ARB big," + block + b";:DATA:ARB:CAT?;*OPC?\n")
            assert response == b'"BIG";1\n'
            assert gen.waveforms["BIG"] == decode_block(block)
            payload = decode_block(await client.query(b"DATA:ARB? big\n"))
            assert payload == gen.waveforms["BIG"]


async def test_large_block_download() -> None:
    size = 3_000_000
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("scope")) as server, connect(server) as client:
            payload = decode_block(await client.query(b":WAV:TEST? %d\n" % size))
            assert payload == (bytes(range(256)) * (size // 256 + 1))[:size]
            assert await client.query(b"*OPC?\n") == b"1\n"


async def test_malformed_block_from_client_is_reported_and_skipped() -> None:
    device = create_device("dmm")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server, connect(server) as client:
            await client.send(b"DATA #9abc\n")
            assert await client.query(b"*IDN?\n") == b"aiotmc,SIM-DMM,0001,0.1\n"
            [(code, message)] = device.errors
            assert code == -161 and message.startswith("Invalid block data; ")


async def test_latency_is_honoured() -> None:
    latency = 0.2
    with anyio.fail_after(TIMEOUT):
        device = create_device("dmm", latency=latency)
        async with SimServer(device) as server, connect(server) as client:
            start = time.monotonic()
            assert await client.query(b"*IDN?\n") == b"aiotmc,SIM-DMM,0001,0.1\n"
            assert time.monotonic() - start >= latency
            # a command without response is not delayed; the next query still is
            await client.send(b"*ESE 1\n")
            start = time.monotonic()
            assert await client.query(b"*ESE?\n") == b"1\n"
            assert time.monotonic() - start >= latency


async def test_hung_query_then_client_gone_frees_the_device() -> None:
    device = create_device("dmm")
    device.delay_next_responses(float("inf"))
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server:
            async with connect(server) as client:
                await client.send(b"MEAS:VOLT?\n")
                with anyio.move_on_after(0.2) as scope:
                    await client.receive()
                assert scope.cancelled_caught
            await server.wait_connections(0)
            async with connect(server) as client:  # the server noticed the close
                assert await client.query(b"*IDN?\n") == b"aiotmc,SIM-DMM,0001,0.1\n"
            assert [code for code, _ in device.errors] == [-410]


async def test_operation_completes_with_no_client_connected() -> None:
    scope = create_device("scope", acquisition_time=0.05)
    srq = anyio.Event()
    scope.add_srq_listener(lambda stb: srq.set())
    with anyio.fail_after(TIMEOUT):
        async with SimServer(scope) as server:
            async with connect(server) as client:
                await client.send(b"*ESE 1;*SRE 32;:TRIG:SOUR IMM;:SING;*OPC\n")
                assert await client.query(b"*ESE?\n") == b"1\n"
            await server.wait_connections(0)
            await srq.wait()  # only the server's timer can have polled the device
            assert scope.status_byte & 0x40


async def test_timer_wakes_for_deadline_created_outside_the_server() -> None:
    scope = create_device("scope", acquisition_time=0.05)
    done = anyio.Event()
    scope.add_srq_listener(lambda stb: done.set())
    scope.write(b"*ESE 1;*SRE 32;:SING;*OPC")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(scope):
            await anyio.wait_all_tasks_blocked()  # the timer sleeps with no deadline
            scope.trigger()  # a new deadline, created directly on the device
            await done.wait()


async def test_disconnect_all_resets_connections() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("dmm")) as server:
            async with connect(server) as first, connect(server) as second:
                await first.query(b"*IDN?\n")
                await second.query(b"*IDN?\n")
                assert server.connections == 2
                server.disconnect_all()
                assert server.connections == 0
                for client in (first, second):
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await client.query(b"*IDN?\n")
            async with connect(server) as client:  # still listening
                assert await client.query(b"*OPC?\n") == b"1\n"


async def test_close_after_bytes_cuts_the_next_response() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SimServer(create_device("scope")) as server:
            async with connect(server) as client:
                server.close_after_bytes = 20
                await client.send(b":WAV:TEST? 1000\n")
                assert await client.receive_all() == b"#41000" + bytes(range(14))
            await server.wait_connections(0)
            assert server.close_after_bytes is None  # one-shot
            async with connect(server) as client:
                assert len(decode_block(await client.query(b":WAV:TEST? 1000\n"))) == 1000


async def test_shared_device_serializes_exchanges() -> None:
    device = create_device("psu", latency=0.02)
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server:
            results: dict[int, list[bytes]] = {}

            async def worker(channel: int) -> None:
                async with connect(server) as client:
                    replies = []
                    for _ in range(5):
                        replies.append(await client.query(b"INST:NSEL %d;NSEL?\n" % channel))
                    results[channel] = replies

            async with anyio.create_task_group() as tg:
                for channel in (1, 2, 3):
                    tg.start_soon(worker, channel)
            assert results == {c: [b"%d\n" % c] * 5 for c in (1, 2, 3)}
            assert device.errors == []


async def test_serve_many_distinct_ports_and_shared_device() -> None:
    devices: list[SimDevice] = [create_device(m) for m in ("dmm", "psu", "scope")]
    devices.append(devices[0])  # one device on two ports
    with anyio.fail_after(TIMEOUT):
        async with serve_many(devices) as servers:
            assert len({s.port for s in servers}) == 4
            for server, device in zip(servers, devices, strict=True):
                async with connect(server) as client:
                    assert await client.query(b"*IDN?\n") == device.identity.encode() + b"\n"


async def test_serve_many_rejects_port_count_mismatch() -> None:
    with pytest.raises(ValueError, match="2 devices but 1 ports"):
        async with serve_many([SimDevice(), SimDevice()], ports=[0]):
            pass


async def test_many_servers_are_cheap() -> None:
    devices = [SimDevice(identity=f"aiotmc,N{i},0,0") for i in range(200)]
    with anyio.fail_after(TIMEOUT):
        async with serve_many(devices) as servers:
            for index in (0, 99, 199):
                async with connect(servers[index]) as client:
                    assert await client.query(b"*IDN?\n") == f"aiotmc,N{index},0,0\n".encode()


async def test_serve_forever_reports_ready_and_serves_until_cancelled() -> None:
    device = create_device("dmm")
    with socket.socket() as probe:  # find a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready: list[SimServer] = []
    started = anyio.Event()

    def on_ready(servers: list[SimServer]) -> None:
        ready.extend(servers)
        started.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve_forever({port: device}, ready=on_ready))
            await started.wait()
            assert [s.port for s in ready] == [port]
            async with connect(ready[0]) as client:
                assert await client.query(b"*IDN?\n") == b"aiotmc,SIM-DMM,0001,0.1\n"
            tg.cancel_scope.cancel()
    with pytest.raises(OSError):  # the listener is closed
        await anyio.connect_tcp("127.0.0.1", port)


async def test_handler_bug_is_reported_not_fatal() -> None:
    device = SimDevice()

    def broken(call: object) -> None:
        raise ZeroDivisionError("oops")

    device.add_command("BROKen?", broken)
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server, connect(server) as client:
            await client.send(b"BROK?\n")
            assert await client.query(b"SYST:ERR?\n") == (
                b'-300,"Device-specific error; ZeroDivisionError: oops"\n'
            )


async def test_server_cannot_be_entered_twice() -> None:
    server = SimServer(SimDevice())
    async with server:
        with pytest.raises(RuntimeError):
            await server.__aenter__()


async def test_disconnect_while_waiting_for_a_shared_device_keeps_it_usable() -> None:
    device = create_device("dmm")
    device.delay_next_responses(float("inf"))
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server:
            async with connect(server) as first, connect(server) as second:
                await first.send(b"MEAS:VOLT?\n")  # hangs, holding the device
                await second.send(b"*IDN?\n")  # queued behind it
                with anyio.move_on_after(0.2) as scope:
                    await second.receive()
                assert scope.cancelled_caught
                server.disconnect_all()
            async with connect(server) as third:
                assert await third.query(b"*IDN?\n") == b"aiotmc,SIM-DMM,0001,0.1\n"


async def test_client_leaving_mid_message_is_not_an_instrument_error() -> None:
    device = create_device("dmm")
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server:
            async with connect(server) as client:
                await client.query(b"*OPC?\n")
                await client.send(b"DATA:ARB x,#15ab")  # block cut short by the close
            await server.wait_connections(0)
            assert device.errors == []


async def test_timer_survives_a_failing_device_callback() -> None:
    device = SimDevice()
    fired = anyio.Event()

    def explode() -> None:
        fired.set()
        raise RuntimeError("model bug")

    def start(call: object) -> None:
        device.start_operation(0.02, on_complete=explode)

    device.add_command("STARt", start)
    with anyio.fail_after(TIMEOUT):
        async with SimServer(device) as server:
            async with connect(server) as client:
                assert await client.query(b"STAR;*ESE?\n") == b"0\n"
            await server.wait_connections(0)
            await fired.wait()  # completed by the server's timer, which survives
            async with connect(server) as client:
                assert await client.query(b"*IDN?\n") == device.identity.encode() + b"\n"


async def test_port_in_use_names_the_address() -> None:
    async with SimServer(SimDevice()) as first:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            async with SimServer(SimDevice(), port=first.port):
                pass


async def test_serve_many_port_in_use_is_a_plain_oserror() -> None:
    async with SimServer(SimDevice()) as first:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            async with serve_many([SimDevice(), SimDevice()], ports=[0, first.port]):
                pass
