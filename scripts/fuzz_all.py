"""Run every fuzzing property of the suite for longer, randomised.

CI runs a seeded slice (150 examples per property, ``derandomize=True``). This runs the
hardening properties (tests/hardening/test_fuzz.py) and the protocol ones
(tests/protocol/test_scpi.py, test_ieee4882.py, test_usbtmc.py) with many more
examples and a fresh random seed each time::

    .venv/bin/python scripts/fuzz_all.py                     # 20 000 examples per property
    .venv/bin/python scripts/fuzz_all.py -n 200000 -k usbtmc
    .venv/bin/python scripts/fuzz_all.py --seed 1234         # replay a reported run

A failure prints hypothesis's minimal example and the seed to replay it. Extra arguments
after ``--`` go to pytest. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "tests/hardening/test_fuzz.py",
    "tests/protocol/test_scpi.py",
    "tests/protocol/test_ieee4882.py",
    "tests/protocol/test_usbtmc.py",
    "tests/test_resources.py",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", "--examples", type=int, default=20_000, help="examples per property (20000)"
    )
    parser.add_argument("-k", dest="keyword", help="only properties matching this -k expression")
    parser.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    os.environ["AIOTMC_FUZZ_EXAMPLES"] = str(args.examples)  # read by the test modules
    os.environ["AIOTMC_FUZZ_RANDOM"] = "1"  # no derandomize: explore
    os.chdir(ROOT)
    print(f"fuzz_all: {args.examples} examples per property, --hypothesis-seed={seed}")
    import pytest  # after the environment is set

    pytest_args = [
        *FILES,
        "-q",
        "-p",
        "no:randomly",
        "-o",
        "timeout=0",  # the suite's per-test limit is for short runs
        f"--hypothesis-seed={seed}",
        "--hypothesis-show-statistics",
        *(["-k", args.keyword] if args.keyword else []),
        *args.pytest_args,
    ]
    return int(pytest.main(pytest_args))


if __name__ == "__main__":
    sys.exit(main())
