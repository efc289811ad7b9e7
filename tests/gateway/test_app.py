"""The gateway as a program: ``aiotmc gateway`` in a subprocess, killed with SIGKILL and
restarted, ``--demo`` and ``--check``. The gateway runs on asyncio only; these tests drive
it from outside and have no event loop of their own."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from aiotmc.cli import main

T = TypeVar("T")
DEADLINE = 30.0  # seconds for any one wait below

CONFIG = """\
[gateway]
site = "lab"
host = "bench"
data_dir = "data"

[[instruments]]
name = "dmm"
resource = "SIM::dmm::killtest"
  [[instruments.channels]]
  name = "volts"
  query = "MEAS:VOLT?"
  period = 0.004

[[instruments]]
name = "psu"
resource = "SIM::psu::killtest"
  [[instruments.channels]]
  name = "volts"
  query = "VOLT?"
  period = 0.004
  [[instruments.channels]]
  name = "amps"
  query = "CURR?"
  period = 0.004
"""


@contextmanager
def gateway(*args: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``aiotmc gateway ARGS`` as a subprocess; killed at the end if still running."""
    log = (cwd / "gateway.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotmc", "gateway", *args],
        cwd=cwd,
        stdout=log,
        stderr=log,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=DEADLINE)
        log.close()


def poll(what: str, check: Callable[[], T | None], process: subprocess.Popen[bytes]) -> T:
    """Call ``check`` until it returns something, the process dies, or the deadline passes."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        if process.poll() is not None:
            pytest.fail(f"the gateway exited with {process.returncode} while waiting for {what}")
        time.sleep(0.02)
    pytest.fail(f"no {what} within {DEADLINE} s")


def query(db: Path, sql: str) -> tuple[int, ...] | None:
    """One row of ``sql`` on ``db``, or None while the file or table does not exist yet."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            row = connection.execute(sql).fetchone()
    except sqlite3.OperationalError:  # no table yet, or busy
        return None
    return tuple(row) if row is not None and None not in row else None


def test_kill_9_then_restart_loses_no_reading_and_stores_none_twice(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(CONFIG)
    readings = tmp_path / "data" / "readings.sqlite"
    spool = tmp_path / "data" / "spool.sqlite"
    count = "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings"

    with gateway("gateway.toml", cwd=tmp_path) as first:
        enough = poll(
            "300 stored readings",
            lambda: ((row := query(readings, count)) and row[0] >= 300 and row) or None,
            first,
        )
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=DEADLINE) == -signal.SIGKILL
    first_seq = enough[2]
    # everything acquired is in the spool file: its counter says how far it got
    (next_seq,) = query(spool, "SELECT value FROM meta WHERE key = 'next_seq'") or (0,)
    acquired = next_seq - 1
    assert acquired >= enough[3]

    with gateway("gateway.toml", cwd=tmp_path) as second:
        # the restart replays the spool: every reading acquired before the kill, once each
        span = f"SELECT count(*), count(DISTINCT seq) FROM readings WHERE seq <= {acquired}"
        want = acquired - first_seq + 1
        poll("the replay", lambda: query(readings, span) == (want, want) or None, second)
        poll("new readings", lambda: query(readings, f"{count} WHERE seq > {acquired}"), second)
        second.send_signal(signal.SIGTERM)  # a clean stop drains the spool into the sink
        assert second.wait(timeout=DEADLINE) == 0
    (next_seq,) = query(spool, "SELECT value FROM meta WHERE key = 'next_seq'") or (0,)
    total, distinct, low, high = query(readings, count) or (0, 0, 0, 0)
    assert (low, high) == (first_seq, next_seq - 1)
    assert total == distinct == high - low + 1  # nothing missing, nothing twice
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log, log


def test_demo_runs_on_simulated_instruments(tmp_path: Path) -> None:
    readings = tmp_path / "readings.sqlite"
    with gateway("--demo", "--data-dir", str(tmp_path), cwd=tmp_path) as demo:
        by_channel = (
            "SELECT count(DISTINCT instrument || '.' || channel) FROM readings"
            " WHERE quality = 'good'"
        )
        poll(
            "readings of 3 instruments",
            lambda: (query(readings, by_channel) or (0,))[0] >= 3 or None,
            demo,
        )
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=DEADLINE) == 0
    log = (tmp_path / "gateway.log").read_text()
    assert "aiotmc: running gateway" in log and "gateway stopped" in log, log
    volts = query(
        readings, "SELECT avg(value) FROM readings WHERE channel = 'voltage' AND instrument = 'psu'"
    )
    assert volts == (5.0,)


