#!/usr/bin/env bash
# Mutation testing of the protocol code and the gateway (src/pop3, src/imap,
# src/gateway) against the in-process tests, with cargo-mutants; what it
# mutates and which tests it runs is in .cargo/mutants.toml. Installs
# cargo-mutants into .tools/ (and Debian's mold, a faster linker for the
# many test binaries it links) when missing.
#
#   scripts/mutants.sh 3/10             # the third of ten shards
#   scripts/mutants.sh 7-10/10          # shards 7 to 10 in one run: one
#                                       # baseline build instead of four,
#                                       # results filed per shard
#   scripts/mutants.sh 1/1              # everything: hours on two cores
#   scripts/mutants.sh 3/10 --iterate   # more cargo-mutants flags: here,
#                                       # skip what the last run caught
#   scripts/mutants.sh rerun [FILE]     # only the mutants FILE names, one
#                                       # per line as `cargo mutants --list`
#                                       # prints them (default: every
#                                       # shard's missed.txt), with today's
#                                       # tests, into mutants.out/rerun-TIME/
#   scripts/mutants.sh unmeasured       # every mutant of today's list that
#                                       # no run in mutants.out/ tested, the
#                                       # same way
#
# Shards deal the mutants out round-robin, so each is a sample of the
# whole. Each shard's results go to mutants.out/shard-K-of-N/ (not in git), so
# shards can run on different days or machines; then
#
#   .venv/bin/python tests/mutation/mutants_report.py
#
# adds up every shard found there and prints the score and the survivors,
# the table tests/MUTANTS.md keeps; with `--list <(cargo mutants --list)`
# it scores today's list instead, each mutant by its newest run. The run
# takes one mutant at a time per core (JOBS, default 2); each is a debug
# build of the crate and its in-process tests. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

shard="${1:?usage: scripts/mutants.sh K/N|K-M/N|rerun [FILE]|unmeasured [cargo-mutants flags...]}"
shift
case "$shard" in
[0-9]*/[0-9]*) ;;
rerun | unmeasured) ;;
*) echo "mutants: shard is K/N or K-M/N, counting K from 1, rerun or unmeasured" >&2; exit 2 ;;
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

# Runs the mutants NAMES lists (one per line, as `cargo mutants --list`
# prints them) into OUT, each as an anchored regex; a name the code no
# longer has (it moved or went) is reported and left out. (cargo-mutants
# 27 runs its "delete field" mutants whatever the regexes say: two more.)
run_names() {
    local out="$1" names="$2" listed name gone=0
    shift 2
    listed="$(cargo mutants --list)"
    local args=()
    while IFS= read -r name; do
        [ -n "$name" ] || continue
        if ! grep -qxF -- "$name" <<<"$listed"; then
            echo "mutants: no longer there: $name" >&2
            gone=$((gone + 1))
            continue
        fi
        # shellcheck disable=SC2016 # a sed expression, not shell
        args+=(--re "^$(printf '%s' "$name" | sed 's/[][\.*^$(){}+?|]/\\&/g')\$")
    done <<<"$names"
    echo "mutants: running $((${#args[@]} / 2)) mutants ($gone no longer there)" >&2
    [ "${#args[@]}" -gt 0 ] || return 0
    nice -n 10 cargo mutants --jobs "${JOBS:-2}" --output "$out" --no-shuffle "${args[@]}" "$@"
}

if [ "$shard" = rerun ]; then
    if [ -n "${1:-}" ] && [ "${1#-}" = "$1" ]; then
        names="$(cat "$1")"
        shift
    else
        names="$(cat mutants.out/shard-*/mutants.out/missed.txt 2>/dev/null || true)"
    fi
    run_names "mutants.out/rerun-$(date -u +%Y%m%dT%H%M)" "$names" "$@"
    exit
fi
if [ "$shard" = unmeasured ]; then
    names="$(python3 tests/mutation/mutants_report.py --unmeasured \
        --list <(cargo mutants --list) mutants.out)"
    run_names "mutants.out/rerun-$(date -u +%Y%m%dT%H%M)" "$names" "$@"
    exit
fi

k="${shard%/*}"
n="${shard#*/}"
case "$k" in
*-*)
    # Shards K to M dealt as --sharding round-robin deals them (the i-th
    # listed mutant, from 0, to shard i mod N), tested in one run, then
    # each outcome filed under its own shard.
    first="${k%-*}" last="${k#*-}"
    listed="$(cargo mutants --list)"
    names="$(awk -v n="$n" -v a="$first" -v b="$last" \
        '{ s = (NR - 1) % n + 1 } s >= a && s <= b' <<<"$listed")"
    out="mutants.out/shards-$first-$last-of-$n"
    rc=0
    run_names "$out" "$names" "$@" || rc=$?
    [ -f "$out/mutants.out/caught.txt" ] || exit "$rc"
    for kind in caught missed timeout unviable; do
        for s in $(seq "$first" "$last"); do
            mkdir -p "mutants.out/shard-$s-of-$n/mutants.out"
            awk -v n="$n" -v s="$s" 'NR == FNR { shard[$0] = (FNR - 1) % n + 1; next }
                shard[$0] == s' <(printf '%s\n' "$listed") "$out/mutants.out/$kind.txt" \
                >"mutants.out/shard-$s-of-$n/mutants.out/$kind.txt" 2>/dev/null || true
        done
    done
    exit "$rc"
    ;;
esac
out="mutants.out/shard-$k-of-$n"
mkdir -p "$out"
# cargo-mutants numbers shards from 0.
exec nice -n 10 cargo mutants --shard "$((k - 1))/$n" --jobs "${JOBS:-2}" \
    --sharding round-robin --output "$out" --no-shuffle "$@"
