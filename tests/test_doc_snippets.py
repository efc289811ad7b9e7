"""Every ```python snippet of the docs runs against the simulators, or says why it cannot.

The line before each fence is a marker (an HTML comment: invisible on GitHub and in the
built site)::

    <!-- snippet: run setup=scope replace=USB0::...::INSTR>SIM::scope -->
    <!-- snippet: skip needs a real USB instrument -->
    <!-- snippet: tested tests/test_docs.py -->

``run``: a fragment (top-level ``await`` allowed) runs in-process on asyncio and trio with
``anyio`` and ``aiotmc`` imported plus what its ``setup`` provides; a program (it calls
``anyio.run``/``trio.run``) runs in a subprocess; ``>>>`` blocks run as doctests.
``replace=OLD>NEW`` swaps a hardware resource name (or a long count) for a simulated one
(``~`` stands for a space).
``skip REASON``: cannot run here (real hardware); ``tested PATH``: another test runs it.
Everything is bounded in time.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiotmc
from aiotmc.sim import create_device

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPET_TIMEOUT = 30.0  # seconds, each

#: Pages whose every python snippet must carry a marker. Pages added later: add them here.
MARKED_PAGES = [
    "architecture.md",
    "bluesky.md",
    "cancellation.md",
    "cli.md",
    "distributed.md",
    "exceptions.md",
    "gateway.md",
    "gpib.md",
    "groups.md",
    "hislip.md",
    "index.md",
    "instrument.md",
    "performance.md",
    "quickstart.md",
    "reliability.md",
    "resources.md",
    "serial.md",
    "simulators.md",
    "srq.md",
    "testing.md",
    "usb.md",
    "vxi11.md",
    "web.md",
]

_FENCE = re.compile(
    r"(?:^<!-- snippet: (?P<marker>[^\n]*?) -->\n)?^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    marker: str | None
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        return (self.marker or "").split(" ", 1)[0]

    def options(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for token in (self.marker or "").split()[1:]:
            key, _, value = token.partition("=")
            found.setdefault(key, []).append(value)
        return found

    def source(self) -> str:
        code = self.code
        for swap in self.options().get("replace", []):
            old, _, new = swap.replace("~", " ").partition(">")
            assert old in code, f"{self.id}: replace= names text not in the snippet: {old}"
            code = code.replace(old, new)
        return code


def snippets() -> list[Snippet]:
    found = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start("info")) + 1
            found.append(Snippet(path.name, line, match.group("marker"), match.group("code")))
    return found


SNIPPETS = snippets()


def _of_kind(*kinds: str, program: bool | None = None) -> list[Snippet]:
    chosen = [s for s in SNIPPETS if s.kind in kinds]
    if program is not None:
        chosen = [s for s in chosen if _is_program(s.code) == program]
    return chosen


def _is_program(code: str) -> bool:
    return bool(re.search(r"^(?:anyio|trio)\.run\(|^    anyio\.run\(", code, re.MULTILINE))


def test_every_snippet_of_the_marked_pages_is_marked() -> None:
    assert len(SNIPPETS) >= 25
    unmarked = [s.id for s in SNIPPETS if s.page in MARKED_PAGES and s.marker is None]
    assert unmarked == [], "add <!-- snippet: run|skip REASON|tested PATH --> before them"
    kinds = {s.id: s.kind for s in SNIPPETS if s.marker is not None}
    assert set(kinds.values()) <= {"run", "skip", "tested"}, kinds
    for snippet in _of_kind("skip"):
        assert len(snippet.marker or "") > len("skip ") + 10, f"{snippet.id}: say why"
    for snippet in _of_kind("tested"):
        (path,) = snippet.options()
        assert (ROOT / path).is_file(), f"{snippet.id}: {path} does not exist"
    assert len(_of_kind("run")) >= 2 * len(_of_kind("skip")), "most snippets must run"


# --------------------------------------------------------------------------- setups


@asynccontextmanager
async def _nothing() -> AsyncIterator[dict[str, Any]]:
    yield {}


@asynccontextmanager
async def _scope() -> AsyncIterator[dict[str, Any]]:
    async with aiotmc.open("SIM::scope", timeout=5) as inst:
        yield {"inst": inst}


@asynccontextmanager
async def _usb_scope() -> AsyncIterator[dict[str, Any]]:
    """A USB488 scope through the real USBTMC transport over the in-memory USB port."""
    from aiotmc.sim.fake_port import FakeUsbPort
    from aiotmc.sim.usbtmc_device import UsbtmcFunction
    from aiotmc.transports.usbtmc import open_usbtmc_transport

    port = FakeUsbPort(UsbtmcFunction(create_device("scope"), serial="DOC1"))
    resource = "USB0::0x0957::0x1796::DOC1::INSTR"
    async with (
        open_usbtmc_transport(port, resource=resource) as transport,
        aiotmc.Instrument(transport, timeout=5) as inst,
    ):
        yield {"inst": inst}


@asynccontextmanager
async def _group() -> AsyncIterator[dict[str, Any]]:
    resources = {"dmm": "SIM::dmm", "psu": "SIM::psu"}
    async with aiotmc.open_many(resources, timeout=5) as group:
        plan = {"dmm": "READ?", "psu": "MEAS:VOLT?"}
        yield {"group": group, "plan": plan}


@asynccontextmanager
async def _two() -> AsyncIterator[dict[str, Any]]:
    yield {"r1": "SIM::dmm", "r2": "SIM::psu"}


@asynccontextmanager
async def _sim() -> AsyncIterator[dict[str, Any]]:
    yield {"create_device": create_device, "dmm": create_device("dmm")}


SETUPS: dict[str, Callable[[], AbstractAsyncContextManager[dict[str, Any]]]] = {
    "": _nothing,
    "scope": _scope,
    "usb_scope": _usb_scope,
    "group": _group,
    "two": _two,
    "sim": _sim,
}


# --------------------------------------------------------------------------- runners


def _fragments() -> list[Snippet]:
    return [s for s in _of_kind("run", program=False) if not s.code.startswith(">>>")]


@pytest.mark.parametrize("snippet", _fragments(), ids=lambda s: s.id)
async def test_fragment_runs(snippet: Snippet) -> None:
    (setup,) = snippet.options().get("setup", [""])
    code = compile(snippet.source(), snippet.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    with anyio.fail_after(SNIPPET_TIMEOUT):
        async with SETUPS[setup]() as names:
            namespace: dict[str, Any] = {"anyio": anyio, "aiotmc": aiotmc, **names}
            result = eval(code, namespace)  # the docs' own code
            if inspect.iscoroutine(result):
                await result


@pytest.mark.parametrize("snippet", _of_kind("run", program=True), ids=lambda s: s.id)
def test_program_runs(snippet: Snippet) -> None:
    result = subprocess.run(
        [sys.executable, "-c", snippet.source()],
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT * 2,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout, "a program in the docs prints what it shows"


@pytest.mark.parametrize(
    "snippet", [s for s in _of_kind("run") if s.code.startswith(">>>")], ids=lambda s: s.id
)
def test_doctest_runs(snippet: Snippet) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(snippet.source(), {}, snippet.id, snippet.page, snippet.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=lambda _: None)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 0
    assert failed == 0, f"{snippet.id}: rerun with python -m doctest to see the difference"
