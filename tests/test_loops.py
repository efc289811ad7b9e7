"""``aiotmc._loops`` is the lowest layer: it imports the standard library, anyio and the
loop libraries, and nothing else of aiotmc (only its own modules)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import aiotmc._loops

_ALLOWED = {"anyio", "trio", "sniffio"}
_PACKAGE = Path(aiotmc._loops.__file__).parent


def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path``; relative ones as ``.name``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1, f"{path.name} imports from above aiotmc._loops"
                found.add("." + (node.module or ""))
            else:
                assert node.module is not None
                found.add(node.module.split(".")[0])
    return found


def test_loops_package_imports_only_stdlib_anyio_and_loop_libraries() -> None:
    modules = sorted(_PACKAGE.glob("*.py"))
    assert {p.name for p in modules} >= {"__init__.py", "asyncio_.py", "trio_.py"}
    for path in modules:
        for name in _imports(path):
            if name.startswith("."):
                assert name[1:] in {"", "asyncio_", "trio_"}, (path.name, name)
            else:
                assert name in sys.stdlib_module_names or name in _ALLOWED, (path.name, name)
