"""What is measured: SCPI commands, sizes, clients, rounds and targets (full and quick)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

HOST: Final = "127.0.0.1"
MB: Final = 1_000_000  #: MB/s in this harness means 10**6 bytes per second

IDN: Final = "*IDN?"
MEAS: Final = "MEAS:VOLT?"
BLOCK_QUERY: Final = ":WAVeform:TEST? {size}"  #: block of ``size`` bytes 00..FF repeating
UPLOAD: Final = ":WAVeform:UPLoad "  #: followed by a definite-length block
UPLOAD_CHECK: Final = ":WAVeform:UPLoad?"  #: ``<bytes>,<crc32>`` of the last upload
FANOUT_LATENCY: Final = 0.010  #: seconds each fan-out instrument takes to answer
#: Block sizes up to this also get rows against the plain non-blocking client per loop
PLAIN_BLOCK_MAX: Final = 10 * MB

AIOTMC: Final = ("aiotmc-asyncio", "aiotmc-trio", "aiotmc-uvloop")
SYNC: Final = "aiotmc-sync"  #: the blocking API, aiotmc.sync, as users write it
PYVISA: Final = "pyvisa"  #: PyVISA + pyvisa-py as users write it
PYVISA_BEST: Final = "pyvisa-best"  #: the fastest pyvisa-py configuration found
PYVISA_AIOTMC: Final = "pyvisa-aiotmc"  #: PyVISA as users write it, on the @aiotmc backend
FLOOR: Final = "floor"  #: plain sockets, no library
CLIENTS: Final = (*AIOTMC, SYNC, PYVISA, PYVISA_BEST, PYVISA_AIOTMC, FLOOR)
#: Clients built on aiotmc: their ratios to the floor and to PyVISA are printed.
OURS: Final = (*AIOTMC, SYNC, PYVISA_AIOTMC)

Mode = Literal["full", "quick"]


@dataclass(frozen=True)
class Target:
    """``client <op> value x floor`` (basis "floor"), ``... x PyVISA`` (basis "pyvisa":
    PyVISA + pyvisa-py as users write it), ``... x PyVISA best`` (basis "pyvisa-best") or
    ``client <op> value`` (absolute), judged for each of ``clients`` on the row."""

    op: Literal["<=", ">="]
    value: float
    basis: Literal["floor", "pyvisa", "pyvisa-best", "absolute"] = "floor"
    clients: tuple[str, ...] = AIOTMC

    def describe(self, unit: str) -> str:
        """Short text for the table, e.g. ``<= 1.3x floor``."""
        if self.basis == "floor":
            return f"{self.op} {self.value:g}x floor"
        if self.basis == "pyvisa":
            return f"{self.op} {self.value:g}x PyVISA"
        if self.basis == "pyvisa-best":
            return f"{self.op} {self.value:g}x PyVISA best"
        return f"{self.op} {self.value:g} {unit}"


@dataclass(frozen=True)
class Row:
    """One line of the table: one metric of a measurement."""

    key: str
    label: str
    unit: str
    metric: str
    higher_is_better: bool = False
    target: Target | None = None
    #: The floor client reports this metric instead (a reference row: same aiotmc
    #: samples, compared with another floor).
    floor_metric: str | None = None
    #: Only these clients appear on the row (default: all clients of the measurement).
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Measurement:
    """One kind of trial, run once per round by each of its clients (round-robin)."""

    key: str
    kind: str
    params: dict[str, Any]
    clients: tuple[str, ...]
    rows: tuple[Row, ...]
    rounds: int
    timeout: float = 120.0  #: seconds one trial may take before the worker is killed
    na: str = ""  #: when set, nothing runs and every cell reads ``n/a: <na>``
    notes: dict[str, str] = field(default_factory=dict)  #: per-client method notes
    #: "umockdev": run in client processes of their own, against an emulated USB device
    #: (see :mod:`benchmarks.usbbed`), started for this measurement only.
    bed: str = ""
    #: The server the trial's ``scope`` parameter points at: "scope" (aiotmc's SimServer)
    #: or "responder" (the independent responder, :mod:`benchmarks.responder`).
    server: str = "scope"


RTT_TARGET: Final = Target("<=", 1.3)
THROUGHPUT_TARGET: Final = Target(">=", 0.8)
FANOUT_TARGET: Final = Target("<=", 1.25)
USB_TARGET: Final = Target(">=", 200.0, "absolute")
CONTENDED_TARGET: Final = Target("<=", 0.8, "pyvisa-best")
CONTENDED_OWN_TARGET: Final = Target("<=", 2.0, "absolute")  #: x one task's round trip
#: Issue 18: blocking round trips, aiotmc.sync and PyVISA on @aiotmc, <= PyVISA + pyvisa-py's
BLOCKING_RTT_TARGET: Final = Target("<=", 1.0, "pyvisa", clients=(SYNC, PYVISA_AIOTMC))
#: Issue 18: 100 MB ``query_binary_values`` through @aiotmc >= 10x pyvisa-py's
BACKEND_BLOCK_TARGET: Final = Target(">=", 10.0, "pyvisa", clients=(PYVISA_AIOTMC,))

_METHODS: Final = {
    "rtt": {
        SYNC: "aiotmc.sync.open(), query() (calling-thread fast path over the raw socket)",
        PYVISA: "query()",
        PYVISA_BEST: "write_raw() + read_raw()",
        PYVISA_AIOTMC: "query()",
        FLOOR: "blocking socket, recv_into (non-blocking refs: the faster of BufferedProtocol"
        " and recv_into + sock_recv_into on asyncio and uvloop; recv_into +"
        " trio.lowlevel.wait_readable on trio)",
    },
    "fanout": {
        "aiotmc": "task group",
        SYNC: "aiotmc.sync.open_many(), query_all() (a task group in the loop thread)",
        PYVISA: "sequential query()",
        PYVISA_BEST: "one thread per instrument (pool)",
        FLOOR: "plain asyncio, non-blocking sockets, gather",
    },
    "block": {
        SYNC: "query_block(cmd) / query_block(cmd, into=buffer) (via the loop thread)",
        PYVISA: "query_binary_values('B', container=numpy.array)",
        PYVISA_AIOTMC: "query_binary_values('B', container=numpy.array)",
        PYVISA_BEST: "write_raw + read_bytes, termchar off (no read-into API)",
        FLOOR: "blocking socket, exact-size recv_into",
    },
    "upload": {
        "aiotmc": "write_binary_values(numpy uint8)",
        SYNC: "write_binary_values(numpy uint8) (via the loop thread)",
        PYVISA: "write_binary_values(numpy uint8)",
        PYVISA_AIOTMC: "write_binary_values(numpy uint8)",
        PYVISA_BEST: "write_raw(header + payload)",
        FLOOR: "blocking socket, sendall of header, payload view, terminator",
    },
    "concurrent": {
        "aiotmc": "100 tasks in a task group, shared Instrument; then one task alone"
        " (the uncontended round trip, same connection)",
        PYVISA: "sequential query() (same number of queries)",
        SYNC: "thread pool sharing one aiotmc.sync instrument, no lock of its own; then"
        " one thread alone (same connection)",
        PYVISA_BEST: "thread pool + threading.Lock",
        FLOOR: "sequential blocking socket (same number of queries)",
    },
}


def _methods(kind: str) -> dict[str, str]:
    methods = dict(_METHODS.get(kind, {}))
    if "aiotmc" in methods:
        text = methods.pop("aiotmc")
        methods.update(dict.fromkeys(AIOTMC, text))
    return methods


def _mb(size: int) -> str:
    return f"{size // MB} MB"


def _rtt_measurement(quick: bool, rounds: int, *, server: str) -> Measurement:
    """``*IDN?`` round trips against ``server``.

    Against the independent responder (key ``rtt``) every row is there and the target
    applies; against aiotmc's own simulator (key ``rtt_sim``) the same clients are shown
    for information: that simulator spends ~20 us of the shared CPU per query, and how
    the two processes take turns on it then decides the round trip more than the client
    does (docs/performance.md).
    """
    ours = server == "responder"
    key = "rtt" if ours else "rtt_sim"
    against = "" if ours else " against aiotmc's simulator"
    target = RTT_TARGET if ours else None
    rows = [
        Row(key, f"`*IDN?` round trip{against} (median)", "µs", "rtt_us", target=target),
        Row(
            f"{key}_blocking",
            f"`*IDN?` round trip{against}, blocking APIs vs PyVISA + pyvisa-py",
            "µs",
            "rtt_us",
            target=BLOCKING_RTT_TARGET if ours else None,
            only=(SYNC, PYVISA, PYVISA_AIOTMC),
        ),
        Row("cpu" if ours else "cpu_sim", f"client CPU per `*IDN?` query{against}", "µs", "cpu_us"),
    ]
    rows += [
        Row(
            f"{key}_nb_{loop}",
            f"`*IDN?`{against} vs the plain non-blocking socket on {loop}",
            "µs",
            "rtt_us",
            target=target,
            floor_metric=f"rtt_nb_{loop}_us",
            only=(f"aiotmc-{loop}", FLOOR),
        )
        for loop in ("asyncio", "trio", "uvloop")
    ]
    if ours:
        rows += [
            Row(
                f"rtt_exchange_{loop}",
                f"transport alone (`exchange`) vs the plain non-blocking socket on {loop}",
                "µs",
                "rtt_exchange_us",
                floor_metric=f"rtt_nb_{loop}_us",
                only=(f"aiotmc-{loop}", FLOOR),
            )
            for loop in ("asyncio", "trio", "uvloop")
        ]
        rows.append(
            Row(
                "cpu_exchange",
                "client CPU per `*IDN?` through the transport alone",
                "µs",
                "cpu_exchange_us",
                floor_metric="cpu_us",
                only=(*AIOTMC, FLOOR),
            )
        )
    return Measurement(
        key=key,
        kind="rtt",
        params={"queries": 300 if quick else 5000, "warmup": 50 if quick else 500},
        clients=CLIENTS,
        rounds=rounds,
        rows=tuple(rows),
        notes=_methods("rtt"),
        server=server,
    )


def _block_measurement(
    quick: bool, rounds: int, size: int, reuse: bool, *, server: str
) -> Measurement:
    """Block reads of ``size`` bytes into a new or reused buffer, against ``server``.

    As for round trips: against the independent responder (keys ``block_<which>_<n>MB``)
    the target applies; against aiotmc's own simulator (``..._sim``) the same clients are
    shown for information. On the shared CPU that simulator's cost per block depends on
    the client it serves (more for an event-loop client than for a blocking one), so the
    figure there mixes the server into the client's ratio (docs/performance.md, "The
    block target").
    """
    ours = server == "responder"
    which = "reused" if reuse else "new"
    key = f"block_{which}_{size // MB}MB" + ("" if ours else "_sim")
    against = "" if ours else " against aiotmc's simulator"
    return Measurement(
        key=key,
        kind="block",
        # A median of 10 reads of 1 MB (3 ms) swung by +-20 % between rounds;
        # the same ~300 MB per figure at every size steadies the small ones.
        params={"size": size, "reuse": reuse, "reps": 3 if quick else max(10, 300 * MB // size)},
        clients=CLIENTS,
        rounds=rounds,
        rows=(
            Row(
                key,
                f"read {_mb(size)} block into a {which} buffer{against}",
                "MB/s",
                "mb_s",
                higher_is_better=True,
                target=THROUGHPUT_TARGET if ours else None,
            ),
            *_plain_block_rows(key, size, which, against),
            *(_backend_block_rows(key, size, reuse) if ours else ()),
        ),
        timeout=300.0,
        notes=_methods("block"),
        server=server,
    )


def _plain_block_rows(key: str, size: int, which: str, against: str) -> tuple[Row, ...]:
    """Up to :data:`PLAIN_BLOCK_MAX`: each loop's aiotmc against the plain non-blocking
    client on the same loop (``benchmarks/block_plain.py``), for information."""
    if size > PLAIN_BLOCK_MAX:
        return ()
    return tuple(
        Row(
            f"{key}_nb_{loop}",
            f"read {_mb(size)} block into a {which} buffer{against} vs the plain"
            f" non-blocking socket on {loop}",
            "MB/s",
            "mb_s",
            higher_is_better=True,
            floor_metric=f"mb_s_nb_{loop}",
            only=(f"aiotmc-{loop}", FLOOR),
        )
        for loop in ("asyncio", "trio", "uvloop")
    )


def _backend_block_rows(key: str, size: int, reuse: bool) -> tuple[Row, ...]:
    """PyVISA's ``query_binary_values`` on @aiotmc against the same call on pyvisa-py (new
    buffers only: PyVISA has no read-into API); the issue's target is for 100 MB."""
    if reuse:
        return ()
    return (
        Row(
            f"{key}_pyvisa",
            f"read {_mb(size)} block with `query_binary_values`: PyVISA on @aiotmc vs pyvisa-py",
            "MB/s",
            "mb_s",
            higher_is_better=True,
            target=BACKEND_BLOCK_TARGET if size >= 100 * MB else None,
            only=(PYVISA, PYVISA_AIOTMC),
        ),
    )


