"""``aiotmc._loops`` is the lowest layer: it imports the standard library, anyio and the
loop libraries, and nothing else of aiotmc (only its own modules)."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import math
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiotmc._loops

_ALLOWED = {"anyio", "trio", "sniffio"}
_PACKAGE = Path(aiotmc._loops.__file__).parent


def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path``; relative ones as ``.name``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1, f"{path.name} imports from above aiotmc._loops"
                found.add("." + (node.module or ""))
            else:
                assert node.module is not None
                found.add(node.module.split(".")[0])
    return found


def test_loops_package_imports_only_stdlib_anyio_and_loop_libraries() -> None:
    modules = sorted(_PACKAGE.glob("*.py"))
    assert {p.name for p in modules} >= {"__init__.py", "asyncio_.py", "trio_.py"}
    for path in modules:
        for name in _imports(path):
            if name.startswith("."):
                assert name[1:] in {"", "_early", "asyncio_", "trio_"}, (path.name, name)
            else:
                assert name in sys.stdlib_module_names or name in _ALLOWED, (path.name, name)


_FRESH_TRIO_RUN = """
import anyio
from aiotmc._fastpath import checkpoint_if_cancelled, current_time
from aiotmc._lock import FifoLock

async def main():
    lock, order = FifoLock(), []
    async def worker(n):
        await lock.acquire()
        order.append(n)
        await checkpoint_if_cancelled()
        lock.release()
    await lock.acquire()
    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(worker, n)
            await anyio.wait_all_tasks_blocked()
        lock.release()
    assert order == [0, 1, 2], order
    assert current_time(None) <= anyio.current_time()
    print("ok")

anyio.run(main, backend="trio")
"""


def test_trio_specifics_load_on_first_use_in_a_fresh_interpreter() -> None:
    """``_loops.trio_`` is imported only once trio runs: the first use in a process (which
    the rest of the test session hides, having imported it already) must load it."""
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_TRIO_RUN], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_sleep_waits_checks_its_argument_and_can_be_cancelled() -> None:
    """``_loops.sleep`` behaves as ``anyio.sleep`` on either loop."""
    import math

    import anyio
    import pytest

    from aiotmc._loops import sleep

    started = anyio.current_time()
    await sleep(0.02)
    assert anyio.current_time() - started >= 0.02
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="non-negative"):
            await sleep(bad)
    with anyio.move_on_after(0.01) as scope:
        await sleep(3600)
    assert scope.cancelled_caught


@pytest.mark.skipif(sys.platform != "linux", reason="trio uses epoll on Linux only")
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_private_io_manager_has_the_shape_aiotmc_reads(anyio_backend: str) -> None:
    """The TCP transport's hand-over by I/O on trio (``TrioReceiver.arm``) makes a task
    asleep in the exchange lock's line the one trio's epoll manager wakes. If this test
    fails, trio changed that private state: aiotmc still works (the exchange lock wakes
    the next task instead, ``trio_.epoll_manager()`` answering None), but contended
    queries cost a wake-up more until ``aiotmc/_loops/trio_.py`` is updated."""
    import trio

    trio_ = importlib.import_module("aiotmc._loops.trio_")
    changed = (
        f"trio {importlib.metadata.version('trio')} changed the private I/O manager state"
        " that aiotmc/_loops/trio_.py reads"
    )
    assert trio_.epoll_manager() is not None, changed
    mine, peer = socket.socketpair()
    with mine, peer:
        mine.setblocking(False)
        receiver = trio_.TrioReceiver(mine)
        woke: list[object] = []

        async def sleeper(task_status: Any) -> None:
            task_status.started(trio.lowlevel.current_task())
            woke.append(
                await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
            )

        with anyio.fail_after(5):
            async with trio.open_nursery() as nursery:
                task = await nursery.start(sleeper)
                await anyio.wait_all_tasks_blocked()
                assert receiver.arm(task, memoryview(bytearray(8)), math.inf), changed
                peer.send(b"x")  # readable: trio's epoll manager wakes the armed task
            view = memoryview(bytearray(8))
            assert receiver.received(woke[0], view) == 1
            assert bytes(view[:1]) == b"x"
        receiver.close()
