#!/usr/bin/env bash
# The project's Python environment: a virtual environment at .venv in the
# repository root (POPGATE_VENV moves it), made with `python3 -m venv`, with
# the tools listed in scripts/requirements.txt (pytest, PyYAML,
# kubernetes-validate, hadolint).  Nothing is installed into the system
# Python.  Needs python3 and python3-venv (scripts/install-deps.sh installs
# them).  Idempotent: pip runs only when the list changed since the last
# install.  Prints the environment's python on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POPGATE_VENV:-$ROOT/.venv}"
REQUIREMENTS="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.requirements.sha256"

log() { printf 'venv: %s\n' "$*" >&2; }

if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating $VENV"
    python3 -m venv --clear "$VENV" >&2
    rm -f "$STAMP"
fi

want="$(sha256sum <"$REQUIREMENTS" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    log "installing $(grep -vcE '^\s*(#|$)' "$REQUIREMENTS") packages from scripts/requirements.txt"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS" </dev/null >&2
    printf '%s\n' "$want" >"$STAMP"
fi
printf '%s\n' "$VENV/bin/python"
