"""Helpers shared by the clients: results, "not available", bounded repetition loops."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypedDict

__all__ = [
    "DEFAULT_BUDGET",
    "NotAvailable",
    "Result",
    "arepeat",
    "atime_calls",
    "median",
    "repeat",
    "result",
    "time_calls",
]

DEFAULT_BUDGET: Final = 2.0  #: seconds after which no further repetition starts


class NotAvailable(Exception):
    """This client cannot produce this figure here (the reason goes into the table)."""


class Result(TypedDict):
    """What one trial returns: named metrics and free-text notes."""

    metrics: dict[str, float]
    notes: list[str]


def result(notes: list[str] | None = None, **metrics: float) -> Result:
    """Build a :class:`Result`."""
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "notes": notes or []}


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def repeat(fn: Callable[[], Any], reps: int, budget: float = DEFAULT_BUDGET) -> list[float]:
    """Time ``fn()`` up to ``reps`` times (at least once), stopping after ``budget`` s.

    Returns the durations in seconds.
    """
    times: list[float] = []
    stop = time.perf_counter() + budget
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > stop:
            break
    return times


def time_calls(fn: Callable[[], Any], calls: int, warmup: int) -> tuple[float, float]:
    """``fn()`` ``warmup`` times, then ``calls`` timed ones: the median µs per call and the
    process's CPU µs per call (all its threads)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    clock = time.perf_counter
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    cpu = time.process_time() - cpu0
    return median(samples) * 1e6, cpu / calls * 1e6


async def atime_calls(
    fn: Callable[[], Awaitable[Any]], calls: int, warmup: int
) -> tuple[float, float]:
    """Async :func:`time_calls`."""
    for _ in range(warmup):
        await fn()
    samples: list[float] = []
    clock = time.perf_counter
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = clock()
        await fn()
        samples.append(clock() - t0)
    cpu = time.process_time() - cpu0
    return median(samples) * 1e6, cpu / calls * 1e6


async def arepeat(
    fn: Callable[[], Awaitable[Any]], reps: int, budget: float = DEFAULT_BUDGET
) -> list[float]:
    """Async :func:`repeat`."""
    times: list[float] = []
    stop = time.perf_counter() + budget
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > stop:
            break
    return times
