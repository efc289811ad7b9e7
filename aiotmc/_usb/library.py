"""Loading libusb-1.0 for python-libusb1, with a choice of which build.

Two builds can exist: the one bundled by the PyPI package ``libusb-package`` (netlink
hot-plug, no udev dependency, usually newer) and the system one (``libusb-1.0.so.0``;
Debian's uses udev). ``AIOTMC_LIBUSB=system|package|auto`` forces the choice; ``auto``
prefers the bundled one, except under umockdev (``UMOCKDEV_DIR`` set) whose emulated
devices only the udev build sees. python-libusb1 loads one library per process: the first
call wins and later calls report what is loaded.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any, Final, Literal

from .errors import LibusbNotFoundError

__all__ = ["LibraryChoice", "load_libusb", "loaded_library", "usb1_module"]

logger = logging.getLogger(__name__)

LibraryChoice = Literal["auto", "system", "package"]

ENV_VAR: Final = "AIOTMC_LIBUSB"

_INSTALL_HINT: Final = (
    "install it with `pip install 'aiotmc[usb]'` (python-libusb1 plus libusb-package, "
    "which bundles libusb), or install the system library: `apt install libusb-1.0-0`, "
    "`dnf install libusb1`, `brew install libusb`; on Windows the libusb-package wheel "
    "ships libusb-1.0.dll"
)

_lock = threading.Lock()
_loaded: str | None = None


def usb1_module() -> Any:
    """Import python-libusb1 (``usb1``) or raise :class:`LibusbNotFoundError`."""
    try:
        import usb1
    except ImportError as exc:
        raise LibusbNotFoundError(f"python-libusb1 is not installed; {_INSTALL_HINT}") from exc
    return usb1


def _under_umockdev() -> bool:
    return bool(os.environ.get("UMOCKDEV_DIR")) or "umockdev" in os.environ.get("LD_PRELOAD", "")


def _package_path() -> str | None:
    try:
        import libusb_package
    except ImportError:
        return None
    path = libusb_package.get_library_path()
    return str(path) if path else None


def _resolve_choice(choice: str | None) -> LibraryChoice:
    value = (choice or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if value not in ("auto", "system", "package"):
        raise ValueError(f"{ENV_VAR} must be auto, system or package, not {value!r}")
    return value  # type: ignore[return-value]


def load_libusb(choice: str | None = None) -> str:
    """Load libusb into python-libusb1 once; return a description of what is loaded.

    ``choice`` overrides ``AIOTMC_LIBUSB``. Raises :class:`LibusbNotFoundError` (with the
    install command) when no library can be loaded.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        usb1 = usb1_module()
        resolved = _resolve_choice(choice)
        order: list[str]
        if resolved == "auto":
            order = ["system", "package"] if _under_umockdev() else ["package", "system"]
        else:
            order = [resolved]
        errors: list[str] = []
        for candidate in order:
            try:
                if candidate == "package":
                    path = _package_path()
                    if path is None:
                        errors.append("libusb-package is not installed")
                        continue
                    library = ctypes.CDLL(path, use_errno=True, use_last_error=True)
                    usb1.loadLibrary(library)
                    _loaded = f"package:{path}"
                else:
                    usb1.loadLibrary()
                    _loaded = "system"
            except OSError as exc:
                errors.append(f"{candidate}: {exc}")
                continue
            logger.debug("loaded libusb (%s)", _loaded)
            return _loaded
        raise LibusbNotFoundError(f"no usable libusb-1.0 ({'; '.join(errors)}); {_INSTALL_HINT}")


def loaded_library() -> str | None:
    """What :func:`load_libusb` loaded, or None before the first load."""
    return _loaded
