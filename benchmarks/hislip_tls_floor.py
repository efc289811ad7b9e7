"""What a TLS MB costs with the standard library alone: ``python -m benchmarks.hislip_tls_floor``.

No HiSLIP, no event loop: the floor under ``benchmarks.hislip``'s TLS block row. It prints
the CPU ms per MB of

* ``SSLObject`` in memory (one process, both ends): encrypting 1 MiB steps (``write``,
  the outgoing ``MemoryBIO.read``, a copy into one buffer) and decrypting them
  (``MemoryBIO.write`` of 256 KiB, ``read`` into a buffer: one 16 KiB record per call),
  for each TLS 1.3 cipher suite the sender may prefer (AES-256-GCM, the default, and
  AES-128-GCM);
* a sender and a receiver in two processes over TCP on 127.0.0.1, each either
  ``SSLObject`` over memory BIOs (what aiotmc uses: ``recv_into`` a reused buffer, then
  the BIO) or an ``SSLSocket`` (OpenSSL reads the socket itself: no BIO copies, but two
  ``recv`` per record), with blocking sends and a non-blocking receiver that polls;

alternating the variants every round (medians). Compare with ``openssl speed -evp
aes-256-gcm`` for the cipher alone.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

MB: Final = 1_000_000
STEP: Final = 1 << 20  #: plaintext per write
PULL: Final = 256 * 1024  #: ciphertext per recv (the client's _TLS_PULL)
SUITES: Final = {
    "AES-256-GCM": "TLS_AES_256_GCM_SHA384",
    "AES-128-GCM": "TLS_AES_128_GCM_SHA256",
}
HOST: Final = "127.0.0.1"


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _pattern(size: int) -> memoryview:
    return memoryview((bytes(range(256)) * (size // 256 + 1))[:size])


def _memory_pair(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """(sender, its outgoing BIO, receiver, its incoming BIO), handshake done."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    receiver = client.wrap_bio(c_in, c_out, server_hostname=HOST)
    sender = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj, source, sink in ((receiver, c_out, s_in), (sender, s_out, c_in)):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            if source.pending:
                sink.write(source.read())
    return sender, s_out, receiver, c_in


