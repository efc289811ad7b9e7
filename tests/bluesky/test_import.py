"""The extra stays optional: ``import aiotmc`` imports neither ophyd-async nor bluesky, and
``import aiotmc.bluesky`` without them says which extra to install."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_import_aiotmc_imports_no_bluesky() -> None:
    done = _run(
        "import sys, aiotmc, aiotmc.sim\n"
        "aiotmc.open, aiotmc.Instrument, aiotmc.open_many\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('ophyd_async', 'bluesky', 'event_model', 'aiotmc.bluesky')))\n"
        "print('aiotmc.bluesky' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "False"]


def test_without_the_extra_the_import_error_names_it() -> None:
    done = _run(
        "import sys\n"
        "sys.modules['ophyd_async'] = None  # as if not installed\n"
        "try:\n"
        "    import aiotmc.bluesky\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'aiotmc[bluesky]'" in done.stdout
