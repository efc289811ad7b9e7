"""The cancellation storm: random operations stopped in random ways, at the Instrument level.

Where :func:`~aiotmc.testing.check_cancellation` cancels each operation at each await
point in turn (deterministic), the storm mixes operations, sizes and ways of stopping
them over thousands of iterations, against a :func:`~aiotmc.testing.conformance_device`.

One iteration: pick an operation (small query, multi-transfer block read, big upload) and
a way to stop it (cancelled before it starts, after ``k`` checkpoints of a sibling task,
``move_on_after``, ``fail_after``, the call's own ``timeout=``, a sibling task failing in
the same task group), run it, then ask ``ECHO? <n>`` with a fresh ``n``: the answer must
be ``n``. An operation that completes must have returned its own answer too. A typed
:class:`~aiotmc.TransportError` is accepted only if reopening the instrument makes the
next ``ECHO?`` right again.

Everything random comes from one seeded :class:`random.Random`: a failing seed replays
the same sequence of choices (the timing of real I/O may still differ).
"""

from __future__ import annotations

import inspect
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

import aiotmc
from aiotmc import AiotmcTimeout, TransportError
from aiotmc.protocol.ieee4882 import block_header

from .device import check_payload

__all__ = ["Opener", "Operation", "Storm", "StormReport", "Style"]

Opener = Callable[[AsyncExitStack], Awaitable[aiotmc.Instrument]]
Operation = Callable[..., Awaitable[None]]
Style = Callable[["Storm", Operation], Awaitable[str]]
"""An extra way to stop an operation: ``(storm, op) -> outcome name``."""


class _Boom(Exception):
    """A sibling task failing: the task group cancels the operation under test."""


@dataclass
class StormReport:
    """What a storm did: outcomes, ways of stopping, operations, recoveries."""

    iterations: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    styles: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    reopened: int = 0
    resyncs: int = 0  #: reconnects (TCP) or abort/clear recoveries (USBTMC) that ran
    typed_errors: list[str] = field(default_factory=list)
    history: deque[str] = field(default_factory=lambda: deque(maxlen=8))

    def as_dict(self) -> dict[str, Any]:
        """The counts, JSON-ready."""
        return {
            "iterations": self.iterations,
            "outcomes": dict(self.outcomes),
            "styles": dict(self.styles),
            "operations": dict(self.operations),
            "reopened": self.reopened,
            "resyncs": self.resyncs,
            "typed_errors": self.typed_errors[:10],
        }


