"""The docs site: ``sphinx-build -W`` over docs/ succeeds offline, and intersphinx reads only
the inventories shipped in docs/_inventories (scripts/docs_inventories.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from scripts import docs_inventories

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 480.0  # seconds; about 15 s on an idle machine


def _read_inventory(path: Path) -> str:
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):  # four header lines, then the zlib stream
        header_end = data.index(b"\n", header_end) + 1
    return zlib.decompress(data[header_end:]).decode()


@pytest.mark.parametrize("key", sorted(docs_inventories.INVENTORIES))
def test_shipped_inventories_match_the_generator(key: str) -> None:
    _, entries = docs_inventories.INVENTORIES[key]
    shipped = _read_inventory(DOCS / "_inventories" / f"{key}.inv")
    assert shipped == docs_inventories.body(entries), "rerun python -m scripts.docs_inventories"


def _resolve(dotted: str) -> object:
    """The object ``dotted`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    return getattr(importlib.import_module("builtins"), dotted)


@pytest.mark.parametrize("key", sorted(docs_inventories.INVENTORIES))
def test_inventory_names_exist(key: str) -> None:
    _, entries = docs_inventories.INVENTORIES[key]
    assert len(entries) == len({name for name, _, _ in entries}), "a name listed twice"
    for name, _, _ in entries:
        _resolve(name)  # AttributeError names the missing object


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_docs_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    out, doctrees = tmp_path / "html", tmp_path / "doctrees"
    command = ["-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(doctrees)]
    result = subprocess.run(
        [sys.executable, *command, str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        cwd=ROOT,
        # An unreachable proxy: any attempt to fetch an inventory fails instead of hanging.
        env={**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"},
    )
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert result.returncode == 0, result.stderr[-4000:]
    assert warnings == []
    pages = {p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md")}
    pages = {p for p in pages if not p.parts[0].startswith("_")}
    built = {p.relative_to(out).with_suffix("") for p in out.rglob("*.html")}
    assert pages - built == set(), "pages missing from the site"
    api = (out / "api" / "aiotmc.html").read_text(encoding="utf-8")
    assert 'id="aiotmc.Instrument.query"' in api  # autodoc ran
    assert "https://docs.python.org/3/library/stdtypes.html#str" in api  # intersphinx, offline
