"""Keep the reference pages honest: cheap checks of docs/*.md against the code.

* every ``aiotmc <subcommand>`` in docs/cli.md is a real subcommand, and every real one is
  documented there;
* the command tables of docs/simulators.md (each after a ``<!-- commands: MODEL -->``
  marker) list exactly what the models register;
* the custom-instrument example of docs/simulators.md runs and prints what the page says,
  and the ``aiotmc shell SIM::...`` sessions shown in the docs print what they show;
* the resource names and error messages of docs/resources.md are what the parser gives;
* relative links in docs/*.md point to files that exist; README.md's links are absolute
  (they must work on PyPI), and those into the repository name files that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aiotmc import InvalidResourceName, parse_resource
from aiotmc.sim import SimDevice, create_device
from aiotmc.sim.devices import MODELS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_PAGES = ("cli.md", "resources.md", "simulators.md")  # the pages this file checks in depth

FENCE = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def fenced_block(text: str, info: str) -> str:
    """The body of the one fenced code block whose info string is exactly ``info``."""
    pattern = re.compile(
        rf"^```{re.escape(info)}[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL
    )
    found = pattern.findall(text)
    assert len(found) == 1, f"expected one ```{info} block, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- cli.md

_OPTIONS_WITH_VALUE = {"--backend", "--timeout"}
# Shown on purpose in docs/cli.md, to show the error an unknown subcommand gives.
_DELIBERATELY_UNKNOWN = {"nosuch"}


def real_subcommands() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "aiotmc", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
    )
    # argparse lists subcommands indented by four spaces: "    read-block   query an ..."
    names = set(re.findall(r"^ {4}([a-z][a-z-]*)(?: |$)", result.stdout, re.MULTILINE))
    assert {"query", "sim"} <= names, result.stdout
    return names


def mentioned_subcommands(text: str) -> set[str]:
    """Subcommands of ``aiotmc ...`` command lines in code spans and code blocks."""
    code = [m.group(0) for m in FENCE.finditer(text)]
    code += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    names = set()
    for snippet in code:
        for line in snippet.splitlines():
            for match in re.finditer(r"(?:^|[\s$|(])aiotmc[ \t]+(.*)", line):
                tokens = match.group(1).split()
                while tokens and tokens[0].startswith("-"):
                    option = tokens.pop(0)
                    if option in _OPTIONS_WITH_VALUE and tokens:
                        tokens.pop(0)
                if tokens and re.fullmatch(r"[a-z][a-z-]*", tokens[0]):
                    names.add(tokens[0])
    return names


def test_cli_page_names_only_real_subcommands() -> None:
    real = real_subcommands()
    mentioned = mentioned_subcommands(read("cli.md"))
    unknown = mentioned - real - _DELIBERATELY_UNKNOWN
    assert unknown == set(), "docs/cli.md mentions subcommands that do not exist"
    assert real - mentioned == set(), "docs/cli.md does not document these subcommands"


def test_subcommand_scan_sees_options_and_output() -> None:
    text = (
        "```\n$ aiotmc --timeout 2 --debug query X\naiotmc 0.1.0 demo\naiotmc: error: x\n```\n"
        "`aiotmc --backend trio demo` and `python -m aiotmc sim`, not aiotmc prose"
    )
    assert mentioned_subcommands(text) == {"query", "demo", "sim"}


# --------------------------------------------------------------------------- simulators.md


def documented_commands(text: str) -> dict[str, list[str]]:
    """``{model: [pattern, ...]}`` from the first column of each marked table."""
    tables: dict[str, list[str]] = {}
    for match in re.finditer(r"^<!-- commands: (\w+) -->\n((?:\|.*\n?)+)", text, re.MULTILINE):
        model, rows = match.group(1), match.group(2).splitlines()[2:]  # header, separator
        assert model not in tables, f"two command tables for {model}"
        cells = [re.fullmatch(r"\| `([^`]+)` \|.*", row) for row in rows]
        assert all(cells), f"{model}: a row does not start with | `pattern` |"
        tables[model] = [cell.group(1) for cell in cells if cell]
    return tables


def test_simulator_command_tables_match_the_models() -> None:
    tables = documented_commands(read("simulators.md"))
    common = SimDevice().commands
    assert set(tables) == {"common", *MODELS}, "one table per model, plus 'common'"
    assert tables["common"] == common
    for model in MODELS:
        own = [c for c in create_device(model).commands if c not in common]
        listed = tables[model]
        assert not set(listed) - set(own), f"{model}: documented but not registered"
        assert not set(own) - set(listed), f"{model}: registered but not documented"
        assert len(listed) == len(set(listed)), f"{model}: listed twice"


def test_custom_instrument_example_runs_as_documented() -> None:
    text = read("simulators.md")
    code = fenced_block(text, 'python title="custom_instrument"')
    expected = fenced_block(text, 'text title="custom_instrument output"')
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


_SESSION = re.compile(
    r"^\$ aiotmc (shell [^\n]*SIM::\w+) <<EOF\n(.*?)^EOF\n(.*?)^```", re.MULTILINE | re.DOTALL
)


def test_simulated_shell_sessions_print_what_the_docs_show() -> None:
    """SIM:: devices are fresh in each process and their noise is seeded: output is exact."""
    sessions = [m.groups() for name in DOC_PAGES for m in _SESSION.finditer(read(name))]
    assert len(sessions) >= 5
    processes = [  # all at once: each one is mostly interpreter start-up
        subprocess.Popen(
            [sys.executable, "-m", "aiotmc", *args.split()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _, _ in sessions
    ]
    scripts = [script for _, script, _ in sessions]
    outputs = [p.communicate(s, timeout=30) for p, s in zip(processes, scripts, strict=True)]
    for (args, script, expected), output in zip(sessions, outputs, strict=True):
        assert output == (expected, ""), f"aiotmc {args} <<EOF\n{script}EOF"


# --------------------------------------------------------------------------- resources.md


def test_resource_tables_show_canonical_forms() -> None:
    rows = re.findall(
        r"^\| `([^`]+)` \| `((?:TCPIP|USB|SIM)[^`]*)` \|", read("resources.md"), re.MULTILINE
    )
    assert len(rows) >= 15
    for written, canonical in rows:
        assert str(parse_resource(written)) == canonical, written
        assert str(parse_resource(canonical)) == canonical


def test_resource_error_messages_are_the_parsers() -> None:
    lines = fenced_block(read("resources.md"), 'text title="resource_errors"').splitlines()
    assert len(lines) % 3 == 0 and lines
    for i in range(0, len(lines), 3):
        shown = "\n".join(lines[i : i + 3])
        with pytest.raises(InvalidResourceName) as info:
            parse_resource(lines[i + 1][2:])
        assert str(info.value) == shown


# --------------------------------------------------------------------------- links

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # links and images


def link_targets(path: Path) -> list[str]:
    """Relative link targets of a markdown file (code blocks left out, anchors dropped)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto:..., or a link within the page
        targets.append(target.split("#", 1)[0])
    return targets


PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path) -> None:
    missing = []
    for target in link_targets(page):
        resolved = (page.parent / target).resolve()
        if not resolved.exists():
            missing.append(target)
    assert missing == [], f"{page.relative_to(ROOT)}: broken links"


def _repository_url() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        urls: dict[str, str] = tomllib.load(file)["project"]["urls"]
    return urls["Source"].rstrip("/")


def test_readme_links_are_absolute_and_point_to_existing_files() -> None:
    """PyPI shows README.md without the repository: no relative link may be in it."""
    text = FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8"))
    targets = [t for t in _LINK.findall(text) if not t.startswith("#")]
    assert targets, "README.md has no links"
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    assert relative == [], "README.md: use absolute links (they must work on PyPI)"
    prefix = re.compile(re.escape(_repository_url()) + r"/(?:blob|tree)/main/([^#]+)")
    inside = [m.group(1) for t in targets if (m := prefix.match(t))]
    assert len(inside) >= 15
    missing = [path for path in inside if not (ROOT / path).exists()]
    assert missing == [], "README.md: links to files that do not exist"
