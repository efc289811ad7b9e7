"""``python -m benchmarks --quick`` runs end to end in a real subprocess.

This keeps the benchmark harness from rotting: it must start the simulator and every
client process, produce one table and a JSON file with every figure present. It asserts
nothing about performance (figures depend on the machine and its load).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.figures import CLIENTS, OURS, PYVISA_AIOTMC, SYNC, measurements
from benchmarks.usbbed import umockdev_problem

ROOT = Path(__file__).resolve().parent.parent
USB_ROWS = {"usb_block", "usb_cpu", "usb_rtt"}
USB_MODULES = ("aiotmc.sim.fake_port", "aiotmc.sim.usbtmc_device", "aiotmc.transports.usbtmc")
UMOCKDEV_ROWS = {"umockdev", "umockdev_cpu", "umockdev_rtt"}


def run_module(module: str, *args: str, timeout: float) -> str:
    """``python -m module args...`` from the checkout; its stdout (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _allowed_na(row_key: str, client: str, cell: dict[str, Any], meta: dict[str, Any]) -> bool:
    """Cells that may legitimately read n/a on this machine."""
    if row_key in UMOCKDEV_ROWS:
        # Only when umockdev is missing here (the harness found it so, too).
        missing = umockdev_problem() is not None or not meta["umockdev"]["available"]
        return cell["na"] == "umockdev not installed" and missing
    if row_key in USB_ROWS and any(importlib.util.find_spec(m) is None for m in USB_MODULES):
        return True
    return client == "aiotmc-uvloop" and importlib.util.find_spec("uvloop") is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_produces_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    table = run_module("benchmarks", "--quick", "--output", str(output), timeout=280)
    assert "| figure | unit | aiotmc asyncio |" in table
    assert "aiotmc/floor" in table and "aiotmc/PyVISA" in table

    data = json.loads(output.read_text())
    assert data["meta"]["mode"] == "quick"
    assert data["meta"]["machine"]["nproc"] >= 1
    rows = {row["key"]: row for row in data["rows"]}
    expected = [(m, row) for m in measurements("quick") for row in m.rows]
    assert [row.key for _, row in expected] == list(rows)

    for m, row in expected:
        assert f"| {row.label} | {row.unit} |" in table, row.label
        got = rows[row.key]
        members = [c for c in m.clients if row.only is None or c in row.only]
        assert set(got["clients"]) == set(members)
        for client in members:
            cell = got["clients"][client]
            assert "error" not in cell, (row.key, client, cell["error"])
            if cell["median"] is None:
                assert cell.get("na"), (row.key, client)
                allowed = _allowed_na(row.key, client, cell, data["meta"])
                assert allowed, (row.key, client, cell["na"])
            else:
                assert math.isfinite(cell["median"]) and cell["median"] > 0
                assert cell["min"] <= cell["median"] <= cell["max"]
        if row.target is not None:
            assert set(got["verdicts"]) <= set(row.target.clients) & set(members)
        if row.target is not None and "floor" in members:
            ratios = got["ratios"]["aiotmc/floor"]
            assert set(ratios) == set(OURS) & set(members)
    assert set(CLIENTS) <= {c for row in data["rows"] for c in row["clients"]}
    # Issue 18: the blocking round trips beside PyVISA's, with the target judged.
    blocking = rows["rtt_blocking"]
    assert set(blocking["ratios"]["aiotmc/pyvisa"]) == {SYNC, PYVISA_AIOTMC}
    assert set(blocking["verdicts"]) == {SYNC, PYVISA_AIOTMC}
    assert "| `*IDN?` round trip, blocking APIs vs PyVISA + pyvisa-py | µs |" in table
    assert "<= 1x PyVISA" in table

    # The umockdev device process is gone and its testbed directory removed.
    umockdev = data["meta"]["umockdev"]
    if umockdev["available"]:
        assert not Path(umockdev["testbed"]).exists(), umockdev["testbed"]
        with pytest.raises(ProcessLookupError):
            os.kill(umockdev["device_pid"], 0)


def test_quick_schedule_covers_every_figure_kind() -> None:
    kinds = {m.kind for m in measurements("quick")}
    assert kinds == {m.kind for m in measurements("full")}
    full_keys = {row.key for m in measurements("full") for row in m.rows}
    assert {"rtt", "cpu", "fanout_1000", "block_new_100MB", "block_reused_100MB"} <= full_keys
    assert {"upload_100MB", "concurrent", "srq", "usb_block"} <= full_keys
    assert full_keys >= UMOCKDEV_ROWS
    assert {"rtt_blocking", "rtt_sim_blocking", "block_new_100MB_pyvisa"} <= full_keys
    # Block targets are held against the independent responder, as round trips are; the
    # same figures against the simulator are shown without one.
    blocks = {row.key: row for m in measurements("full") for row in m.rows}
    assert blocks["block_reused_1MB"].target is not None
    assert blocks["block_reused_1MB_sim"].target is None
    servers = {m.key: m.server for m in measurements("full")}
    assert servers["block_new_10MB"] == "responder"
    assert servers["block_new_10MB_sim"] == "scope"
    # The blocking clients are in the round trips on both servers, blocks and uploads.
    for m in measurements("full"):
        if m.kind in ("rtt", "block", "upload"):
            assert {SYNC, PYVISA_AIOTMC} <= set(m.clients), m.key
        if m.kind in ("fanout", "concurrent"):
            assert SYNC in m.clients, m.key


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fresh_processes_per_figure(tmp_path: Path) -> None:
    """The full run's policy (new client processes for every figure), on two figures."""
    output = tmp_path / "fresh.json"
    run_module(
        "benchmarks",
        "--quick",
        "--fresh",
        "figure",
        "--only",
        "fanout_10,srq",
        "--output",
        str(output),
        timeout=100,
    )
    data = json.loads(output.read_text())
    assert data["meta"]["fresh_processes"] == "per figure"
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == {"fanout_10", "srq"}
    for row in rows.values():
        for client, cell in row["clients"].items():
            assert cell["median"] is not None, (row["key"], client, cell)


@pytest.mark.parametrize("backend", ["asyncio", "trio", "uvloop"])
def test_hotpath_reports_every_layer(backend: str) -> None:
    """``python -m benchmarks.hotpath`` runs each layer on each loop (numbers not judged)."""
    if backend == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop not installed")
    out = run_module("benchmarks.hotpath", "--backend", backend, "-n", "300", timeout=120)
    # "  plain                            11.59   (2.8x floor)"
    rows = re.findall(r"^  (\w+)\D*?([\d.]+)(?:\s+\(|$)", out, re.MULTILINE)
    values = {label: float(value) for label, value in rows}
    assert set(values) == {"floor", "plain", "transport", "instrument", "answered", "contended"}
    assert all(value > 0 for value in values.values())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hotblock_reports_floor_and_instrument(backend: str) -> None:
    """``python -m benchmarks.hotblock`` reads blocks both ways (numbers not judged)."""
    out = run_module(
        "benchmarks.hotblock", "--backend", backend, "--size", "100000", "-n", "20", timeout=120
    )
    # "  instrument reused buffer      30.3   (1.68x floor)"
    rows = re.findall(r"^  (floor|instrument) +(reused|new) +buffer +([\d.]+)", out, re.MULTILINE)
    assert {(who, which) for who, which, _ in rows} == {
        (who, which) for who in ("floor", "instrument") for which in ("reused", "new")
    }
    assert all(float(value) > 0 for _, _, value in rows)


def test_block_server_prints_both_sides_for_every_client() -> None:
    """``python -m benchmarks.block_server``: client and server CPU per block, every client
    against both servers (numbers not judged beyond being measured)."""
    out = run_module("benchmarks.block_server", "--size", "100000", "-n", "20", timeout=120)
    # "responder  aiotmc-trio           98.3       86.7     184.2    5430"
    rows = re.findall(r"^(simulator|responder) +(\S+) +([\d.]+) +(-?[\d.]+) +([\d.]+)", out, re.M)
    from benchmarks.block_server import CLIENTS

    assert {(server, client) for server, client, *_ in rows} == {
        (server, client) for server in ("simulator", "responder") for client in CLIENTS
    }
    assert all(float(client) > 0 and float(wall) > 0 for *_, client, _, wall in rows)


@contextmanager
def responder_connection() -> Iterator[socket.socket]:
    """A client socket to the responder's :func:`~benchmarks.responder.answer_lines` in a
    thread; on leaving, half-closes it and checks that the responder closed its end at
    EOF and its thread ended."""
    from benchmarks.responder import answer_lines

    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=5)
        theirs, _ = listener.accept()
    server = threading.Thread(target=answer_lines, args=(theirs,), daemon=True)
    server.start()
    with ours:
        yield ours
        ours.shutdown(socket.SHUT_WR)
        assert ours.recv(1000) == b""  # the responder closed its end at EOF
    server.join(5)
    assert not server.is_alive()


