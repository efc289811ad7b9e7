"""How a command runs: the global options, the event loop, opening the instrument."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ._errors import UsageError

if TYPE_CHECKING:
    from ..instrument import Instrument
    from ..resources import ResourceName

T = TypeVar("T")


@dataclass
class Options:
    """Global options after parsing (the subcommand's own are on the namespace)."""

    backend: str = "asyncio"
    timeout: float | None = 10.0
    debug: bool = False
    verbose: int = 0
    trace: bool = False
    read_termination: str | None = "\n"
    write_termination: str | None = "\n"


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        backend=getattr(args, "backend", "asyncio"),
        timeout=getattr(args, "timeout", 10.0),
        debug=getattr(args, "debug", False),
        verbose=getattr(args, "verbose", 0),
        trace=getattr(args, "trace", False),
        read_termination=getattr(args, "read_termination", "\n"),
        write_termination=getattr(args, "write_termination", "\n"),
    )


def start_logging(options: Options) -> None:
    """``-v``: the ``aiotmc`` logger at INFO on stderr; ``-vv`` or ``--trace``: DEBUG,
    every message sent and received included (``aiotmc.io``)."""
    if options.trace or options.verbose >= 2:
        from .._log import log_to_screen

        log_to_screen(logging.DEBUG)
    elif options.verbose:
        from .._log import log_to_screen

        log_to_screen(logging.INFO)


def run_async(options: Options, func: Callable[[], Awaitable[T]]) -> T:
    import anyio

    check_backend(options.backend)
    return anyio.run(func, backend=options.backend)


def check_backend(backend: str) -> None:
    if backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            raise UsageError("the trio backend needs trio: pip install 'aiotmc[trio]'") from None


def open_instrument(
    resource: ResourceName, options: Options
) -> AbstractAsyncContextManager[Instrument]:
    return _open_with_terminations(resource, options)


@asynccontextmanager
async def _open_with_terminations(
    resource: ResourceName, options: Options
) -> AsyncIterator[Instrument]:
    """``aiotmc.open`` with the global options; a read termination of None (the bus marks
    the end of messages) is set once the link is open, where the transport allows it."""
    from .._open import open as aiotmc_open

    read = options.read_termination
    async with aiotmc_open(
        resource,
        timeout=options.timeout,
        connect_timeout=options.timeout,
        read_termination=read if read is not None else "\n",
        write_termination=options.write_termination or "",
    ) as inst:
        if read is None:
            try:
                inst.read_termination = None
            except ValueError as exc:
                raise UsageError(f"--read-termination none: {exc}") from None
        yield inst
