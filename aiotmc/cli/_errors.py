"""Exit-status exceptions and the one-line description of any error for the user."""

from __future__ import annotations

from .._exceptions import AiotmcError, InvalidResourceName


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class CommandError(Exception):
    """A command failed for a reason outside aiotmc's exception tree (exit status 1)."""


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """One line for the user."""
    exc = leaf(exc)
    if isinstance(exc, InvalidResourceName):
        first = str(exc).splitlines()[0] if str(exc) else "invalid resource name"
        return f"invalid resource name {exc.resource!r}: {first}" if exc.resource else first
    if isinstance(exc, AiotmcError | UsageError | CommandError):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def host_port(host: str, port: object) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:5025``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