def test_responder_answers_every_line_once() -> None:
    """The independent responder of the round-trip figures: one identity per line, lines
    split across reads or sent together included, until the client hangs up."""
    from benchmarks.responder import IDENTITY

    with responder_connection() as ours:
        ours.sendall(b"*IDN?\n*IDN")
        received = b""
        while len(received) < len(IDENTITY):
            received += ours.recv(1000)
        ours.sendall(b"?\nA?\nB?\n")
        while len(received) < 4 * len(IDENTITY):
            received += ours.recv(1000)
        assert received == IDENTITY * 4


def test_responder_answers_block_queries_with_the_test_block() -> None:
    """The block figures' server: ``:WAVeform:TEST? <n>`` gets the harness's test block
    (checked as every client checks it), other lines the identity, absurd sizes an error."""
    from benchmarks.figures import BLOCK_QUERY, pattern_ok
    from benchmarks.responder import IDENTITY, TOO_LARGE

    size = 300_000
    query = (BLOCK_QUERY.format(size=size) + "\n").encode()
    expected = len(f"#6{size}") + size + 1 + len(IDENTITY) + len(TOO_LARGE)
    with responder_connection() as ours:
        ours.sendall(query + b"*IDN?\n" + BLOCK_QUERY.format(size=10**12).encode() + b"\n")
        received = b""
        while len(received) < expected:
            received += ours.recv(1 << 20)
        assert received[:8] == f"#6{size}".encode()
        assert pattern_ok(received[8 : 8 + size], size)
        assert received[8 + size :] == b"\n" + IDENTITY + TOO_LARGE


