"""``python3 -m testbeds.umockdev``: run the umockdev device process (see server.py)."""

from __future__ import annotations

import sys

from .server import main

sys.exit(main())
