#!/usr/bin/env bash
# The benchmark in one command: bash bench/run.sh [--quick] [options]
# (bench/run.py with the project's virtual environment; see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/venv.sh)"
# nginx's mail proxy, the second reference (quick when installed); without
# it the run goes on and leaves nginx out with a note.
bash scripts/install-bench-deps.sh >&2 || echo "bench: nginx could not be installed" >&2
exec "$PY" bench/run.py "$@"
