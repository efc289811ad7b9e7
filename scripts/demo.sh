#!/usr/bin/env bash
# The README's first Quick start line: install aiotmc into .venv and run the demo
# (simulated instruments on loopback, a concurrent acquisition across all of them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
.venv/bin/python -m pip install -q --disable-pip-version-check .
exec .venv/bin/aiotmc demo "$@"
