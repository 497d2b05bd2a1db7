#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Dovecot, the POP3
# clients, pytest, Prometheus' promtool and server, helm and a Kubernetes
# schema validator), checks formatting and lints, runs the unit and property
# tests, then the end-to-end tests that drive the real popgate binary with
# real POP3 clients against a real Dovecot, and last runs every fuzz target
# for FUZZ_SECONDS (20 by default; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/install-prometheus.sh
bash scripts/install-helm.sh

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo build --release --locked
cargo test --locked

export POPGATE_BIN="$PWD/target/release/popgate"
python3 -m pytest tests/e2e -q -p no:cacheprovider "$@"

fuzz_seconds="${FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ]; then
    bash scripts/fuzz.sh "$fuzz_seconds"
fi
