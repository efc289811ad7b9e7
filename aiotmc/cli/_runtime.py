"""How a command runs: the global options, the event loop, opening the instrument."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
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


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        backend=getattr(args, "backend", "asyncio"),
        timeout=getattr(args, "timeout", 10.0),
        debug=getattr(args, "debug", False),
    )


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
    from .._open import open as aiotmc_open

    return aiotmc_open(resource, timeout=options.timeout, connect_timeout=options.timeout)
