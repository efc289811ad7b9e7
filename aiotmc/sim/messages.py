"""What a simulated device queues: program messages in, response messages out, and the
overlapped operations ``*OPC``/``*WAI`` wait for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._types import BytesLike
from .errors import ScpiError
from .program import ProgramUnit, parse_program
from .responses import Response

__all__ = ["Operation", "OutputMessage", "PendingMessage", "parse_cached"]

_parse_cache: dict[bytes, list[list[ProgramUnit]]] = {}


def parse_cached(message: BytesLike, max_elements: int) -> list[list[ProgramUnit]]:
    """:func:`parse_program`, cached for short messages (parsing is pure; bytes immutable)."""
    if type(message) is not bytes or len(message) > 256 or max_elements < 256:
        return parse_program(message, max_elements=max_elements)
    programs = _parse_cache.get(message)
    if programs is None:
        programs = parse_program(message, max_elements=max_elements)
        if len(_parse_cache) >= 4096:
            _parse_cache.clear()
        _parse_cache[message] = programs
    return programs


@dataclass(eq=False, slots=True)
class Operation:
    """An overlapped operation (acquisition, measurement) that ``*OPC``/``*WAI`` wait for.

    ``due`` is the clock time it completes, ``None`` while it waits for a trigger (then
    it completes ``duration`` seconds after the trigger).
    """

    duration: float
    due: float | None
    on_complete: Callable[[], None] | None = None
    done: bool = False


class PendingMessage:
    __slots__ = (
        "arrival",
        "count",
        "error",
        "index",
        "last_raw",
        "latency",
        "parts",
        "path",
        "units",
        "waiting",
    )

    def __init__(
        self,
        units: list[ProgramUnit],
        arrival: float,
        latency: float,
        error: ScpiError | None = None,
    ) -> None:
        self.units = units
        self.arrival = arrival
        self.latency = latency
        self.error = error
        self.index = 0
        self.parts: list[BytesLike] = []
        self.count = 0  # response units so far
        self.last_raw = False
        self.path: tuple[str, ...] = ()
        self.waiting: Callable[[], Response] | None = None


class OutputMessage:
    __slots__ = ("parts", "ready", "ready_at")

    def __init__(self, parts: list[BytesLike], ready_at: float, ready: bool) -> None:
        self.parts = parts
        self.ready_at = ready_at
        self.ready = ready
