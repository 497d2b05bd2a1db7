#!/usr/bin/env bash
# The benchmark in one command: bash bench/run.sh [--quick] [options]
# (the same as python3 bench/run.py; see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py "$@"