def test_check_validates_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(CONFIG)
    assert main(["gateway", "--check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "ok: gateway bench (lab/bench): 2 instruments, 3 channels; sinks: sqlite" in out
    assert not (tmp_path / "data").exists()  # nothing started, nothing created
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace('"CURR?"\n  period = 0.004', '"CURR?"\n  period = -1'))
    assert main(["gateway", "--check", str(bad)]) == 1
    err = capsys.readouterr().err
    line = CONFIG.count("\n", 0, CONFIG.index('query = "CURR?"')) + 2
    assert f"aiotmc: error: {bad}:{line}: instruments[1].channels[1].period: " in err, err
    assert main(["gateway"]) == 2
    assert "CONFIG.toml or --demo" in capsys.readouterr().err
    assert main(["gateway", "--backend", "trio", str(good)]) == 2
    assert "asyncio" in capsys.readouterr().err


@pytest.fixture
def anyio_backend() -> str:
    """The gateway application runs on asyncio only (its MQTT client is asyncio-only)."""
    return "asyncio"


async def test_one_data_dir_serves_one_gateway(tmp_path: Path) -> None:
    from aiotmc import GatewayError
    from aiotmc.gateway.app import Gateway
    from aiotmc.gateway.config import parse_config

    config = parse_config(CONFIG, path=tmp_path / "gateway.toml")
    async with Gateway(config) as first:
        with pytest.raises(GatewayError, match="another gateway is running with data_dir"):
            async with Gateway(config):
                pass  # pragma: no cover
        assert first.spool.size >= 0
    async with Gateway(config):  # released on exit
        pass


def test_the_spool_commits_at_the_configured_interval(tmp_path: Path) -> None:
    from aiotmc.gateway.app import Gateway
    from aiotmc.gateway.config import DEFAULT_SPOOL_COMMIT_INTERVAL, parse_config

    config = parse_config(CONFIG, path=tmp_path / "gateway.toml")
    assert Gateway(config).spool.commit_interval == DEFAULT_SPOOL_COMMIT_INTERVAL > 0
    tuned = CONFIG.replace("[gateway]\n", "[gateway]\nspool_commit_interval = 0\n", 1)
    assert "spool_commit_interval" in tuned
    assert Gateway(parse_config(tuned, path=tmp_path / "gateway.toml")).spool.commit_interval == 0


async def test_the_collector_threshold_is_raised_while_gateways_run(tmp_path: Path) -> None:
    import gc

    from aiotmc.gateway.app import GC_THRESHOLD, Gateway
    from aiotmc.gateway.config import parse_config

    before, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(700, *before[1:])
    try:
        first = parse_config(CONFIG, path=tmp_path / "a" / "gateway.toml")
        second = parse_config(CONFIG, path=tmp_path / "b" / "gateway.toml")
        async with Gateway(first):
            assert gc.get_threshold() == (GC_THRESHOLD, *before[1:])
            async with Gateway(second):
                assert gc.get_threshold()[0] == GC_THRESHOLD
            assert gc.get_threshold()[0] == GC_THRESHOLD  # the first one still runs
        assert gc.get_threshold() == (700, *before[1:])  # the last one out restores it
        gc.set_threshold(0)  # an application's own choice (collector off) is kept
        async with Gateway(first):
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
        if enabled:
            gc.enable()


async def test_an_unusable_data_dir_is_a_gateway_error(tmp_path: Path) -> None:
    from aiotmc import GatewayError
    from aiotmc.gateway.app import Gateway
    from aiotmc.gateway.config import parse_config

    (tmp_path / "file").write_text("not a directory")
    text = CONFIG.replace('data_dir = "data"', 'data_dir = "file/data"')
    config = parse_config(text, path=tmp_path / "gateway.toml")
    with pytest.raises(GatewayError, match="cannot use data_dir"):
        async with Gateway(config):
            pass  # pragma: no cover
