"""aiotmc._usb is the lowest I/O layer: it imports nothing above it.

Read from the source (every import statement, also those inside functions), so an import
deferred into a function to hide a cycle is caught too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import aiotmc._usb

#: The aiotmc modules _usb may use: its own package, the shared primitives, protocol/.
ALLOWED_AIOTMC = ("aiotmc._usb", "aiotmc._types", "aiotmc._exceptions", "aiotmc.protocol")
#: Third-party packages _usb may use (sniffio and trio: loop-specific re-entry).
ALLOWED_THIRD_PARTY = {"anyio", "usb1", "libusb_package", "sniffio", "trio"}

PACKAGE = Path(aiotmc._usb.__file__).parent


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports."""
    package = "aiotmc._usb"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts)
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module is not None:
                found.add(node.module)
    return found


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "aiotmc":
        return any(name == a or name.startswith(a + ".") for a in ALLOWED_AIOTMC)
    return top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY


def test_usb_layer_imports_nothing_above_it() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert PACKAGE / "libusb_port.py" in files
    wrong = {
        f"{path.name}: {name}" for path in files for name in _imports(path) if not _allowed(name)
    }
    assert not wrong, f"aiotmc._usb imports from above its layer: {sorted(wrong)}"


def test_the_scanner_sees_relative_and_deferred_imports(tmp_path: Path) -> None:
    """Guard against a vacuous check: an upward import, even inside a function, is seen."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from .._exceptions import ConnectError\n"
        "def f():\n"
        "    from ..resources import UsbInstr\n"
        "    import aiotmc.instrument\n"
    )
    names = _imports(sample)
    assert names == {"aiotmc._exceptions", "aiotmc.resources", "aiotmc.instrument"}
    assert [name for name in sorted(names) if not _allowed(name)] == [
        "aiotmc.instrument",
        "aiotmc.resources",
    ]
    assert _imports(PACKAGE / "errors.py") >= {"aiotmc._exceptions"}
