"""The pattern users write today, as a benchmark child: ``python -m benchmarks.gateway_script``.

What the gateway replaces: PyVISA (with the pure-Python pyvisa-py backend) ``query`` per
reading, then one synchronous ``requests.post`` per reading to an HTTP endpoint, in a
loop; one thread per instrument (``--threads`` spreads the instruments over fewer
threads, each reading its share one after the other). Each loop keeps its own schedule
(``period`` from one start to the next, no catching up after a late round), which is
kinder to the script than the usual ``time.sleep(period)`` after the work.

``--http post`` (default) calls ``requests.post`` (a new connection per reading, as
such scripts do); ``--http session`` reuses one ``requests.Session`` per thread.

Protocol (JSON lines, see :mod:`benchmarks.procs`): the first request
``{"ports": [...], "url": U, "rate": R}`` opens every instrument and answers
``{"opened": N}``; ``{"op": "start"}`` starts the threads; ``{"op": "count"}`` answers
``{"readings": N, "errors": E}``. The process exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from .figures import HOST
from .procs import raise_fd_limit, serve_lines


class _Counters:
    def __init__(self) -> None:
        self.readings = 0
        self.errors = 0
        self.lock = threading.Lock()


def _loop(
    instruments: list[tuple[str, Any]],
    post: Any,
    url: str,
    period: float,
    go: threading.Event,
    stop: threading.Event,
    counters: _Counters,
) -> None:
    """One thread: read each of its instruments, post each reading, keep the period."""
    go.wait()
    due = time.monotonic()
    while not stop.is_set():
        for name, inst in instruments:
            try:
                value = float(inst.query("MEAS:VOLT?"))
                reading = {"instrument": name, "channel": "volts", "value": value}
                reading.update(unit="V", timestamp=time.time())
                post(url, json=reading, timeout=10).raise_for_status()
            except Exception:  # what such scripts do: note it, carry on
                with counters.lock:
                    counters.errors += 1
            else:
                with counters.lock:
                    counters.readings += 1
        due += period
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            due = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    """Open, run on request, count on request; exit at EOF."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_script")
    parser.add_argument("--threads", type=int, default=0, help="0: one per instrument")
    parser.add_argument("--http", choices=("post", "session"), default="post")
    args = parser.parse_args(argv)
    raise_fd_limit()
    requests_in, responses = serve_lines()

    import pyvisa
    import requests

    setup = json.loads(requests_in.readline())
    rm = pyvisa.ResourceManager("@py")
    instruments = []
    for index, port in enumerate(setup["ports"]):
        inst = rm.open_resource(f"TCPIP0::{HOST}::{port}::SOCKET", timeout=10_000)
        inst.read_termination = inst.write_termination = "\n"
        instruments.append((f"dmm{index}", inst))
    responses.write(json.dumps({"opened": len(instruments)}) + "\n")

    threads = args.threads or len(instruments)
    go, stop, counters = threading.Event(), threading.Event(), _Counters()
    workers = []
    for k in range(threads):
        mine = instruments[k::threads]
        post = requests.Session().post if args.http == "session" else requests.post
        period = 1.0 / float(setup["rate"])
        work = (mine, post, setup["url"], period, go, stop, counters)
        workers.append(threading.Thread(target=_loop, args=work, daemon=True))
    for worker in workers:  # started now, waiting for "go"; starting them all costs time
        worker.start()
    for line in requests_in:
        op = json.loads(line).get("op")
        if op == "start":
            go.set()
            responses.write(json.dumps({"threads": threads}) + "\n")
        elif op == "count":
            with counters.lock:
                counts = {"readings": counters.readings, "errors": counters.errors}
            responses.write(json.dumps(counts) + "\n")
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