def _concurrent_measurement(quick: bool, rounds: int, *, server: str) -> Measurement:
    """Many tasks sharing one instrument, against ``server`` (as for round trips: the
    independent responder, key ``concurrent``, and aiotmc's simulator, ``concurrent_sim``).

    The aiotmc trial also times one task alone on the same connection, so the cost of
    contention is a ratio to aiotmc's own uncontended round trip.
    """
    ours = server == "responder"
    key = "concurrent" if ours else "concurrent_sim"
    against = "" if ours else " against aiotmc's simulator"
    tasks = 10 if quick else 100
    return Measurement(
        key=key,
        kind="concurrent",
        params={"tasks": tasks, "per_task": 5 if quick else 20},
        # PyVISA on @aiotmc would only repeat PyVISA's sequential code.
        clients=(*AIOTMC, SYNC, PYVISA, PYVISA_BEST, FLOOR),
        rounds=rounds,
        rows=(
            Row(
                key,
                f"{tasks} concurrent tasks on one instrument{against}, per `*IDN?`",
                "µs",
                "us_per_query",
                target=CONTENDED_TARGET,
            ),
            Row(
                f"{key}_x",
                f"{tasks} concurrent tasks{against}, per `*IDN?`, / one task alone",
                "x uncontended",
                "contended_x",
                target=CONTENDED_OWN_TARGET,
                only=(*AIOTMC, SYNC),
            ),
        ),
        notes=_methods("concurrent"),
        server=server,
    )