@pytest.mark.timeout(120)
def test_vxi11_quick_reports_every_figure(tmp_path: Path) -> None:
    """``python -m benchmarks.vxi11 --quick``: every client and figure, with the issue's
    targets (numbers not judged: the machine is shared)."""
    output = tmp_path / "vxi11.json"
    table = run_module("benchmarks.vxi11", "--quick", "--json", str(output), timeout=100)
    assert "target <= 0.6x" in table and "target <= 1.5x" in table
    assert "target >= 0.8x" in table and "target <= 1000 µs" in table
    data = json.loads(output.read_text())
    backends = {"asyncio", "trio"}
    ours = ("VXI-11", "VXI-11 pipeline")
    assert (
        set(data["rtt_us"])
        == set(data["cpu_us"])
        == set(data["server_cpu_us"])
        == {
            "pyvisa-py VXI-11",
            *(f"aiotmc {how} {b}" for how in (*ours, "raw socket") for b in backends),
        }
    )
    assert set(data["rtt_ratios"]) == {f"{how} {b}" for how in ours for b in backends}
    assert set(data["srq_us"]) == backends
    assert set(data["block_mb_s"]) == {
        "raw-socket floor",
        "aiotmc VXI-11 asyncio",
        "aiotmc VXI-11 trio",
    }
    values = [
        *data["rtt_us"].values(),
        *data["cpu_us"].values(),
        *data["block_mb_s"].values(),
        *data["srq_us"].values(),
        *(r for ratios in data["rtt_ratios"].values() for r in ratios.values()),
    ]
    assert all(math.isfinite(v) and v > 0 for v in values)
    # clock ticks of 10 ms: a quick run may see none
    assert all(math.isfinite(v) and v >= 0 for v in data["server_cpu_us"].values())


@pytest.mark.timeout(120)
def test_distributed_quick_reports_every_figure(tmp_path: Path) -> None:
    """``python -m benchmarks.distributed --quick``: a real nats-server and agent process;
    every figure is reported with the issue's target (numbers not judged: shared machine)."""
    output = tmp_path / "distributed.json"
    table = run_module("benchmarks.distributed", "--quick", "--json", str(output), timeout=100)
    assert "target <= 1000 µs" in table
    data = json.loads(output.read_text())
    assert set(data["rtt_us"]) == {
        f"{w} {b}" for w in ("remote", "local SIM") for b in ("asyncio", "trio")
    }
    assert all(v > 0 for v in data["rtt_us"].values())
    assert set(data["block_mb_s"]) == set(data["srq_us"]) == {"asyncio", "trio"}
    assert set(data["skew_us"]) == {"asyncio", "trio"}
    assert "trigger skew, 5 agent processes" in table


