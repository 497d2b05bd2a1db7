#!/usr/bin/env bash
# Mutation testing of the protocol code and the gateway (src/pop3, src/imap,
# src/gateway) against the in-process tests, with cargo-mutants; what it
# mutates and which tests it runs is in .cargo/mutants.toml. Installs
# cargo-mutants into .tools/ (and Debian's mold, a faster linker for the
# many test binaries it links) when missing.
#
#   scripts/mutants.sh 3/10             # the third of ten shards
#   scripts/mutants.sh 1/1              # everything: hours on two cores
#   scripts/mutants.sh 3/10 --iterate   # more cargo-mutants flags: here,
#                                       # skip what the last run caught
#   scripts/mutants.sh rerun [FILE]     # only the mutants FILE names, one
#                                       # per line as `cargo mutants --list`
#                                       # prints them (default: every
#                                       # shard's missed.txt), with today's
#                                       # tests, into mutants.out/rerun/
#
# Shards deal the mutants out round-robin, so each is a sample of the
# whole. Each shard's results go to mutants.out/shard-K-of-N/ (not in git), so
# shards can run on different days or machines; then
#
#   .venv/bin/python tests/mutation/mutants_report.py
#
# adds up every shard found there and prints the score and the survivors,
# the table tests/MUTANTS.md keeps. The run takes one mutant at a time per
# core (JOBS, default 2); each is a debug build of the crate and its
# in-process tests. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

shard="${1:?usage: scripts/mutants.sh K/N|rerun [FILE] [cargo-mutants flags...]}"
shift
case "$shard" in
*/*) ;;
rerun) ;;
*) echo "mutants: shard is K/N, counting K from 1, or rerun" >&2; exit 2 ;;
esac

export PATH="$PWD/.tools/bin:$PATH"
if ! cargo mutants --version >/dev/null 2>&1; then
    cargo install cargo-mutants --locked --root "$PWD/.tools"
fi
if ! command -v mold >/dev/null 2>&1; then
    # shellcheck source=scripts/apt.sh
    source scripts/apt.sh
    apt_install mold >/dev/null ||
        echo "mutants: mold not installed; linking with the default linker" >&2
fi
if command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-fuse-ld=mold"
fi

if [ "$shard" = rerun ]; then
    # Exact names, each as an anchored regex; a name the code no longer
    # has (it moved or went) is reported and left out.
    if [ -n "${1:-}" ] && [ "${1#-}" = "$1" ]; then
        names="$(cat "$1")"
        shift
    else
        names="$(cat mutants.out/shard-*/mutants.out/missed.txt 2>/dev/null || true)"
    fi
    listed="$(cargo mutants --list)"
    args=()
    gone=0
    while IFS= read -r name; do
        [ -n "$name" ] || continue
        if ! grep -qxF -- "$name" <<<"$listed"; then
            echo "mutants: no longer there: $name" >&2
            gone=$((gone + 1))
            continue
        fi
        args+=(--re "^$(printf '%s' "$name" | sed 's/[][\.*^$(){}+?|]/\\&/g')\$")
    done <<<"$names"
    echo "mutants: re-running $((${#args[@]} / 2)) mutants ($gone no longer there)" >&2
    [ "${#args[@]}" -gt 0 ] || exit 0
    exec nice -n 10 cargo mutants --jobs "${JOBS:-2}" --output mutants.out/rerun \
        --no-shuffle "${args[@]}" "$@"
fi

k="${shard%/*}"
n="${shard#*/}"
out="mutants.out/shard-$k-of-$n"
mkdir -p "$out"
# cargo-mutants numbers shards from 0.
exec nice -n 10 cargo mutants --shard "$((k - 1))/$n" --jobs "${JOBS:-2}" \
    --sharding round-robin --output "$out" --no-shuffle "$@"
