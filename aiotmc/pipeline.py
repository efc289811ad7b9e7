"""Pipelined queries on one instrument (HiSLIP overlapped mode): :meth:`Instrument.pipeline`.

Inside ``async with inst.pipeline() as pipe:`` the instrument is held for the block (like
:meth:`Instrument.lock`) and every task given ``pipe`` queries at once: each query goes
out as soon as it is asked and its answer is matched by MessageID, so tasks no longer
wait for each other's round trip. A task cancelled or timed out drops only its own
answer. Inside the block, query through ``pipe`` (the instrument's own methods would
find the link busy while pipelined queries are in flight). Only links with the
``pipelining`` capability (:class:`SupportsPipelining`) offer it; anywhere else
:class:`~aiotmc.UnsupportedOperation`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import anyio

from ._exceptions import UnsupportedOperation
from ._fastpath import running_loop
from ._log import io_log, show
from ._types import DEFAULT, Default
from .transports.base import SupportsPipelining

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

    from .transports.base import MessageTransport

__all__ = ["Pipeline", "PipelinedInstrument", "pipeline_block"]


class PipelinedInstrument(Protocol):
    """What a pipeline uses of an instrument: :class:`~aiotmc.Instrument` is one.

    A protocol, not ``Instrument`` itself, so that this module sits below the instrument
    (whose :meth:`~aiotmc.Instrument.pipeline` calls it) even for type checkers. It takes
    the instrument's own deadline and text coding, hence the private members.
    """

    @property
    def resource(self) -> str: ...

    @property
    def transport(self) -> MessageTransport: ...

    @property
    def max_message_size(self) -> int: ...

    def lock(self) -> AbstractAsyncContextManager[None]: ...

    def _deadline(
        self, timeout: float | Default | None, loop: AbstractEventLoop | None
    ) -> float: ...

    def _encode(self, command: str) -> bytes: ...

    def _decode(self, raw: bytes) -> str: ...


class Pipeline:
    """Queries in flight together on one instrument; share it between tasks."""

    def __init__(self, instrument: PipelinedInstrument, transport: SupportsPipelining) -> None:
        self._inst = instrument
        self._transport = transport

    async def query(self, command: str, *, timeout: float | Default | None = DEFAULT) -> str:
        """Write ``command`` and return its answer; other tasks' queries overlap it."""
        inst = self._inst
        deadline = inst._deadline(timeout, running_loop())
        data = inst._encode(command)
        raw = await self._transport.exchange_overlapped(
            data, max_size=inst.max_message_size, deadline=deadline
        )
        if io_log.isEnabledFor(10):
            io_log.debug("%s pipelined %s -> %s", inst.resource, show(data), show(raw))
        return inst._decode(raw)

    async def query_many(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Send every query at once and return the answers in order (one round trip)."""
        answers: list[str] = [""] * len(commands)

        async def ask(index: int, command: str) -> None:
            answers[index] = await self.query(command, timeout=timeout)

        async with anyio.create_task_group() as tg:
            for index, command in enumerate(commands):
                tg.start_soon(ask, index, command)
        return answers


@asynccontextmanager
async def pipeline_block(instrument: PipelinedInstrument) -> AsyncIterator[Pipeline]:
    """The body of :meth:`Instrument.pipeline`."""
    transport = instrument.transport
    if not (isinstance(transport, SupportsPipelining) and transport.info.capabilities.pipelining):
        raise UnsupportedOperation(
            f"{instrument.resource}: no pipelining on this link (HiSLIP needs overlapped "
            "mode: aiotmc.open(..., overlapped=True) on an instrument that offers it)"
        )
    async with instrument.lock():
        yield Pipeline(instrument, transport)