@pytest.mark.timeout(120)
def test_distributed_log_tiny_reports_every_figure(tmp_path: Path) -> None:
    """``python -m benchmarks.distributed_log`` at a tiny size: a real nats-server with
    JetStream, agent processes and a collector process; every figure is present and the
    issue's target quoted (numbers not judged: shared machine)."""
    if not shutil.which("nats-server"):
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed")
        pytest.skip("nats-server is not installed")
    output = tmp_path / "log.json"
    args = ("--agents", "2", "--instruments", "3", "--rate", "5", "--duration", "1")
    table = run_module("benchmarks.distributed_log", *args, "--json", str(output), timeout=100)
    assert "10,000 readings/s with <= 1 core" in table
    data = json.loads(output.read_text())
    assert data["offered_per_s"] == 30
    assert data["stored_total"] > 0 and data["published_per_s"] > 0
    keys = ("stored_per_s", "collector_cores", "agent_cores", "nats_cores", "drain_per_s")
    for key in (*keys, "agent_cpu_us_per_reading"):
        assert math.isfinite(data[key]) and data[key] >= 0, key


@pytest.mark.timeout(120)
def test_serial_quick_reports_every_figure(tmp_path: Path) -> None:
    """``python -m benchmarks.serial --quick``: line rate, serial and Prologix round trips
    against pyserial and pyvisa-py, with the issue's targets (numbers not judged)."""
    pytest.importorskip("serial")
    pytest.importorskip("pyvisa_py")
    output = tmp_path / "serial.json"
    table = run_module(
        "benchmarks.serial", "--quick", "--queries", "10", "--json", str(output), timeout=100
    )
    assert "target >= 0.95x" in table and "target <= 1.2x" in table
    assert "target <= 0.7x" in table
    data = json.loads(output.read_text())
    keys = {"line_rate", "pyserial", "pyvisa_prologix"}
    keys |= {f"{kind}_{b}" for kind in ("serial", "prologix") for b in ("asyncio", "trio")}
    assert set(data["figures"]) == keys
    assert all(math.isfinite(v) and v > 0 for v in data["figures"].values())


@pytest.mark.timeout(120)
def test_blocking_clients_side_by_side() -> None:
    """``python -m benchmarks.pyvisa_backend`` at a tiny size: pyvisa-py, PyVISA on
    ``@aiotmc`` and aiotmc.sync each print a round trip and a block rate (not judged)."""
    table = run_module(
        "benchmarks.pyvisa_backend",
        *("--queries", "20", "--size", "1000", "--reps", "1", "--rounds", "1"),
        timeout=100,
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert set(rows) == {"pyvisa-py", "pyvisa @aiotmc", "aiotmc.sync", "aiotmc.sync via loop"}
    for line in rows.values():
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[3]) > 0, line


@pytest.mark.timeout(120)
def test_hislip_quick_reports_every_figure(tmp_path: Path) -> None:
    """``python -m benchmarks.hislip --quick``: every client and figure, with the issue's
    targets (numbers not judged: the machine is shared)."""
    output = tmp_path / "hislip.json"
    table = run_module("benchmarks.hislip", "--quick", "--json", str(output), timeout=100)
    for target in ("target <= 1.3x", "target <= 0.5x", "target >= 0.8x", "target >= 0.5x"):
        assert target in table
    assert "target <= 0.2x" in table
    data = json.loads(output.read_text())
    backends = {"asyncio", "trio"}
    assert set(data["rtt_us"]) == {
        "pyvisa-py HiSLIP",
        *(f"aiotmc {how} {b}" for how in ("HiSLIP", "raw socket") for b in backends),
    }
    assert set(data["rtt_ratios"]) == set(data["pipeline_ratio"]) == backends
    assert set(data["block_mb_s"]) == {
        "raw-socket floor",
        *(f"aiotmc {how} {b}" for how in ("HiSLIP", "HiSLIP TLS") for b in backends),
    }
    assert set(data["batch_ms"]) == {
        f"{m} {b}" for m in ("synchronized", "overlapped") for b in backends
    }
    assert set(data["block_cpu_ms_per_mb"]) == set(data["block_mb_s"]) - {"raw-socket floor"}
    assert all(
        set(sides) == {"client", "simulator"} and sides["client"] > 0
        for sides in data["block_cpu_ms_per_mb"].values()
    )
    values = [
        *data["rtt_us"].values(),
        *data["cpu_us"].values(),
        *data["block_mb_s"].values(),
        *data["batch_ms"].values(),
        *data["pipeline_ratio"].values(),
        *(r for ratios in data["rtt_ratios"].values() for r in ratios.values()),
    ]
    assert all(math.isfinite(v) and v > 0 for v in values)


