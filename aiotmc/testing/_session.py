"""The kit's bookkeeping: opening (and reopening) a link, fresh tags, named steps.

A check runs as a series of *steps*; a step that fails or raises something unexpected
becomes an ``AssertionError`` naming the check and the step. Every operation expected to
complete gets a deadline (``KitOptions.step_timeout``), so a hang is a ``ReadTimeout``
that fails its step; the kit needs no sleeps.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeAlias

import anyio

from .._exceptions import SessionBrokenError
from ..transports.base import MessageTransport

__all__ = ["KitOptions", "LinkOpener", "Session", "Stats"]

LinkOpener: TypeAlias = Callable[[], AbstractAsyncContextManager[MessageTransport]]
"""Opens a link to a :func:`~aiotmc.testing.conformance_device`; called once per link."""

MAX_SIZE = 16 << 20
_TAGS: Iterator[int] = itertools.count(1)


@dataclass(frozen=True, kw_only=True)
class KitOptions:
    """Bounds and sizes for the checks (the defaults suit every tier, QEMU included)."""

    step_timeout: float = 20.0  #: the deadline of every operation expected to complete
    timeout_margin: float = 5.0  #: how late a deadline may fire (a loaded CI machine)
    block_sizes: tuple[int, ...] = (1, 511, 512, 4096, 100_000, 1_000_003)  #: for check_blocks
    cancel_block_size: int = 100_000  #: block / upload size for the cancellation sweeps
    max_steps: int = 3000  #: longest cancellation delay tried (steps); sweeps usually end sooner


@dataclass
class Stats:
    """What a check did, for reports and for non-vacuity assertions."""

    steps: int = 0
    cancelled: int = 0
    completed: int = 0
    reopened: int = 0
    notes: list[str] = field(default_factory=list)


class Session:
    """One check's link, reopened when the transport reports a broken session."""

    def __init__(self, open_link: LinkOpener, check: str, options: KitOptions) -> None:
        self.open_link = open_link
        self.check = check
        self.options = options
        self.stats = Stats()
        self._stack: AsyncExitStack | None = None
        self._link: MessageTransport | None = None

    @property
    def link(self) -> MessageTransport:
        assert self._link is not None, f"{self.check}: no open link"
        return self._link

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> MessageTransport:
        """Open a new link (closing the current one first)."""
        await self.close()
        stack = AsyncExitStack()
        await stack.__aenter__()
        self._stack = stack
        try:
            link = await stack.enter_async_context(self.open_link())
        except BaseException:
            await self.close()
            raise
        assert isinstance(link, MessageTransport), (
            f"{self.check}: open_link() gave {link!r}, not a MessageTransport"
        )
        self._link = link
        return link

    async def close(self) -> None:
        stack, self._stack, self._link = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @staticmethod
    def tag() -> int:
        """A number no other exchange of this process has used."""
        return next(_TAGS)

    def deadline(self) -> float:
        return anyio.current_time() + self.options.step_timeout

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """Run a step; any failure becomes ``AssertionError("check: step: ...")``.

        No cancel scope here: links may own task groups, and a step may (re)open one.
        Steps are bounded by the deadlines they give every operation instead.
        """
        self.stats.steps += 1
        where = f"{self.check}: {name}"
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise AssertionError(f"{where}: unexpected {exc!r}") from exc

    async def ask(self, command: bytes) -> bytes:
        """One exchange; the answer without its terminator."""
        answer = await self.link.exchange(command, max_size=MAX_SIZE, deadline=self.deadline())
        return strip(answer)

    async def expect_in_step(self, after: str) -> None:
        """The next exchange must get its own answer (or, once, SessionBrokenError and a
        reopened link must)."""
        tag = self.tag()
        try:
            answer = await self.ask(b"ECHO? %d\n" % tag)
        except SessionBrokenError:
            self.stats.reopened += 1
            await self.open()
            tag = self.tag()
            answer = await self.ask(b"ECHO? %d\n" % tag)
        assert answer == b"%d" % tag, (
            f"crossed answer after {after}: asked ECHO? {tag}, got {answer[:40]!r}"
        )


def strip(message: bytes) -> bytes:
    """A response message without its terminator."""
    return message[:-1] if message.endswith(b"\n") else message
