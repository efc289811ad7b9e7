"""The kit is not vacuous: each check fails, naming itself, on a transport with that bug.

The faulty transports wrap the in-process SimTransport and break one rule each.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from aiotmc import ReadTimeout
from aiotmc._types import BytesLike
from aiotmc.srq import SrqBroadcaster
from aiotmc.testing import (
    KitOptions,
    check_blocks,
    check_busy,
    check_cancellation,
    check_close,
    check_deadlines,
    check_info,
    check_transport,
    conformance_device,
)
from aiotmc.transports.base import MessageTransport, TransportInfo
from aiotmc.transports.sim import SimTransport, open_sim_transport

FAST = KitOptions(step_timeout=2.0, block_sizes=(1, 5000), cancel_block_size=5000)


class Wrapper:
    """Delegates every operation to a correct SimTransport."""

    def __init__(self, inner: SimTransport) -> None:
        self.inner = inner

    @property
    def info(self) -> TransportInfo:
        return self.inner.info

    @property
    def srq(self) -> SrqBroadcaster | None:
        return self.inner.srq

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        await self.inner.send_message(parts, end=end, deadline=deadline)

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        return await self.inner.receive_message(max_size=max_size, deadline=deadline)

    async def exchange(self, message: bytes, *, max_size: int, deadline: float = math.inf) -> bytes:
        await self.send_message([message], deadline=deadline)
        return await self.receive_message(max_size=max_size, deadline=deadline)

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        return await self.inner.receive_block(into, max_size=max_size, deadline=deadline)

    async def read_stb(self, *, deadline: float = math.inf) -> int:
        return await self.inner.read_stb(deadline=deadline)

    async def clear(self, *, deadline: float = math.inf) -> None:
        await self.inner.clear(deadline=deadline)

    async def trigger(self, *, deadline: float = math.inf) -> None:
        await self.inner.trigger(deadline=deadline)

    async def aclose(self) -> None:
        await self.inner.aclose()


class KeepsCancelledAnswers(Wrapper):
    """Buffers an answer whose receive was cancelled and hands it to the next receive."""

    def __init__(self, inner: SimTransport) -> None:
        super().__init__(inner)
        self.late: deque[bytes] = deque()

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        if self.late:
            return self.late.popleft()
        with anyio.CancelScope(shield=True):
            answer = await self.inner.receive_message(max_size=max_size, deadline=deadline)
        try:
            await checkpoint()
        except BaseException:
            self.late.append(answer)
            raise
        return answer


class DropsWhenBusy(Wrapper):
    """Silently drops a message sent while another task uses the link."""

    async def send_message(
        self, parts: Sequence[BytesLike], *, end: bool = True, deadline: float = math.inf
    ) -> None:
        try:
            await self.inner.send_message(parts, end=end, deadline=deadline)
        except anyio.BusyResourceError:
            pass


class UntypedTimeouts(Wrapper):
    """Raises a bare TimeoutError where ReadTimeout is due."""

    async def receive_message(self, *, max_size: int, deadline: float = math.inf) -> bytes:
        try:
            return await self.inner.receive_message(max_size=max_size, deadline=deadline)
        except ReadTimeout:
            raise TimeoutError("timed out") from None


class ClosesOnce(Wrapper):
    """A second aclose raises."""

    async def aclose(self) -> None:
        if self.inner._closed:
            raise anyio.ClosedResourceError
        await self.inner.aclose()


class HidesItsSrq(Wrapper):
    """Says it has service requests but offers no broadcaster."""

    @property
    def srq(self) -> SrqBroadcaster | None:
        return None


class IgnoresTheBuffer(Wrapper):
    """Returns blocks in a new buffer even when given one."""

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        return await self.inner.receive_block(None, max_size=max_size, deadline=deadline)


def opener(cls: type[Wrapper]) -> Callable[[], AbstractAsyncContextManager[MessageTransport]]:
    device = conformance_device()

    @asynccontextmanager
    async def open_link() -> AsyncIterator[MessageTransport]:
        async with open_sim_transport(device, resource="SIM::kit::faulty") as inner:
            yield cls(inner)

    return open_link


Check = Callable[..., Awaitable[Any]]

CASES: list[tuple[type[Wrapper], Check, str]] = [
    (KeepsCancelledAnswers, check_cancellation, r"check_cancellation: .*crossed answer"),
    (DropsWhenBusy, check_busy, r"check_busy: .*send_message: no BusyResourceError"),
    (UntypedTimeouts, check_deadlines, r"check_deadlines: .*unexpected TimeoutError"),
    (ClosesOnce, check_close, r"check_close: aclose twice.*ClosedResourceError"),
    (HidesItsSrq, check_info, r"check_info: srq channel matches capabilities.srq"),
    (IgnoresTheBuffer, check_blocks, r"check_blocks: .*into a larger buffer"),
]


@pytest.mark.parametrize(("cls", "check", "match"), CASES, ids=[c[0].__name__ for c in CASES])
async def test_check_fails_on_the_bug(cls: type[Wrapper], check: Check, match: str) -> None:
    with anyio.fail_after(30), pytest.raises(AssertionError, match=match):
        await check(opener(cls), options=FAST)


async def test_a_correct_wrapper_passes() -> None:
    """The control: the same wrapper without a bug passes everything."""
    with anyio.fail_after(60):
        report = await check_transport(opener(Wrapper), options=FAST)
    assert report["cancellation"].cancelled > 20


async def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown checks"):
        await check_transport(opener(Wrapper), skip=["framng"])
