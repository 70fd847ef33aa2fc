#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the test suite and the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