def measurements(mode: Mode) -> list[Measurement]:
    """The schedule for ``mode``: same figure kinds in both, smaller sizes when quick."""
    quick = mode == "quick"
    rounds = 1 if quick else 5
    big_rounds = 1 if quick else 3
    # PyVISA's own fan-out is sequential: on @aiotmc it would only show the 10 ms delay again.
    fanout_clients = tuple(c for c in CLIENTS if c != PYVISA_AIOTMC)
    out: list[Measurement] = []

    out.append(_rtt_measurement(quick, rounds, server="responder"))
    out.append(_rtt_measurement(quick, rounds, server="scope"))

    for n in (1, 10) if quick else (1, 10, 100, 1000):
        out.append(
            Measurement(
                key=f"fanout_{n}",
                kind="fanout",
                params={
                    "instruments": n,
                    "reps": 2 if quick else (3 if n >= 1000 else 5),
                    # PyVISA sequential takes N x 10 ms per round; above this count it is
                    # measured on this many instruments and scaled by N / count.
                    "sequential_cap": 10 if quick else 1000,
                },
                clients=fanout_clients,
                rounds=big_rounds if n >= 1000 else rounds,
                rows=(
                    Row(
                        f"fanout_{n}",
                        f"`{MEAS}` on {n} instrument{'s' if n > 1 else ''}, 10 ms delay",
                        "ms",
                        "ms",
                        target=FANOUT_TARGET,
                    ),
                ),
                timeout=300.0,
                notes=_methods("fanout"),
            )
        )

    sizes = (MB,) if quick else (MB, 10 * MB, 100 * MB)
    for server in ("responder", "scope"):
        for reuse in (False, True):
            for size in sizes:
                out.append(_block_measurement(quick, rounds, size, reuse, server=server))

    for size in (MB,) if quick else (10 * MB, 100 * MB):
        out.append(
            Measurement(
                key=f"upload_{size // MB}MB",
                kind="upload",
                params={"size": size, "reps": 3 if quick else 10},
                clients=CLIENTS,
                rounds=big_rounds if size >= 100 * MB else rounds,
                rows=(
                    Row(
                        f"upload_{size // MB}MB",
                        f"upload {_mb(size)} block (+ `{UPLOAD_CHECK}`)",
                        "MB/s",
                        "mb_s",
                        higher_is_better=True,
                        target=THROUGHPUT_TARGET,
                    ),
                ),
                timeout=300.0,
                notes=_methods("upload"),
            )
        )

    out.append(_concurrent_measurement(quick, rounds, server="responder"))
    out.append(_concurrent_measurement(quick, rounds, server="scope"))

    out.append(
        Measurement(
            key="srq",
            kind="srq",
            params={"events": 100 if quick else 2000},
            clients=AIOTMC,
            rounds=big_rounds,
            rows=(Row("srq", "SRQ publish -> subscriber wakes (SIM, median)", "µs", "srq_us"),),
        )
    )

    usb_size = MB if quick else 10 * MB
    out.append(
        Measurement(
            key="usb_block",
            kind="usb_block",
            params={"size": usb_size, "reps": 3 if quick else 10},
            clients=AIOTMC,
            rounds=big_rounds,
            rows=(
                Row(
                    "usb_block",
                    f"USB in-process: read {_mb(usb_size)} block (reused buffer)",
                    "MB/s",
                    "mb_s",
                    higher_is_better=True,
                    target=USB_TARGET,
                ),
                Row("usb_cpu", "USB in-process: client CPU per MB", "ms", "cpu_ms_per_mb"),
            ),
        )
    )
    out.append(
        Measurement(
            key="usb_rtt",
            kind="usb_rtt",
            params={"queries": 200 if quick else 3000, "warmup": 20 if quick else 200},
            clients=AIOTMC,
            rounds=big_rounds,
            rows=(Row("usb_rtt", "USB in-process: `*IDN?` round trip", "µs", "rtt_us"),),
        )
    )
    umockdev_size = 8 * MB
    out.append(
        Measurement(
            key="umockdev",
            kind="umockdev",
            params={
                "size": umockdev_size,
                "reps": 2 if quick else 10,
                "queries": 100 if quick else 1000,
                "warmup": 10 if quick else 100,
            },
            clients=AIOTMC,
            rounds=big_rounds,
            rows=(
                Row(
                    "umockdev",
                    f"USB via umockdev (real libusb): read {_mb(umockdev_size)} block"
                    " (reused buffer)",
                    "MB/s",
                    "mb_s",
                    higher_is_better=True,
                ),
                Row("umockdev_cpu", "USB via umockdev: client CPU per MB", "ms", "cpu_ms_per_mb"),
                Row("umockdev_rtt", "USB via umockdev: `*IDN?` round trip", "µs", "rtt_us"),
            ),
            timeout=180.0,
            bed="umockdev",
        )
    )
    return out


