#!/usr/bin/env python3
"""Adds up the cargo-mutants shards that scripts/mutants.sh left in
mutants.out/ and prints the score and the surviving mutants, per file.

    .venv/bin/python tests/mutation/mutants_report.py [mutants.out]
    .venv/bin/python tests/mutation/mutants_report.py --list FILE [--unmeasured] [mutants.out]

The score is the share of viable mutants the in-process tests catch: a
mutant that makes a test fail or hang (cargo-mutants' "timeout") is
caught; one that does not compile ("unviable") is not counted. Each line
of a shard's missed.txt, caught.txt, timeout.txt and unviable.txt is one
mutant, "FILE:LINE:COL: replace ... with ...".

When `scripts/mutants.sh rerun` has run (mutants.out/rerun-*/), the
shards' missed mutants that a re-run caught are counted as caught too, in
a second score: the shards as they would be with the tests of the re-runs.

Shards run on different days deal out the mutants of different code, and
an edit early in the list moves every later mutant to the next shard. So
with --list (today's `cargo mutants --list`), the score is over that list
instead: each mutant counts with the outcome of the newest run that tested
it, shard or re-run, and the ones no run tested are counted apart;
--unmeasured prints just those, for `scripts/mutants.sh rerun`.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

KINDS = ("caught", "timeout", "missed", "unviable")


def shards(root: Path) -> list[Path]:
    """Every finished shard's output directory under root."""
    return sorted(p.parent for p in root.glob("shard-*/mutants.out/caught.txt"))


def read(shard: Path) -> dict[str, list[str]]:
    return {
        kind: [line for line in (shard / f"{kind}.txt").read_text().splitlines() if line]
        if (shard / f"{kind}.txt").exists()
        else []
        for kind in KINDS
    }


def runs(root: Path) -> list[Path]:
    """Every run's output directory under root (shards, ranges of shards
    and re-runs), oldest first."""
    found = [p.parent for p in root.glob("*/mutants.out/outcomes.json")]
    return sorted(found, key=lambda d: (d / "outcomes.json").stat().st_mtime)


def latest(root: Path, listed: list[str]) -> dict[str, str | None]:
    """Each listed mutant's outcome in the newest run that tested it."""
    outcome: dict[str, str | None] = dict.fromkeys(listed)
    for run in runs(root):
        for kind, lines in read(run).items():
            for line in lines:
                if line in outcome:
                    outcome[line] = kind
    return outcome


def over_list(root: Path, listed: list[str], unmeasured_only: bool) -> int:
    outcome = latest(root, listed)
    unmeasured = [m for m, kind in outcome.items() if kind is None]
    if unmeasured_only:
        print("\n".join(unmeasured))
        return 0
    print(f"listed    {len(listed):5}")
    print_counts(collections.Counter(outcome.values()), untested=len(unmeasured))
    print_missed([m for m, kind in outcome.items() if kind == "missed"])
    return 0


def over_shards(root: Path) -> int:
    found = shards(root)
    if not found:
        print(f"mutants_report: no finished shard under {root}/", file=sys.stderr)
        return 2
    total = {kind: [] for kind in KINDS}
    for shard in found:
        for kind, lines in read(shard).items():
            total[kind] += lines
    print(f"shards: {', '.join(p.parent.name for p in found)}")
    caught, viable = print_counts({kind: len(lines) for kind, lines in total.items()})
    reruns = [p.parent for p in root.glob("rerun*/mutants.out/caught.txt")]
    if reruns and viable:
        now_caught = set()
        for rerun in reruns:
            again = read(rerun)
            now_caught |= set(again["caught"]) | set(again["timeout"])
        fixed = [m for m in total["missed"] if m in now_caught]
        total["missed"] = [m for m in total["missed"] if m not in now_caught]
        print(f"re-run   {len(fixed)} of the missed caught now")
        print(f"score     {caught + len(fixed)}/{viable} with the re-run's tests = "
              f"{100 * (caught + len(fixed)) / viable:.1f}%")
    print_missed(total["missed"])
    return 0


def print_counts(count: dict[str, int], untested: int | None = None) -> tuple[int, int]:
    """Prints each kind's count and the score; returns (caught, viable)."""
    for kind in KINDS:
        print(f"{kind:9} {count.get(kind, 0):5}")
    if untested is not None:
        print(f"untested  {untested:5}")
    caught = count.get("caught", 0) + count.get("timeout", 0)
    viable = caught + count.get("missed", 0)
    if viable:
        print(f"score     {caught}/{viable} viable mutants caught = {100 * caught / viable:.1f}%")
    return caught, viable


def print_missed(missed: list[str]) -> None:
    per_file = collections.Counter(line.split(":", 1)[0] for line in missed)
    print("\nmissed, per file:")
    for path, count in per_file.most_common():
        print(f"  {count:4}  {path}")
    print("\nmissed:")
    for line in sorted(missed, key=sort_key):
        print(f"  {line}")


def main() -> int:
    ap = argparse.ArgumentParser(description="The score of the cargo-mutants runs.")
    ap.add_argument("root", nargs="?", default="mutants.out", type=Path)
    ap.add_argument("--list", type=Path, metavar="FILE",
                    help="today's `cargo mutants --list`: score it, each mutant by its newest run")
    ap.add_argument("--unmeasured", action="store_true",
                    help="with --list: print only the mutants no run tested")
    args = ap.parse_args()
    if args.list is None:
        return over_shards(args.root)
    listed = [line for line in args.list.read_text().splitlines() if line]
    return over_list(args.root, listed, args.unmeasured)


def sort_key(line: str) -> tuple[str, int]:
    path, _, rest = line.partition(":")
    number = rest.split(":", 1)[0]
    return path, int(number) if number.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())
