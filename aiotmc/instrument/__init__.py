"""The front end: :class:`Instrument`, one per open resource.

Concurrency: every public operation holds the instrument's lock for the *whole* exchange
(write and read), so concurrent tasks never get each other's answers. :meth:`Instrument.lock`
exposes the same lock for multi-step transactions.

Timeouts: ``timeout=`` (per call, or the instrument default) bounds the exchange once the
lock is held. It becomes an absolute deadline handed to the transport, which opens a cancel
scope only around real waits and raises :class:`~aiotmc.WriteTimeout` or
:class:`~aiotmc.ReadTimeout` for the phase that ran out. Cancellation from the caller's own
scopes passes through untouched; either way the transport is left in step (see
docs/cancellation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from .._types import DEFAULT, Default
from ..operation import OperationTiming, PendingOperation, operation, wait_operation_complete
from ..pipeline import Pipeline, pipeline_block
from ._blocking import BlockingMethods
from ._control import ControlMethods
from ._values import ValueMethods

__all__ = ["Instrument"]


class Instrument(ValueMethods, ControlMethods, BlockingMethods):
    """An open instrument. Create it with :func:`aiotmc.open`; no I/O happens in ``__init__``.

    Args:
        transport: the link (any :class:`~aiotmc.transports.base.MessageTransport`).
        timeout: default per-exchange timeout in seconds (``None``: wait forever, ``0``: at
            once); more than 1000 s raises :class:`ValueError` (seconds, not milliseconds).
        read_termination: stripped from the end of text responses (``None``: nothing is
            stripped; only on buses that end messages without a terminator).
        write_termination: appended to every command sent with :meth:`write`.
        encoding: text encoding of commands and responses.
        max_message_size: largest response accepted (bytes); larger ones raise
            :class:`~aiotmc.RemoteProtocolError` and are discarded.
    """

    # -- what takes the whole instrument: pipelines, operation completion -----------------

    def pipeline(self) -> AbstractAsyncContextManager[Pipeline]:
        """Hold the instrument for a block in which tasks sharing the yielded
        :class:`~aiotmc.pipeline.Pipeline` query at once, answers matched (HiSLIP
        overlapped mode; elsewhere :class:`UnsupportedOperation`)."""
        return pipeline_block(self)

    async def query_pipelined(
        self, commands: Sequence[str], *, timeout: float | Default | None = DEFAULT
    ) -> list[str]:
        """Send separate queries at once and collect their answers in order: one round
        trip for the lot (see :meth:`pipeline`)."""
        async with self.pipeline() as pipe:
            return await pipe.query_many(commands, timeout=timeout)

    def operation(
        self, commands: str | Sequence[str] = (), *, timeout: float | Default | None = DEFAULT
    ) -> AbstractAsyncContextManager[PendingOperation]:
        """Start an operation (``commands`` + ``*OPC``); completion is awaited by SRQ where
        available, ``*OPC?`` otherwise: ``async with inst.operation(":SINGle") as op:``.

        See :func:`aiotmc.operation.operation` for the sequence and exceptions.
        """
        return operation(
            self, commands if isinstance(commands, str) else list(commands), timeout=timeout
        )

    async def wait_operation_complete(
        self, commands: str | Sequence[str] = (), *, timeout: float | Default | None = DEFAULT
    ) -> OperationTiming:
        """Send ``commands`` + ``*OPC`` and wait for completion (SRQ, else ``*OPC?``).

        See :func:`aiotmc.operation.wait_operation_complete`.
        """
        return await wait_operation_complete(
            self, commands if isinstance(commands, str) else list(commands), timeout=timeout
        )
