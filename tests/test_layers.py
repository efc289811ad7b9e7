"""The architecture holds: the import-linter layer contract and no import cycle anywhere.

``pyproject.toml`` ([tool.importlinter]) lists the layers; docs/architecture.md draws them.
Imports deferred into functions count (they are dependencies all the same), and so do imports
under ``TYPE_CHECKING``: the type checker follows them, so a lower module declares a
``typing.Protocol`` of what it uses from an upper one rather than importing it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_layer_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 1 kept, 0 broken." in done.stdout


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(imports.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_aiotmc() -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    graph = grimp.build_graph("aiotmc", exclude_type_checking_imports=False, cache_dir=None)
    imports = {
        module: {m for m in graph.find_modules_directly_imported_by(module) if m != module}
        for module in graph.modules
    }
    cycles = _cycles(imports)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["aiotmc._usb", "aiotmc.protocol"])
def test_low_layers_import_only_primitives(package: str) -> None:
    graph = grimp.build_graph("aiotmc", exclude_type_checking_imports=False, cache_dir=None)
    allowed: tuple[str, ...] = ("aiotmc._types", "aiotmc._exceptions", "aiotmc.protocol", package)
    if package == "aiotmc._usb":
        allowed += ("aiotmc._loops",)  # the event-loop bridge's loop-specific part
    upward = sorted(
        f"{module} -> {target}"
        for module in graph.find_children(package) | {package}
        for target in graph.find_modules_directly_imported_by(module)
        if target.startswith("aiotmc") and not target.startswith(allowed)
    )
    assert upward == []


def _contract_layers() -> list[str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    names = []
    for layer in contract["layers"]:
        names += [part.strip(" ()") for part in layer.split("|")]
    return names


def _top_level_modules() -> set[str]:
    package = ROOT / "aiotmc"
    found = {f"aiotmc.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    found |= {f"aiotmc.{p.parent.name}" for p in package.glob("*/__init__.py")}
    return found


def test_every_module_is_in_a_layer() -> None:
    """A module missing from the contract would be unconstrained."""
    assert _top_level_modules() - set(_contract_layers()) == set()


def test_architecture_page_names_every_layer_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set()
    for module in _top_level_modules():
        short = module.removeprefix("aiotmc.")
        if f"`{short}.py`" in text or f"`{short}/`" in text:
            named.add(module)
    assert _top_level_modules() - named == set()
