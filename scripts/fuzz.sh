#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (one per parser that network or
# config bytes reach), each for SECONDS (default 20), and prints executions,
# coverage and corpus size per target. Installs cargo-fuzz when missing.
#
#   scripts/fuzz.sh                 # every target, 20 s each (what CI runs)
#   scripts/fuzz.sh 1800            # every target, 30 minutes each
#   scripts/fuzz.sh 3600 imap_framer proxy_header
#   FUZZ_ARGS="-jobs=2 -workers=2" scripts/fuzz.sh 14400 imap_framer
#
# FUZZ_ARGS is passed on to libFuzzer. FUZZ_SANITIZER picks cargo fuzz's
# sanitizer (address by default; the test run's short smoke uses none, which
# builds faster and still catches every panic).
# The working corpus is fuzz/corpus/<target> (not in git): libFuzzer reads
# it and the seeds in fuzz/seeds/<target>, and adds what it finds to the
# former, so it keeps growing between runs. A crash
# leaves its input in fuzz/artifacts/<target>/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true

# cargo-fuzz goes into the checkout (.tools/, not in git), not into the
# toolchain's own directory, which may be read-only.
export PATH="$PWD/.tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --root "$PWD/.tools"
fi
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")
# libFuzzer and the sanitizer need nightly features: the nightly toolchain
# when there is one, else the stable compiler with its bootstrap switch.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

"${fuzz[@]}" build -O "${sanitizer[@]}"
summary=()
status=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/seeds/$t"
    log="$(mktemp)"
    # FUZZ_ARGS holds several libFuzzer flags: split on purpose.
    # shellcheck disable=SC2086
    if ! "${fuzz[@]}" run -O "${sanitizer[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 ${FUZZ_ARGS:-} >"$log" 2>&1; then
        status=1
        tail -n 40 "$log"
        echo "fuzz: $t FAILED; input in fuzz/artifacts/$t/" >&2
    fi
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    done_line=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || true)
    summary+=("$(printf '%-15s %12s execs  cov %6s  ft %6s  corpus %5s' \
        "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$(find "$corpus" -type f | wc -l)")")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit "$status"
