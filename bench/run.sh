#!/usr/bin/env bash
# The benchmark in one command: bash bench/run.sh [--quick] [options]
# (bench/run.py with the project's virtual environment; see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/venv.sh)"
exec "$PY" bench/run.py "$@"
