"""PyVISA + pyvisa-py, two ways: as users write it, and its best configuration found;
and PyVISA as users write it on aiotmc's backend.

``pyvisa``: ``open_resource(..., read_termination="\\n")``, ``query``,
``query_binary_values``, ``write_binary_values``; fan-out is sequential.
``pyvisa-best``: termination character off for blocks (``write_raw`` + ``read_bytes``),
``write_raw`` of one prepared buffer for uploads, a thread pool for fan-out.
``pyvisa-aiotmc``: the ``pyvisa`` code on ``ResourceManager("@aiotmc")`` (the
``pyvisa_aiotmc`` package of this repository) instead of ``"@py"``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from .common import NotAvailable, Result, median, repeat, result, time_calls
from .figures import BLOCK_QUERY, IDN, MB, MEAS, UPLOAD, UPLOAD_CHECK, pattern_ok, resource

__all__ = ["PyvisaClient"]

_TIMEOUT_MS = 30_000


class PyvisaClient:
    """One ResourceManager("@py") (or "@aiotmc") per worker process; resources opened
    per trial."""

    def __init__(self, name: str) -> None:
        import pyvisa

        self.name = name
        self.best = name == "pyvisa-best"
        self.on_aiotmc = name == "pyvisa-aiotmc"
        self.rm = pyvisa.ResourceManager("@aiotmc" if self.on_aiotmc else "@py")

    def versions(self) -> dict[str, str]:
        """Library versions for the report."""
        import importlib.metadata as md

        out = {"pyvisa": md.version("pyvisa")}
        if self.on_aiotmc:
            import aiotmc

            out["aiotmc"] = aiotmc.__version__
        else:
            out["pyvisa-py"] = md.version("pyvisa-py")
        return out

    def run(self, kind: str, params: dict[str, Any]) -> Result:
        """Run one trial of ``kind``."""
        method: Callable[[dict[str, Any]], Result] | None = getattr(self, f"_{kind}", None)
        if method is None:
            raise NotAvailable("not applicable to PyVISA")
        return method(params)

    @contextmanager
    def _open(self, *ports: int) -> Iterator[list[Any]]:
        insts: list[Any] = []
        try:
            for port in ports:
                insts.append(
                    self.rm.open_resource(
                        resource(port),
                        read_termination="\n",
                        write_termination="\n",
                        timeout=_TIMEOUT_MS,
                    )
                )
            yield insts
        finally:
            for inst in insts:
                inst.close()

    def _rtt(self, p: dict[str, Any]) -> Result:
        queries = p["queries"]
        with self._open(p["scope"]) as (inst,):
            if self.best:
                request = (IDN + "\n").encode()

                def query() -> Any:
                    inst.write_raw(request)
                    return inst.read_raw()

            else:

                def query() -> Any:
                    return inst.query(IDN)

            rtt_us, cpu_us = time_calls(query, queries, p["warmup"])
        return result(rtt_us=rtt_us, cpu_us=cpu_us)

    def _fanout(self, p: dict[str, Any]) -> Result:
        n = p["instruments"]
        notes: list[str] = []
        count = n
        if not self.best and n > p["sequential_cap"]:
            count = p["sequential_cap"]
            notes.append(f"extrapolated: measured on {count} instruments, scaled by {n}/{count}")
        with self._open(*p["dmm"][:count]) as insts:
            if self.best:
                with ThreadPoolExecutor(max_workers=count) as pool:

                    def everyone() -> None:
                        for value in pool.map(lambda inst: inst.query(MEAS), insts):
                            float(value)

                    everyone()  # warm-up: starts every thread
                    times = repeat(everyone, p["reps"])
            else:

                def everyone() -> None:
                    for inst in insts:
                        float(inst.query(MEAS))

                everyone()
                times = repeat(everyone, p["reps"])
        return result(notes, ms=median(times) * 1e3 * n / count)

    def _block(self, p: dict[str, Any]) -> Result:
        size = p["size"]
        command = BLOCK_QUERY.format(size=size)
        with self._open(p["scope"]) as (inst,):
            if self.best:
                inst.read_termination = None  # termchar off: no return at every 0x0A
                request = (command + "\n").encode()

                def read() -> Any:
                    inst.write_raw(request)
                    head = inst.read_bytes(2)
                    length = int(inst.read_bytes(int(head[1:2])))
                    data = inst.read_bytes(length, chunk_size=length)
                    if inst.read_bytes(1) != b"\n":
                        raise ValueError("no terminator after the block")
                    return data

            else:
                import numpy

                def read() -> Any:
                    return inst.query_binary_values(command, datatype="B", container=numpy.array)

            if not pattern_ok(bytes(read()), size):
                raise RuntimeError("block payload does not match the test pattern")
            times = repeat(read, p["reps"])
        notes = ["no read-into API: a new buffer per read"] if p["reuse"] else []
        return result(notes, mb_s=size / MB / median(times))

    def _upload(self, p: dict[str, Any]) -> Result:
        import numpy

        size = p["size"]
        values = numpy.resize(numpy.arange(256, dtype=numpy.uint8), size)
        with self._open(p["scope"]) as (inst,):
            if self.best:
                digits = str(size)
                message = f"{UPLOAD}#{len(digits)}{digits}".encode() + values.tobytes() + b"\n"

                def send() -> str:
                    inst.write_raw(message)
                    return str(inst.query(UPLOAD_CHECK))

            else:

                def send() -> str:
                    inst.write_binary_values(UPLOAD, values, datatype="B")
                    return str(inst.query(UPLOAD_CHECK))

            if not send().startswith(f"{size},"):
                raise RuntimeError("upload not confirmed by the device")
            times = repeat(send, p["reps"])
        return result(mb_s=size / MB / median(times))

    def _concurrent(self, p: dict[str, Any]) -> Result:
        tasks, per_task = p["tasks"], p["per_task"]
        total = tasks * per_task
        with self._open(p["scope"]) as (inst,):
            if self.best:
                lock = threading.Lock()

                def worker(_: int) -> None:
                    for _ in range(per_task):
                        with lock:
                            inst.query(IDN)

                with ThreadPoolExecutor(max_workers=tasks) as pool:

                    def everyone() -> None:
                        list(pool.map(worker, range(tasks)))

                    everyone()
                    times = repeat(everyone, 3)
            else:

                def everyone() -> None:
                    for _ in range(total):
                        inst.query(IDN)

                everyone()
                times = repeat(everyone, 3)
        return result(us_per_query=median(times) / total * 1e6)
