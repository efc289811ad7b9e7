"""Soak test: many simulated instruments, continuous concurrent queries and SRQs, for a set time.

Half of the instruments are served by SimServer on loopback (raw sockets, service requests
by status-byte polling), half are ``SIM::`` in-process (native service requests). Every
round queries all of them concurrently (one task per instrument in a task group, as a
group query does); each query asks ``ECHO? <n>`` and checks that the answer is ``n``.
Every ``--srq-every`` rounds each instrument also raises a service request and waits
for it. At the end it reports throughput, errors, SRQs, and RSS / open file descriptors /
tasks / threads right after the warm-up and at the end::

    .venv/bin/python scripts/soak.py --duration 600            # ten minutes
    .venv/bin/python scripts/soak.py --duration 10 --json      # what CI runs
    .venv/bin/python scripts/soak.py --backend trio -n 200

Exit status 0 when no exchange failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

import aiotmc
from aiotmc.sim.device import SimDevice
from aiotmc.sim.server import serve_many

SRQ_ARM = "*ESE 1;*SRE 32;*OPC"  # after *CLS: OPC -> ESB -> RQS, one service request


def make_device() -> SimDevice:
    device = SimDevice(identity="aiotmc,SOAK,0,1")
    device.add_raw_query("ECHO?", lambda args: b"%s\n" % args[0], args=1)
    return device


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def task_count() -> int:
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        def count(task: Any) -> int:
            return 1 + sum(
                count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
            )

        return count(trio.lowlevel.current_root_task())
    import asyncio

    return len(asyncio.all_tasks())


@dataclass
class Snapshot:
    rss: int
    fds: int
    tasks: int
    threads: int

    @classmethod
    def now(cls) -> Snapshot:
        return cls(
            rss=rss_bytes(),
            fds=len(os.listdir("/proc/self/fd")),
            tasks=task_count(),
            threads=threading.active_count(),
        )


@dataclass
class Report:
    backend: str
    instruments: int
    duration: float = 0.0
    rounds: int = 0
    queries: int = 0
    srqs: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    queries_per_second: float = 0.0
    start: Snapshot | None = None
    end: Snapshot | None = None

    @property
    def rss_growth(self) -> int:
        assert self.start is not None and self.end is not None
        return self.end.rss - self.start.rss


class Soak:
    def __init__(self, instruments: list[aiotmc.Instrument], srq_every: int) -> None:
        self.instruments = instruments
        self.srq_every = srq_every
        self.tag = 0
        self.queries = 0
        self.srqs = 0
        self.errors: Counter[str] = Counter()
        self.first_errors: list[str] = []

    def _failed(self, inst: aiotmc.Instrument, exc: BaseException) -> None:
        self.errors[type(exc).__name__] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{inst.resource}: {exc!r}")

    async def _guard(self, inst: aiotmc.Instrument, work: Callable[[], Awaitable[None]]) -> None:
        try:
            with anyio.fail_after(10):
                await work()
        except Exception as exc:  # counted and reported; the soak goes on
            self._failed(inst, exc)

    async def query(self, inst: aiotmc.Instrument) -> None:
        self.tag += 1
        tag = self.tag

        async def work() -> None:
            answer = await inst.query(f"ECHO? {tag}")
            if answer != str(tag):
                raise AssertionError(f"crossed answer: asked {tag}, got {answer!r}")
            self.queries += 1

        await self._guard(inst, work)

    async def srq(self, inst: aiotmc.Instrument) -> None:
        async def work() -> None:
            async with inst.service_requests(buffer=4) as events:
                async with inst.lock():
                    await inst.write("*CLS")
                    if inst.srq_poller is not None:
                        inst.srq_poller.rearm()
                    await inst.write(SRQ_ARM)
                event = await events.receive()
                if not event.status & 0x40:
                    raise AssertionError(f"service request without RQS: {event!r}")
            self.srqs += 1

        await self._guard(inst, work)

    async def round(self, number: int) -> None:
        with_srq = self.srq_every > 0 and number % self.srq_every == 0
        async with anyio.create_task_group() as tg:
            for inst in self.instruments:
                tg.start_soon(self.srq if with_srq else self.query, inst)


async def run(args: argparse.Namespace, backend: str) -> Report:
    count = args.instruments
    tcp_count = count // 2
    report = Report(backend=backend, instruments=count)
    tcp_devices = [make_device() for _ in range(tcp_count)]
    sim_devices = [make_device() for _ in range(count - tcp_count)]
    async with AsyncExitStack() as stack:
        servers = await stack.enter_async_context(serve_many(tcp_devices))
        instruments: list[aiotmc.Instrument] = []
        for server in servers:
            instruments.append(
                await stack.enter_async_context(
                    aiotmc.open(server.resource, timeout=5, srq_poll_interval=args.poll)
                )
            )
        for index, device in enumerate(sim_devices):
            instruments.append(
                await stack.enter_async_context(
                    aiotmc.open(f"SIM::soak::soak{index}", device=device, timeout=5)
                )
            )
        soak = Soak(instruments, args.srq_every)
        started = time.monotonic()
        warm_until = started + min(args.warmup, args.duration / 3)
        stop_at = started + args.duration
        number = 0
        measured_from = started
        queries_at_start = 0
        while True:
            now = time.monotonic()
            if report.start is None and now >= warm_until:
                report.start = Snapshot.now()
                measured_from = now
                queries_at_start = soak.queries
            if now >= stop_at:
                break
            number += 1
            await soak.round(number)
        report.end = Snapshot.now()
        elapsed = time.monotonic() - measured_from
        report.duration = round(time.monotonic() - started, 2)
        report.rounds = number
        report.queries = soak.queries
        report.srqs = soak.srqs
        report.errors = sum(soak.errors.values())
        report.error_kinds = dict(soak.errors)
        report.first_errors = soak.first_errors
        report.queries_per_second = round((soak.queries - queries_at_start) / max(elapsed, 1e-9))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("-n", "--instruments", type=int, default=50, help="how many (50)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--srq-every", type=int, default=10, help="SRQ round every N (10)")
    parser.add_argument("--poll", type=float, default=0.02, help="TCP SRQ poll interval")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before 'start'")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    report = anyio.run(run, args, args.backend, backend=args.backend)
    data: dict[str, Any] = asdict(report)
    data["rss_growth"] = report.rss_growth
    if args.json:
        print("SOAK " + json.dumps(data))
    else:
        assert report.start is not None and report.end is not None
        print(
            f"{report.instruments} instruments ({args.backend}), {report.duration} s: "
            f"{report.queries} queries ({report.queries_per_second}/s), {report.srqs} SRQs, "
            f"{report.errors} errors {report.error_kinds or ''}\n"
            f"  after warm-up: RSS {report.start.rss / 1e6:.1f} MB, {report.start.fds} fds, "
            f"{report.start.tasks} tasks, {report.start.threads} threads\n"
            f"  at the end:    RSS {report.end.rss / 1e6:.1f} MB, {report.end.fds} fds, "
            f"{report.end.tasks} tasks, {report.end.threads} threads "
            f"(RSS {report.rss_growth / 1e6:+.2f} MB)"
        )
        for line in report.first_errors:
            print("  error:", line)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
