"""The pytest plugin, as a user gets it: a separate pytest run in an empty directory,
the fixtures found through the ``pytest11`` entry point (no conftest, no ``-p``)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXTRA_TESTS = """
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_model_by_name_is_a_fresh_device(aiotmc_sim_instrument):
    async with aiotmc_sim_instrument("dmm") as inst:
        await inst.write("VOLT:RANG 100")
    async with aiotmc_sim_instrument("dmm") as inst:
        assert float(await inst.query("VOLT:RANG?")) != 100.0


async def test_unknown_attachment(aiotmc_sim_instrument):
    with pytest.raises(ValueError, match="via must be one of"):
        async with aiotmc_sim_instrument("dmm", via="gpib"):
            pass
"""


def docs_example() -> str:
    """The ```python title="test_with_fixtures.py"``` block of docs/simulators.md."""
    text = (ROOT / "docs" / "simulators.md").read_text(encoding="utf-8")
    found = re.findall(
        r'^```python title="test_with_fixtures.py"\n(.*?)^```$', text, re.MULTILINE | re.DOTALL
    )
    assert len(found) == 1, "docs/simulators.md lost its plugin example"
    return str(found[0])


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_entry_point_is_installed() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("aiotmc") == "aiotmc.testing.pytest_plugin", (
        "the pytest11 entry point is not installed: reinstall aiotmc (pip install -e .)"
    )


def test_fixtures_in_a_users_test_session(tmp_path: Path) -> None:
    """The example of docs/simulators.md, as a user would run it, and a few more."""
    (tmp_path / "test_with_fixtures.py").write_text(docs_example())
    (tmp_path / "test_more.py").write_text(EXTRA_TESTS)
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14 passed" in done.stdout, done.stdout


def test_fixtures_are_listed(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "--fixtures")
    for name in ("aiotmc_sim_instrument", "aiotmc_sim_server", "aiotmc_via"):
        assert name in done.stdout, done.stdout


@pytest.mark.parametrize("module", ["aiotmc.testing.pytest_plugin", "aiotmc.testing.device"])
def test_importing_loads_no_event_loop_library(module: str) -> None:
    """pytest imports the plugin at start-up in every session: no anyio, no trio then.
    The device half also runs in USB emulator processes without anyio."""
    code = textwrap.dedent(f"""
        import sys
        import {module}
        loaded = sorted(m for m in ("anyio", "trio", "sniffio") if m in sys.modules)
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
