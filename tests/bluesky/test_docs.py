"""The python snippets of docs/bluesky.md run, as programs, against the simulators.

They are marked ``tested tests/bluesky/test_docs.py`` (tests/test_doc_snippets.py runs the
other pages' snippets on asyncio and trio; these are asyncio-only programs: a RunEngine
or ``asyncio.run``). Each must print what the page says it prints.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "bluesky.md"
MARKER = "<!-- snippet: tested tests/bluesky/test_docs.py -->"
_FENCE = re.compile(r"^(?P<marker><!--[^\n]*-->)\n```python\n(?P<code>.*?)^```$", re.M | re.S)

#: For each marked snippet, in page order: patterns its output must match, in order.
EXPECTED = [
    [r"^start ", r"^descriptor ", *[r"^event \{'dmm-voltage': [0-9.]+\}"] * 5, r"^stop "],
    [r"^\{'psu-voltage': \{'value': 2\.5, "],
    [r"^[0-9.]+ V$"] * 3,
    [r"^range 1\.0$", r"^range 100\.0$"],
]


def _snippets() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return [m.group("code") for m in _FENCE.finditer(text) if m.group("marker") == MARKER]


def test_every_snippet_has_its_expected_output() -> None:
    assert len(_snippets()) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_snippet_runs_and_prints_what_the_page_says(index: int) -> None:
    code = _snippets()[index]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(EXPECTED[index]), done.stdout
    for line, pattern in zip(lines, EXPECTED[index], strict=True):
        assert re.search(pattern, line), (pattern, line)
