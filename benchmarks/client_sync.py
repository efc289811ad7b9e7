"""aiotmc's blocking API as users write it: ``aiotmc.sync.open``, ``query``, ``query_block``.

The async objects live in :mod:`aiotmc.sync`'s event-loop thread (asyncio, the default);
over a raw socket ``query`` runs in the calling thread when the instrument is free (the
calling-thread fast path), other calls hop to the loop thread. Opening is not timed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import aiotmc
import aiotmc.sync

from .common import NotAvailable, Result, median, repeat, result, time_calls
from .figures import (
    BLOCK_QUERY,
    IDN,
    MB,
    MEAS,
    UPLOAD,
    UPLOAD_CHECK,
    pattern_ok,
    resource,
    reused_buffer,
)

__all__ = ["SyncClient"]

_TIMEOUT = 60.0


class SyncClient:
    """One process, one :mod:`aiotmc.sync` loop thread; instruments opened per trial."""

    def __init__(self, name: str) -> None:
        from aiotmc.sync._portal import default_backend, portal_for

        self.name = name
        self.backend = default_backend()
        portal_for()  # start the loop thread now, not in the first trial

    def versions(self) -> dict[str, str]:
        """Library versions for the report."""
        import importlib.metadata as md

        return {
            "aiotmc": aiotmc.__version__,
            "anyio": md.version("anyio"),
            "aiotmc.sync loop": self.backend,
        }

    def run(self, kind: str, params: dict[str, Any]) -> Result:
        """Run one trial of ``kind``."""
        trial: Callable[[dict[str, Any]], Result] | None = getattr(self, f"_{kind}", None)
        if trial is None:
            raise NotAvailable("not applicable to the blocking API")
        return trial(params)

    def _rtt(self, p: dict[str, Any]) -> Result:
        with aiotmc.sync.open(resource(p["scope"]), timeout=_TIMEOUT) as inst:
            # All threads: the loop thread's share (none on the fast path) is counted too.
            rtt_us, cpu_us = time_calls(partial(inst.query, IDN), p["queries"], p["warmup"])
        return result(rtt_us=rtt_us, cpu_us=cpu_us)

    def _fanout(self, p: dict[str, Any]) -> Result:
        ports = p["dmm"][: p["instruments"]]
        specs = {str(i): resource(port) for i, port in enumerate(ports)}
        with aiotmc.sync.open_many(specs, strict=True, timeout=_TIMEOUT) as group:

            def everyone() -> None:
                for answer in group.query_all(MEAS, strict=True).values():
                    float(str(answer.value))

            everyone()  # warm-up
            times = repeat(everyone, p["reps"])
        return result(ms=median(times) * 1e3)

    def _block(self, p: dict[str, Any]) -> Result:
        size: int = p["size"]
        command = BLOCK_QUERY.format(size=size)
        with aiotmc.sync.open(
            resource(p["scope"]), timeout=_TIMEOUT, max_message_size=size + 64
        ) as inst:
            if not pattern_ok(inst.query_block(command), size):
                raise RuntimeError("block payload does not match the test pattern")
            if p["reuse"]:
                buffer = reused_buffer(size)

                def read() -> None:
                    inst.query_block(command, into=buffer)

            else:

                def read() -> None:
                    inst.query_block(command)

            times = repeat(read, p["reps"])
        return result(mb_s=size / MB / median(times))

    def _upload(self, p: dict[str, Any]) -> Result:
        import numpy

        size: int = p["size"]
        payload = numpy.resize(numpy.arange(256, dtype=numpy.uint8), size)
        with aiotmc.sync.open(resource(p["scope"]), timeout=_TIMEOUT) as inst:

            def send() -> str:
                inst.write_binary_values(UPLOAD, payload, datatype="B")
                return inst.query(UPLOAD_CHECK)

            if not send().startswith(f"{size},"):
                raise RuntimeError("upload not confirmed by the device")
            times = repeat(send, p["reps"])
        return result(mb_s=size / MB / median(times))

    def _concurrent(self, p: dict[str, Any]) -> Result:
        """``tasks`` threads share one instrument (no lock of their own: aiotmc's
        serialises them), each running ``per_task`` queries; then one thread alone."""
        tasks, per_task = p["tasks"], p["per_task"]
        total = tasks * per_task
        with aiotmc.sync.open(resource(p["scope"]), timeout=_TIMEOUT) as inst:

            def worker(_: int) -> None:
                for _ in range(per_task):
                    inst.query(IDN)

            def alone() -> None:
                for _ in range(total):
                    inst.query(IDN)

            with ThreadPoolExecutor(max_workers=tasks) as pool:

                def everyone() -> None:
                    list(pool.map(worker, range(tasks)))

                everyone()  # warm-up: starts every thread
                contended = median(repeat(everyone, 3)) / total * 1e6
            alone()
            uncontended = median(repeat(alone, 3)) / total * 1e6
        return result(
            us_per_query=contended, uncontended_us=uncontended, contended_x=contended / uncontended
        )
