"""examples/usb_srq.py runs as a real subprocess: in-process USB stack, and real libusb.

Without a resource the example builds FakeUsbPort + UsbtmcFunction + UsbtmcTransport in
its own process (runs anywhere); with the VISA name of a device emulated under umockdev
it goes through ``aiotmc.open``, python-libusb1 and libusb's Linux backend.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "usb_srq.py"
DONE = "operation complete (SRQ): *ESR? = 1"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_usb_srq_example_in_process(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--backend", backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "USB0::0x0957::0x1796::EMULATED::INSTR: aiotmc,SIM-SCOPE," in result.stdout
    assert "SRQ after" in result.stdout and "(ESB|RQS)" in result.stdout, result.stdout
    assert DONE in result.stdout, result.stdout


@pytest.mark.umockdev
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_usb_srq_example_through_libusb(umockdev: Any, backend: str) -> None:
    name = "USB0::0x0957::0x1796::SRQ1::INSTR"
    bed = umockdev(
        [
            {
                "factory": "testbeds.umockdev.factories:usbtmc",
                "config": {"model": "scope", "serial": "SRQ1"},
            }
        ]
    )
    result = bed.run_process([sys.executable, str(EXAMPLE), name, "--backend", backend])
    assert f"{name}: aiotmc,SIM-SCOPE," in result.stdout, result.stdout
    assert DONE in result.stdout, result.stdout
    assert bed.command("stats")["claimed"] == []  # the example released the interface


# -- docs/usb.md: the quirks tables are generated from aiotmc.protocol.quirks ---------------

DOC = EXAMPLE.parents[1] / "docs" / "usb.md"
BEGIN = "<!-- quirks tables: generated from aiotmc/protocol/quirks.py -->"
END = "<!-- end of the generated quirks tables -->"


def _comments_above(lines: list[str], lineno: int, marker: str) -> str:
    """The comment block (``marker`` lines) right above 1-based ``lineno``, joined."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith(marker):
        found.insert(0, lines[index].strip()[len(marker) :].strip())
        index -= 1
    return " ".join(found)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("``", "`")


def quirks_tables() -> str:
    """The two Markdown tables of docs/usb.md: behaviours, and the devices that have them."""
    import ast
    import inspect
    from dataclasses import fields

    from aiotmc.protocol import quirks as module
    from aiotmc.protocol.quirks import KNOWN_QUIRKS, NO_QUIRKS, Quirks

    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    field_lines: dict[str, int] = {}
    entry_lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Quirks":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    field_lines[item.target.id] = item.lineno
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "KNOWN_QUIRKS"
        ):
            table = next(n for n in ast.walk(node) if isinstance(n, ast.Dict))
            entry_lines = [key.lineno for key in table.keys if key is not None]

    out = ["| Quirk | What the device does, and what aiotmc does about it |", "|---|---|"]
    for f in fields(Quirks):
        text = _comments_above(lines, field_lines[f.name], "#:")
        text = text.replace("Device:", "**Device:**").replace("Host:", "**aiotmc:**")
        default = getattr(NO_QUIRKS, f.name)
        if isinstance(default, bool) or default is None:
            shown = ""
        else:
            shown = f" (default `{default:#04x}`)" if f.name == "terminator" else f" ({default!r})"
        out.append(f"| `{f.name}`{shown} | {_cell(text)} |")
    out += ["", "| VID:PID | Devices | Quirks |", "|---|---|---|"]
    assert len(entry_lines) == len(KNOWN_QUIRKS)
    for (vid, pid), lineno in zip(KNOWN_QUIRKS, entry_lines, strict=True):
        quirks = KNOWN_QUIRKS[(vid, pid)]
        names = [
            f"`{name}`" if getattr(quirks, name) is True else f"`{name}={getattr(quirks, name)!r}`"
            for name in quirks.active
        ]
        key = f"`{vid:04X}:{'*' if pid is None else f'{pid:04X}'}`"
        about = _comments_above(lines, lineno, "#")
        out.append(f"| {key} | {_cell(about)} | {', '.join(names)} |")
    return "\n".join(out)


def _documented() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"markers missing in {DOC}"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def test_docs_quirks_tables_match_the_code() -> None:
    assert _documented() == quirks_tables(), (
        "docs/usb.md's quirks tables are stale: run `python -m tests.usb.test_usb_example`"
    )


if __name__ == "__main__":  # rewrite the generated tables in docs/usb.md
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n\n{quirks_tables()}\n\n{END}{tail}", encoding="utf-8")
    print(f"updated {DOC}")