@pytest.mark.timeout(120)
def test_gateway_against_the_users_script_reports_every_figure(tmp_path: Path) -> None:
    """``python -m benchmarks.gateway`` at a tiny size with MQTT and the comparison: the
    gateway into SQLite and mosquitto, then PyVISA query + requests.post per reading to a
    local HTTP receiver, and the ratio (numbers present, not judged)."""
    pytest.importorskip("pyvisa_py")
    pytest.importorskip("requests")
    output = tmp_path / "gateway.json"
    table = run_module(
        "benchmarks.gateway",
        *("--instruments", "2", "--rate", "20", "--duration", "0.5"),
        *("--json", str(output)),
        timeout=100,
    )
    assert "published (MQTT)" in table and "gateway / script" in table
    data = json.loads(output.read_text())
    assert data["mqtt"] is True and data["exit_status"] == 0
    script = data["script"]
    assert script["threads"] == 2 and script["http"] == "post"
    figures = [data["stored_per_s"], data["mqtt_per_s"], data["gateway_cores"]]
    figures += [script["posted_per_s"], script["script_cores"], *data["ratio"].values()]
    assert all(math.isfinite(v) and v >= 0 for v in figures)
    assert data["stored_per_s"] > 0 and script["posted_per_s"] > 0
    assert len(data["load_average"]) == 3


def test_report_judges_the_blocking_targets_and_shows_only_the_clients_run() -> None:
    """The issue-18 rows: aiotmc.sync and PyVISA on @aiotmc judged against PyVISA +
    pyvisa-py; with ``--clients`` the table has only those columns and no rows that
    compared a left-out aiotmc client with a reference (no processes: answers fed in)."""
    from benchmarks.report import Report

    rtt = next(m for m in measurements("quick") if m.key == "rtt")
    clients = [SYNC, "pyvisa", PYVISA_AIOTMC, "floor"]
    report = Report([rtt], clients)
    answers = {SYNC: 20.0, "pyvisa": 30.0, PYVISA_AIOTMC: 33.0, "floor": 15.0}
    for client, rtt_us in answers.items():
        report.add(rtt, client, {"ok": True, "metrics": {"rtt_us": rtt_us, "cpu_us": 1.0}})
    rows = {rr.row.key: rr for rr in report.rows}
    assert set(rows) == {"rtt", "rtt_blocking", "cpu"}  # no per-loop comparison rows
    assert rows["rtt_blocking"].verdicts() == {SYNC: True, PYVISA_AIOTMC: False}
    assert rows["rtt"].verdicts() == {}  # the floor target judges the async clients only
    table = report.table()
    header = table.splitlines()[0]
    assert "| aiotmc.sync | PyVISA | PyVISA @aiotmc | floor |" in header
    assert "aiotmc asyncio" not in header and "PyVISA best" not in header
    assert "| s 0.667 @ 1.10 | <= 1x PyVISA | MISS (PyVISA @aiotmc) |" in table


def test_hislip_tls_floor_reports_each_variant() -> None:
    """``python -m benchmarks.hislip_tls_floor`` at 1 MB: both suites in memory (each
    negotiated as asked, checked inside) and the four sender / receiver pairs."""
    table = run_module("benchmarks.hislip_tls_floor", "--size", "1", "--rounds", "1", timeout=60)
    for suite in ("AES-256-GCM", "AES-128-GCM"):
        assert f"  {suite}: encrypt " in table
    for sender in ("SSLObject", "SSLSocket"):
        for receiver in ("SSLObject", "SSLSocket"):
            assert f"sender {sender}, receiver {receiver}" in table


@pytest.mark.timeout(150)
def test_instruction_counts_per_query(tmp_path: Path) -> None:
    """``python -m benchmarks.instructions`` at a tiny size: callgrind counts a client's
    own instructions per query. aiotmc must be counted above the plain socket (which
    does no parsing, locking or scheduling), and each figure is per query: three times
    the queries give about the same count."""
    out = tmp_path / "instr.json"
    table = run_module(
        "benchmarks.instructions",
        *("--clients", "aiotmc-asyncio,floor", "--workloads", "rtt,concurrent"),
        *("--queries", "100", "--tasks", "10", "--json", str(out)),
        timeout=140,
    )
    assert "| 10 tasks, one instrument |" in table, table
    figures = json.loads(out.read_text())["per_query"]
    assert set(figures) == {"rtt", "concurrent"}
    for row in figures.values():
        assert 1_000 < row["floor"] < row["aiotmc-asyncio"] < 10_000_000, row
    out3 = tmp_path / "instr3.json"
    run_module(
        "benchmarks.instructions",
        *("--clients", "floor", "--workloads", "rtt", "--queries", "300", "--tasks", "10"),
        *("--json", str(out3)),
        timeout=60,
    )
    floor3 = json.loads(out3.read_text())["per_query"]["rtt"]["floor"]
    assert floor3 == pytest.approx(figures["rtt"]["floor"], rel=0.25)