def in_memory(size: int) -> tuple[str, float, float]:
    """(cipher suite, encrypt ms/MB, decrypt ms/MB) through SSLObject, no sockets."""
    server, client = _contexts()
    sender, outgoing, receiver, incoming = _memory_pair(server, client)
    data = _pattern(size)
    store = bytearray(size + size // 50 + 65536)  # the ciphertext, in touched memory
    end = 0
    t0 = time.process_time()
    for i in range(0, size, STEP):
        sender.write(data[i : i + STEP])
        piece = outgoing.read()  # (a freed 1 MiB bytes is reused: no page faults)
        store[end : end + len(piece)] = piece
        end += len(piece)
    encrypt = time.process_time() - t0
    cipher = memoryview(store)[:end]
    buffer = memoryview(bytearray(size))
    total = pos = 0
    t0 = time.process_time()
    while total < size and pos < len(cipher) + PULL:
        try:
            total += receiver.read(size - total, buffer[total:])
        except ssl.SSLWantReadError:
            incoming.write(cipher[pos : pos + PULL])
            pos += PULL
    decrypt = time.process_time() - t0
    if total != size or buffer != data:
        raise RuntimeError("in-memory TLS round trip lost bytes")
    suite = str(receiver.cipher()[0]) if receiver.cipher() else "?"
    return suite, encrypt * 1e3 * MB / size, decrypt * 1e3 * MB / size


def _bio_handshake(
    sock: socket.socket, context: ssl.SSLContext, server_side: bool
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(
        incoming, outgoing, server_side=server_side, server_hostname=None if server_side else HOST
    )
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("peer closed during the handshake") from None
            incoming.write(data)
    if outgoing.pending:
        sock.sendall(outgoing.read())
    return obj, incoming, outgoing


def _sender(listener: socket.socket, mode: str, size: int, reps: int, report: int) -> None:
    """The child: send ``reps`` blocks of ``size`` on a b"g" each; CPU seconds to ``report``."""
    server, _ = _contexts_cached()
    data = _pattern(size)
    sock, _ = listener.accept()
    sock.settimeout(60)
    times = []
    if mode == "sock":
        tls = server.wrap_socket(sock, server_side=True)
        for _ in range(reps):
            tls.recv(1)
            t0 = time.process_time()
            for i in range(0, size, STEP):
                tls.sendall(data[i : i + STEP])
            times.append(time.process_time() - t0)
    else:
        obj, incoming, outgoing = _bio_handshake(sock, server, True)
        for _ in range(reps):
            while True:  # the b"g" record
                try:
                    obj.read(1)
                    break
                except ssl.SSLWantReadError:
                    incoming.write(sock.recv(65536))
            t0 = time.process_time()
            for i in range(0, size, STEP):
                obj.write(data[i : i + STEP])
                sock.sendall(outgoing.read())
            times.append(time.process_time() - t0)
    os.write(report, repr(times).encode())


_CONTEXTS: list[tuple[ssl.SSLContext, ssl.SSLContext]] = []


def _contexts_cached() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if not _CONTEXTS:
        _CONTEXTS.append(_contexts())
    return _CONTEXTS[0]


def two_processes(sender_mode: str, receiver_mode: str, size: int, reps: int) -> list[float]:
    """[sender ms/MB, receiver ms/MB, MB/s] (medians over ``reps`` blocks)."""
    _, client = _contexts_cached()
    listener = socket.create_server((HOST, 0))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            os.close(read_end)
            _sender(listener, sender_mode, size, reps, write_end)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_end)
    address = listener.getsockname()
    listener.close()
    try:
        sock = socket.create_connection(address, timeout=60)
        buffer = memoryview(bytearray(size))
        cpu, walls = [], []
        if receiver_mode == "sock":
            tls = client.wrap_socket(sock, server_hostname=HOST)
        else:
            obj, incoming, outgoing = _bio_handshake(sock, client, False)
            pulled = bytearray(PULL)
            view = memoryview(pulled)
        fd = (tls if receiver_mode == "sock" else sock).fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        for _ in range(reps):
            if receiver_mode == "sock":
                tls.settimeout(60)
                tls.sendall(b"g")
                tls.setblocking(False)
            else:
                obj.write(b"g")
                sock.settimeout(60)
                sock.sendall(outgoing.read())
                sock.setblocking(False)
            total = 0
            t0, w0 = time.process_time(), time.perf_counter()
            deadline = w0 + 60
            while total < size and time.perf_counter() < deadline:
                try:
                    if receiver_mode == "sock":
                        total += tls.recv_into(buffer[total:])
                    else:
                        total += obj.read(size - total, buffer[total:])
                except ssl.SSLWantReadError:
                    if receiver_mode == "sock":
                        poller.poll(1000)
                        continue
                    try:
                        n = sock.recv_into(pulled)
                    except BlockingIOError:
                        poller.poll(1000)
                        continue
                    if not n:
                        raise ConnectionError("sender closed early") from None
                    incoming.write(view[:n])
            if total != size:
                raise TimeoutError("block not received within 60 s")
            cpu.append(time.process_time() - t0)
            walls.append(time.perf_counter() - w0)
        with os.fdopen(read_end, "rb") as f:
            sent = [float(x) for x in f.read().decode().strip("[]").split(",")]
    finally:
        _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError("the sender failed")
    scale = 1e3 * MB / size
    return [
        statistics.median(sent) * scale,
        statistics.median(cpu) * scale,
        size / MB / statistics.median(walls),
    ]


def _with_suite(suite: str, size: int) -> tuple[str, float, float]:
    """:func:`in_memory` in a child process whose OpenSSL prefers ``suite`` (TLS 1.3
    suites can only be chosen through OpenSSL's configuration from Python)."""
    import subprocess

    others = [s for s in SUITES.values() if s != suite]
    with tempfile.TemporaryDirectory(prefix="aiotmc-tls-") as folder:
        conf = Path(folder) / "openssl.cnf"
        conf.write_text(
            "openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n"
            f"[tls]\nCiphersuites = {':'.join([suite, *others])}\n"
        )
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.hislip_tls_floor", "--memory-only", str(size)],
            env={**os.environ, "OPENSSL_CONF": str(conf)},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
    return out[0], float(out[1]), float(out[2])


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hislip_tls_floor")
    parser.add_argument("--size", type=int, default=100, help="MB per block (100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-only", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_only:
        suite, encrypt, decrypt = in_memory(args.memory_only)
        print(suite, encrypt, decrypt)
        return 0
    size = args.size * MB
    memory: dict[str, list[tuple[float, float]]] = {name: [] for name in SUITES}
    pairs = [("bio", "bio"), ("sock", "bio"), ("bio", "sock"), ("sock", "sock")]
    wire: dict[tuple[str, str], list[list[float]]] = {pair: [] for pair in pairs}
    for _ in range(args.rounds):
        for name, suite in SUITES.items():
            got, encrypt, decrypt = _with_suite(suite, min(size, 50 * MB))
            if got != suite:
                raise RuntimeError(f"{got} negotiated instead of {suite}")
            memory[name].append((encrypt, decrypt))
        for pair in pairs:
            wire[pair].append(two_processes(*pair, size, 3))
    med = statistics.median
    print(f"CPU ms per MB, median of {args.rounds} rounds:")
    print("SSLObject in memory (1 MiB writes, 256 KiB BIO writes):")
    for name, values in memory.items():
        encrypt, decrypt = med(v[0] for v in values), med(v[1] for v in values)
        print(f"  {name}: encrypt {encrypt:.3f}, decrypt {decrypt:.3f}")
    print(f"two processes over TCP, {args.size} MB blocks (sender / receiver, MB/s):")
    for (sender, receiver), values in wire.items():
        s, r, rate = (med(column) for column in zip(*values, strict=True))
        label = f"sender {'SSLSocket' if sender == 'sock' else 'SSLObject'}, receiver " + (
            "SSLSocket" if receiver == "sock" else "SSLObject"
        )
        print(f"  {label:45} {s:.3f} / {r:.3f}  {rate:6.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
