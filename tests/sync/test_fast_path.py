"""The caller-thread fast path of aiotmc.sync over a raw socket: no hop to the loop thread
when the instrument is free, the loop path otherwise, never a crossed answer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aiotmc
import aiotmc.sync
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer
from aiotmc.sync._portal import portal_for


@pytest.fixture
def tcp(sync_backend: str) -> Iterator[aiotmc.sync.SyncInstrument]:
    """A blocking instrument on a scope behind a SimServer, on the current backend."""
    with (
        portal_for(sync_backend).hold(SimServer(create_device("scope"))) as server,
        aiotmc.sync.open(server.resource, timeout=10) as inst,
    ):
        yield inst


def _expected(n: int) -> str:
    """``:WAVeform:TEST? n`` (n < 10): ``#1<n>`` and the bytes 0..n-1, as text."""
    return f"#1{n}" + "".join(map(chr, range(n)))


def test_a_free_instrument_is_used_in_the_calling_thread(
    tcp: aiotmc.sync.SyncInstrument, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("hopped to the event loop's thread")

    with monkeypatch.context() as patched:
        patched.setattr(tcp._portal, "run", no_hop)
        assert tcp.query("*IDN?").startswith("aiotmc,SIM-SCOPE,")
        tcp.write("*ESE 12")
        tcp.write_raw(b"*ESE?\n")
        assert tcp.read() == "12"
        tcp.write("*ESE?")
        assert tcp.read_raw() == b"12\n"


def test_threads_contending_for_the_instrument_wait_in_their_own_threads(
    tcp: aiotmc.sync.SyncInstrument, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads that find the instrument taken by another thread queue for it in their own
    threads (no hop to the loop's thread), and every answer is the asker's."""
    rounds = 30
    failures: list[str] = []
    most_waiting = 0

    def no_hop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("hopped to the event loop's thread")

    def thread_queries(n: int) -> None:
        nonlocal most_waiting
        for _ in range(rounds):
            answer = tcp.query(f":WAVeform:TEST? {n}")
            most_waiting = max(most_waiting, tcp.instrument._lock.threads_waiting)
            if answer != _expected(n):
                failures.append(f"thread {n}: {answer!r}")

    with monkeypatch.context() as patched:
        patched.setattr(tcp._portal, "run", no_hop)
        threads = [threading.Thread(target=thread_queries, args=(n,)) for n in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert failures == []
    assert most_waiting > 0  # they did queue
    assert not tcp.instrument._lock.locked()


def test_threads_and_tasks_share_the_instrument_without_crossed_answers(
    tcp: aiotmc.sync.SyncInstrument,
) -> None:
    rounds = 40
    failures: list[str] = []

    def thread_queries(n: int) -> None:
        for _ in range(rounds):
            answer = tcp.query(f":WAVeform:TEST? {n}")
            if answer != _expected(n):
                failures.append(f"thread {n}: {answer!r}")

    async def task_queries(n: int) -> None:
        for _ in range(rounds):
            answer = await tcp.instrument.query(f":WAVeform:TEST? {n}")
            if answer != _expected(n):
                failures.append(f"task {n}: {answer!r}")

    async def tasks() -> None:
        async with anyio.create_task_group() as tg:
            for n in (5, 6, 7):
                tg.start_soon(task_queries, n)

    threads = [threading.Thread(target=thread_queries, args=(n,)) for n in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    tcp._portal.run(tasks)
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert failures == []
    assert not tcp.instrument._lock.locked()


def test_a_timeout_in_the_calling_thread_leaves_the_link_usable(
    tcp: aiotmc.sync.SyncInstrument,
) -> None:
    with pytest.raises(aiotmc.ReadTimeout):
        tcp.query("*ESE 1", timeout=0.05)  # no answer comes
    assert tcp.query("*IDN?").startswith("aiotmc,SIM-SCOPE,")
    assert tcp.transport.reconnects == 1  # the link was resynchronised
    with pytest.raises(aiotmc.ReadTimeout):
        tcp.read(timeout=0)  # at once: nothing has arrived


def test_closing_wakes_a_thread_blocked_in_a_read(tcp: aiotmc.sync.SyncInstrument) -> None:
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            tcp.read(timeout=None)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    transport: Any = tcp.transport
    give_up = time.monotonic() + 10
    while not transport._in_blocking and thread.is_alive() and time.monotonic() < give_up:
        time.sleep(0.001)  # until the reader waits on the socket (bounded)
    assert transport._in_blocking
    tcp.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], aiotmc.ConnectionLostError)


def test_the_fast_path_is_traced(
    tcp: aiotmc.sync.SyncInstrument, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiotmc.io"):
        tcp.query("*IDN?")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiotmc.io"]
    assert len(lines) == 2
    assert "write" in lines[0] and "*IDN?" in lines[0]
    assert "read" in lines[1] and "SIM-SCOPE" in lines[1]


def test_calls_inside_a_lock_session_go_through_the_loop(
    tcp: aiotmc.sync.SyncInstrument,
) -> None:
    with tcp.lock():
        assert tcp.query("*ESE 3;*ESE?") == "3"
        assert tcp.instrument._lock.locked()
    assert not tcp.instrument._lock.locked()


def test_a_large_write_waits_for_the_socket_in_the_calling_thread(
    tcp: aiotmc.sync.SyncInstrument,
) -> None:
    size = 8_000_000  # far more than the socket buffer: partial sends and waits
    payload = bytes(range(256)) * (size // 256)
    tcp.write_raw(b":WAVeform:UPLoad #8%08d" % size + payload + b"\n")
    assert tcp.query(":WAVeform:UPLoad:SIZE?") == str(size)
