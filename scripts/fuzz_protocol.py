"""Run the sans-IO protocol properties with many more hypothesis examples.

The test suite keeps them short (200 examples each); a longer run is a script:

    .venv/bin/python scripts/fuzz_protocol.py                  # 20 000 examples per property
    .venv/bin/python scripts/fuzz_protocol.py -n 100000 -k garbage

Extra arguments after ``--`` go to pytest. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/protocol/test_scpi.py", "tests/protocol/test_ieee4882.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", "--examples", type=int, default=20_000, help="examples per property (default 20000)"
    )
    parser.add_argument(
        "-k", dest="keyword", help="only properties matching this pytest -k expression"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    os.environ["AIOTMC_FUZZ_EXAMPLES"] = str(args.examples)  # read by the test modules
    os.chdir(ROOT)
    import pytest  # after the environment is set

    pytest_args = [
        *FILES,
        "-q",
        "-o",
        "timeout=0",  # the suite's 60 s per-test limit is for short runs
        "--hypothesis-show-statistics",
        *(["-k", args.keyword] if args.keyword else []),
        *args.pytest_args,
    ]
    return int(pytest.main(pytest_args))


if __name__ == "__main__":
    sys.exit(main())