class Storm:
    """Runs iterations against one instrument, reopening it when it reports a broken link.

    ``block_sizes`` / ``upload_sizes``: sizes to pick from; ``max_delay``: upper bound of
    the random ``move_on_after`` / ``fail_after`` / ``timeout=`` delays (seconds);
    ``latency``: hook ``(seconds) -> None`` that delays the device's next answer.
    """

    def __init__(
        self,
        rng: random.Random,
        opener: Opener,
        *,
        block_sizes: tuple[int, ...] = (64, 20_000, 300_000),
        upload_sizes: tuple[int, ...] = (1000, 300_000),
        max_delay: float = 0.003,
        latency: Callable[[float], object] | None = None,
        verify_timeout: float = 5.0,
        styles: dict[str, Style] | None = None,
    ) -> None:
        self.rng = rng
        self.opener = opener
        self.block_sizes = block_sizes
        self.max_delay = max_delay
        self.latency = latency
        self.verify_timeout = verify_timeout
        self.styles = styles or {}
        self.report = StormReport()
        self._tag = 0
        self._uploads = {
            size: b"UPL " + block_header(size) + bytes(size) + b"\n" for size in upload_sizes
        }
        self._stack: AsyncExitStack | None = None
        self.inst: aiotmc.Instrument | None = None

    def _next_tag(self) -> int:
        self._tag += 1
        return self._tag

    # -- instrument lifecycle -----------------------------------------------------------

    async def open(self) -> aiotmc.Instrument:
        await self.close()
        stack = AsyncExitStack()
        await stack.__aenter__()
        self._stack = stack
        try:
            self.inst = await self.opener(stack)
        except BaseException:
            await self.close()
            raise
        return self.inst

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if self.inst is not None:
            transport = self.inst.transport
            self.report.resyncs += getattr(transport, "reconnects", 0)
            self.report.resyncs += getattr(transport, "recoveries", 0)
        self.inst = None
        if stack is not None:
            await stack.aclose()  # no shield here: it would wrap the transports' task groups

    # -- the operations ------------------------------------------------------------------

    def _operation(self, inst: aiotmc.Instrument) -> tuple[str, Callable[..., Awaitable[None]]]:
        rng = self.rng
        kind = rng.choice(["echo", "echo", "block", "upload"])
        tag = self._next_tag()
        if kind == "echo":

            async def echo(**kw: Any) -> None:
                answer = await inst.query(f"ECHO? {tag}", **kw)
                assert answer == str(tag), f"crossed answer: asked {tag}, got {answer!r}"

            return kind, echo
        if kind == "block":
            size = rng.choice(self.block_sizes)

            async def block(**kw: Any) -> None:
                payload = await inst.query_block(f"BLK? {size},{tag}", **kw)
                check_payload(payload, size, tag)

            return kind, block
        data = self._uploads[rng.choice(sorted(self._uploads))]

        async def upload(**kw: Any) -> None:
            await inst.write_raw(data, **kw)

        return kind, upload

    async def _run_styled(self, op: Callable[..., Awaitable[None]]) -> str:
        """Run ``op`` stopped in a random way; return the outcome's name."""
        rng = self.rng
        style = rng.choice(
            [
                "before",
                "checkpoints",
                "move_on",
                "fail_after",
                "timeout",
                "group",
                "nested",
                *self.styles,
            ]
        )
        self.report.styles[style] += 1
        self.report.history.append(style)
        delay = self.max_delay * rng.random() ** 2  # biased towards early cancellation
        try:
            extra = self.styles.get(style)
            if extra is not None:
                return await extra(self, op)
            if style == "before":
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await op()
                return "cancelled" if scope.cancelled_caught else "completed"
            if style == "checkpoints":
                steps = rng.randrange(0, 40)
                finished = False
                async with anyio.create_task_group() as tg:

                    async def canceller() -> None:
                        for _ in range(steps):
                            await checkpoint()
                        tg.cancel_scope.cancel()

                    async def target() -> None:
                        nonlocal finished
                        await op()
                        finished = True
                        tg.cancel_scope.cancel()

                    tg.start_soon(target)
                    tg.start_soon(canceller)
                return "completed" if finished else "cancelled"
            if style == "move_on":
                with anyio.move_on_after(delay) as scope:
                    await op()
                return "cancelled" if scope.cancelled_caught else "completed"
            if style == "fail_after":
                try:
                    with anyio.fail_after(delay):
                        await op()
                except TimeoutError as exc:
                    if isinstance(exc, AiotmcTimeout):
                        raise AssertionError(f"aiotmc timeout without timeout=: {exc!r}") from exc
                    return "fail_after"
                return "completed"
            if style == "timeout":
                try:
                    await op(timeout=delay)
                except AiotmcTimeout:
                    return "timeout"
                return "completed"
            if style == "nested":
                # The call's own timeout starts the transport's recovery; the caller's
                # scope expires a moment later, usually while that recovery runs.
                try:
                    with anyio.move_on_after(delay * 1.5 + 0.0005) as scope:
                        await op(timeout=delay)
                except AiotmcTimeout:
                    return "timeout"
                return "cancelled" if scope.cancelled_caught else "completed"
            # "group": a sibling raising after a few checkpoints cancels the operation
            steps = rng.randrange(0, 20)
            try:
                async with anyio.create_task_group() as tg:

                    async def failing() -> None:
                        for _ in range(steps):
                            await checkpoint()
                        raise _Boom

                    async def target_in_group() -> None:
                        await op()

                    tg.start_soon(target_in_group)
                    tg.start_soon(failing)
            except BaseExceptionGroup as group:
                rest = group.split(_Boom)[1]
                if rest is not None:
                    raise rest from None
                return "group"
            return "completed"
        except TransportError as exc:
            self.report.typed_errors.append(repr(exc))
            return "typed_error"

    async def _echo(self) -> None:
        assert self.inst is not None
        tag = self._next_tag()
        with anyio.fail_after(self.verify_timeout + 1):
            answer = await self.inst.query(f"ECHO? {tag}", timeout=self.verify_timeout)
        assert answer == str(tag), f"crossed answer: asked {tag}, got {answer!r}"

    async def iteration(self) -> bool:
        """One stopped operation and the check after it; True if the link must be reopened."""
        inst = self.inst
        assert inst is not None
        if self.latency is not None and self.rng.random() < 0.3:
            result = self.latency(self.rng.uniform(0, self.max_delay * 2))
            if inspect.isawaitable(result):
                await result
        kind, op = self._operation(inst)
        self.report.operations[kind] += 1
        self.report.history.append(f"#{self.report.iterations} {kind}")
        self.report.iterations += 1
        with anyio.fail_after(30):
            outcome = await self._run_styled(op)
            self.report.outcomes[outcome] += 1
            self.report.history.append(outcome)
            if outcome == "typed_error":
                return True
            try:
                await self._echo()
            except TransportError as exc:
                self.report.typed_errors.append(repr(exc))
                return True
        return False

    async def run(self, iterations: int) -> StormReport:
        """Run ``iterations``; after a typed error reopen and check the next answer.

        Opening happens here, outside every per-iteration cancel scope: a transport may
        own a task group, which must not be entered inside a scope it outlives.
        """
        try:
            await self.open()
            for _ in range(iterations):
                if await self.iteration():
                    self.report.reopened += 1
                    self.report.history.append("reopen")
                    await self.open()
                    await self._echo()  # reopening must fix it
        except Exception as exc:
            exc.add_note(f"storm history (latest last): {list(self.report.history)}")
            raise
        finally:
            await self.close()
        return self.report
