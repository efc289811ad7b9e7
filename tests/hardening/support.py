"""Shared pieces of the hardening tests: a self-identifying device, rigs, leak checks.

The device answers ``ECHO? <n>`` with ``<n>`` and ``BLK? <size>,<n>`` with a block whose
every 8-byte word is ``<n>``, so an answer that belongs to another question is detected
at once (a *crossed answer*). ``UPLoad <block>`` accepts an upload of any size.

Stdlib + aiotmc only on the device side: :func:`echo_device` also runs inside the
umockdev device process (``tests.hardening.support:usb_factory``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiotmc.protocol.ieee4882 import block_header
from aiotmc.sim.commands import Call, Raw, Response
from aiotmc.sim.device import SimDevice

RESOURCE = "USB0::0x0957::0x1796::HARD1::INSTR"


# -- the device ------------------------------------------------------------------------------


def block_payload(size: int, tag: int) -> bytes:
    """``size`` bytes made of the 8-digit ``tag`` repeated (cut to size)."""
    word = b"%08d" % (tag % 100_000_000)
    return (word * (size // 8 + 1))[:size]


def echo_device(**options: Any) -> SimDevice:
    """A SimDevice with the self-identifying commands (see the module docstring)."""
    device = SimDevice(**options)
    device.add_raw_query("ECHO?", lambda args: b"%s\n" % args[0], args=1)

    def blk(call: Call) -> Response:
        size, tag = int(call.text(0)), int(call.text(1))
        return Raw(block_header(size) + block_payload(size, tag) + b"\n")

    device.add_command("BLK?", blk, args=2)
    uploads: list[int] = []

    def upload(call: Call) -> Response:
        uploads.append(len(call.args[0]))
        return None

    device.add_command("UPLoad", upload, args=1)
    device.uploads = uploads  # type: ignore[attr-defined]
    return device


def usb_factory(config: dict[str, Any]) -> Any:
    """umockdev device factory: the echo device behind a UsbtmcFunction."""
    from aiotmc.sim.usbtmc_device import UsbtmcFunction

    options = dict(config)
    return UsbtmcFunction(echo_device(), **options)


def check_block(payload: bytes | bytearray | memoryview, size: int, tag: int) -> None:
    """Assert that ``payload`` is the answer to ``BLK? size,tag``."""
    assert len(payload) == size, f"block of {len(payload)} bytes, asked {size} (tag {tag})"
    assert bytes(payload[:16]) == block_payload(16, tag)[: min(16, size)], (
        f"crossed answer: asked tag {tag}, got {bytes(payload[:16])!r}"
    )
    assert bytes(payload) == block_payload(size, tag), f"corrupt block for tag {tag}"


# -- leak accounting ---------------------------------------------------------------------------


def _trio_task_count() -> int:
    import trio

    def count(task: Any) -> int:
        children = (child for nursery in task.child_nurseries for child in nursery.child_tasks)
        return 1 + sum(count(child) for child in children)

    return count(trio.lowlevel.current_root_task())


def task_count() -> int:
    """Tasks alive in the current event loop (asyncio or trio)."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        return _trio_task_count()
    import asyncio

    return len(asyncio.all_tasks())


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# Idle worker threads of the event loops' pools (resolver calls run there) stay cached
# for a while; they are not leaks as long as their number stays small.
_POOL_PREFIXES = ("Trio thread", "AnyIO worker thread", "asyncio_", "ThreadPoolExecutor")
_POOL_LIMIT = 4


def _pool_thread(name: str) -> bool:
    return name.startswith(_POOL_PREFIXES)


@dataclass
class Resources:
    """Tasks, threads, file descriptors and zombie USB transfers at one moment."""

    tasks: int
    threads: list[str]
    fds: int
    zombies: int = 0
    fd_names: list[str] = field(default_factory=list)

    @classmethod
    def now(cls) -> Resources:
        from aiotmc._usb.transfer import ZOMBIES

        fds = sorted(os.listdir("/proc/self/fd"))
        names = []
        for fd in fds:
            try:
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                names.append("?")
        return cls(
            tasks=task_count(),
            threads=sorted(t.name for t in threading.enumerate()),
            fds=len(fds),
            zombies=len(ZOMBIES),
            fd_names=names,
        )

    def assert_no_growth(self, later: Resources) -> None:
        assert later.tasks <= self.tasks, f"leaked tasks: {self.tasks} -> {later.tasks}"
        own_before = [t for t in self.threads if not _pool_thread(t)]
        own_after = [t for t in later.threads if not _pool_thread(t)]
        assert len(own_after) <= len(own_before), (
            f"leaked threads: {self.threads} -> {later.threads}"
        )
        pool = len(later.threads) - len(own_after)
        assert pool <= max(len(self.threads) - len(own_before), _POOL_LIMIT), (
            f"worker-thread pool grew: {self.threads} -> {later.threads}"
        )
        assert later.fds <= self.fds, (
            f"leaked file descriptors: {self.fds} -> {later.fds}\n"
            f"before: {self.fd_names}\nafter: {later.fd_names}"
        )
        assert later.zombies <= self.zombies, f"zombie transfers: {self.zombies} -> {later.zombies}"


# -- small anyio helpers -----------------------------------------------------------------------


async def first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns (the others are cancelled)."""
    import anyio

    async with anyio.create_task_group() as tg:

        async def run(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(run, wait)


@asynccontextmanager
async def started(fn: Callable[[], Awaitable[object]]) -> AsyncIterator[Any]:
    """Run ``fn`` in a child task; yield a handle with ``scope``, ``done``, ``error``."""
    import anyio

    class Handle:
        scope = anyio.CancelScope()
        done = anyio.Event()
        error: BaseException | None = None
        result: object = None
        cancelled = False

    handle = Handle()

    async def runner() -> None:
        try:
            with handle.scope:
                handle.result = await fn()
        except Exception as exc:  # kept for the caller's assertions
            handle.error = exc
        finally:
            handle.cancelled = handle.scope.cancelled_caught
            handle.done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        yield handle
