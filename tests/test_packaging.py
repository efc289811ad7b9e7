"""The wheel ``pip install aiotmc`` gets: the library and nothing else.

Builds the wheel with ``python -m build --wheel --no-isolation`` (the backend,
setuptools, comes with the ``test`` extra) from a copy of the checkout, so the build's
``build/`` and ``*.egg-info`` never land in the working tree, and checks its file list:
every module of ``aiotmc/`` and ``py.typed`` are in it, the user-facing simulators too,
and no test rig (``testbeds/``: umockdev, usbredir), test or benchmark is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Not part of a source tree: virtualenvs, caches, earlier builds, benchmark output.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".cache",
    ".*_cache",
    ".hypothesis",
    "results",
)

#: What users simulate instruments with; it must stay installable.
PUBLIC_SIMULATORS = (
    "aiotmc/sim/__init__.py",
    "aiotmc/sim/devices/__init__.py",
    "aiotmc/sim/usb_function.py",
    "aiotmc/sim/usbtmc_device.py",
    "aiotmc/sim/fake_port.py",
)

#: Folders of the checkout that are not the library.
NOT_SHIPPED = ("testbeds/", "tests/", "benchmarks/", "examples/", "scripts/", "docs/")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built wheel."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    out = work / "dist"
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    try:
        done = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"python -m build took more than {exc.timeout} s", pytrace=False)
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout}\n{done.stderr}"
    wheels = list(out.glob("aiotmc-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> list[str]:
    """The wheel's file list."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_every_module_of_the_library(wheel_files: list[str]) -> None:
    modules = {
        p.relative_to(ROOT).as_posix()
        for package in ("aiotmc", "pyvisa_aiotmc")  # the library and its PyVISA backend
        for p in (ROOT / package).rglob("*.py")
    }
    shipped = {name for name in wheel_files if name.endswith(".py")}
    assert modules <= shipped, f"missing from the wheel: {sorted(modules - shipped)}"
    assert "aiotmc/py.typed" in wheel_files
    assert "pyvisa_aiotmc/py.typed" in wheel_files
    for simulator in PUBLIC_SIMULATORS:
        assert simulator in wheel_files, simulator


def test_wheel_holds_no_test_rig(wheel_files: list[str]) -> None:
    tops = {name.split("/", 1)[0] for name in wheel_files}
    packages = {"aiotmc", "pyvisa_aiotmc"}
    extra = {top for top in tops if top not in packages and not top.endswith(".dist-info")}
    assert not extra, f"the wheel installs more than aiotmc and pyvisa_aiotmc: {sorted(extra)}"
    rigs = [
        n for n in wheel_files if "umockdev" in n or "usbredir" in n or n.startswith(NOT_SHIPPED)
    ]
    assert not rigs, f"test rigs in the wheel: {rigs}"


def test_wheel_metadata_has_license_urls_and_one_version(wheel: Path) -> None:
    """The MIT LICENSE file ships, the project URLs are there, the version is _version's."""
    from aiotmc._version import __version__

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    assert "License-Expression: MIT" in metadata.splitlines()
    assert f"Version: {__version__}" in metadata.splitlines()
    assert info == f"aiotmc-{__version__}.dist-info"
    urls = [line for line in metadata.splitlines() if line.startswith("Project-URL: ")]
    assert {u.split(": ")[1].split(",")[0] for u in urls} >= {
        "Source",
        "Documentation",
        "Changelog",
    }
    assert "Classifier: Operating System :: POSIX :: Linux" in metadata.splitlines()