def resource(port: int) -> str:
    """VISA resource name of a simulator port on the loopback host."""
    return f"TCPIP0::{HOST}::{port}::SOCKET"


#: Where every reused block buffer starts: this many bytes past a page boundary. On this
#: AMD EPYC the kernel's copy into a buffer 1 to ~16 bytes ahead of the payload's place
#: in its page runs 3.5x slower, and a plain ``bytearray`` lands wherever the allocator
#: puts it (a fresh 1 MB one 16 bytes past a page: in that window, as the 9-11-byte block
#: headers put the payload), so every client gets the same, safe, placement.
REUSED_OFFSET: Final = 64


def reused_buffer(size: int) -> memoryview:
    """A writable ``size``-byte buffer at :data:`REUSED_OFFSET` past a page boundary, for
    the figures that read blocks into one reused buffer (every client the same)."""
    import ctypes

    page = 4096
    backing = bytearray(size + page + REUSED_OFFSET)
    address = ctypes.addressof((ctypes.c_char * len(backing)).from_buffer(backing))
    start = (-address) % page + REUSED_OFFSET
    return memoryview(backing)[start : start + size]


def pattern_ok(data: Any, size: int) -> bool:
    """True if ``data`` is ``size`` bytes of 00..FF repeating (spot checks, cheap)."""
    view = memoryview(data).cast("B")
    if len(view) != size:
        return False
    probes = {0, 1, 10, 255, 256, size // 2, size - 1} if size else set()
    return all(view[i] == i % 256 for i in probes if 0 <= i < size)
