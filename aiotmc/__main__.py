"""``python -m aiotmc``: the command line (see :mod:`aiotmc.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
