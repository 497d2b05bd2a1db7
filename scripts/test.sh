#!/usr/bin/env bash
# The whole test suite: installs what the tests need (the C toolchain,
# Dovecot, the POP3 clients, Prometheus' promtool and server, helm, and the
# Python tools in .venv), checks formatting and lints, runs the unit and
# property tests, then the end-to-end tests that drive the real popgate
# binary with real POP3 clients against a real Dovecot. Before those, every
# fuzz target runs for FUZZ_SECONDS (20 by default; 0 skips it).
#
# Everything runs with a private TMPDIR (and a private directory for the
# test Dovecots, in /dev/shm when that is where they go), which must be
# empty at the end: a test that leaves a temporary file or directory behind
# fails the run.  pytest's own tmp_path directories are removed with them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/install-prometheus.sh
bash scripts/install-helm.sh
VENV_PYTHON="$(bash scripts/venv.sh)"
# The virtual environment's tools (pytest, kubernetes-validate, hadolint)
# come first on PATH, as an activated environment would have them.
PATH="$(dirname "$VENV_PYTHON"):$PATH"
export PATH

TEST_TMP="$(mktemp -d "${TMPDIR:-/tmp}/popgate-test.XXXXXX")"
DOVECOT_TMP=""
trap 'rm -rf "$TEST_TMP" ${DOVECOT_TMP:+"$DOVECOT_TMP"}' EXIT
if [ -z "${POPGATE_E2E_TMPDIR:-}" ]; then
    parent="$("$VENV_PYTHON" -c 'import sys; sys.path.insert(0, "tests/e2e"); import dovecot; print(dovecot._parent_dir())')"
    DOVECOT_TMP="$(mktemp -d "$parent/pgtest.XXXXXX")"
    chmod 755 "$DOVECOT_TMP"    # Dovecot's unprivileged processes look inside
    export POPGATE_E2E_TMPDIR="$DOVECOT_TMP"
fi
export TMPDIR="$TEST_TMP"

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo build --release --locked
cargo test --locked

fuzz_seconds="${FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ]; then
    FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" bash scripts/fuzz.sh "$fuzz_seconds"
fi

export POPGATE_BIN="$PWD/target/release/popgate"
set +e
"$VENV_PYTHON" -m pytest tests/e2e -q -p no:cacheprovider --basetemp "$TEST_TMP/pytest" "$@"
rc=$?
set -e

rm -rf "$TEST_TMP/pytest"
left="$(find "$TEST_TMP" ${DOVECOT_TMP:+"$DOVECOT_TMP"} -mindepth 1 -maxdepth 1)"
if [ -n "$left" ]; then
    printf 'test.sh: the tests left these behind:\n%s\n' "$left" >&2
    [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
