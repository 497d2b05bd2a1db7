"""popgate's own CPU time for the same RETR workloads, two binaries side by
side against one Dovecot, rounds interleaved: for a change whose cost is
too small to see in wall-clock throughput on a shared machine (the wiping
allocator, say).  Build the second binary from a patched tree first.

    .venv/bin/python bench/compare_binaries.py OLD_BINARY NEW_BINARY

CPU comes from /proc in clock ticks (10 ms), so each sample repeats its
workload ten times."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(1, str(REPO / "tests" / "e2e"))

from corpus import attachment_message, attachment_messages, small_message  # noqa: E402
from dovecot import Dovecot  # noqa: E402
from workloads import big_retr, retr_all, start_popgate  # noqa: E402

PASSWORD = "bench-pw"
ROUNDS, REPEAT = 8, 10


def main(old: str, new: str) -> None:
    dv = Dovecot(users={"giant": PASSWORD, "big": PASSWORD})
    try:
        dv.deliver_many("giant", [small_message(1), attachment_message(2, 50_000_000)], flags="S")
        dv.deliver_many("big", attachment_messages(300, 100_000), flags="S")
        pgs = {"old": start_popgate(old, dv.imap_port), "new": start_popgate(new, dv.imap_port)}
        workloads = {
            "RETR of a 50 MB message": lambda port: big_retr(port, "giant", PASSWORD, None),
            "RETR of 300 messages of 100 KB": lambda port: retr_all(port, "big", PASSWORD, 300, 1),
        }
        cpu = {(side, w): [] for side in pgs for w in workloads}
        try:
            for _ in range(ROUNDS):
                for side, pg in pgs.items():
                    for w, run in workloads.items():
                        c0 = pg.cpu_seconds()
                        for _ in range(REPEAT):
                            run(pg.port)
                        cpu[(side, w)].append(pg.cpu_seconds() - c0)
        finally:
            for pg in pgs.values():
                pg.cleanup()
        for w in workloads:
            o, n = (statistics.median(cpu[(side, w)]) for side in ("old", "new"))
            print(f"{w}, x{REPEAT}: popgate CPU {o:.3f} s old, {n:.3f} s new "
                  f"(median of {ROUNDS}): new/old {n / o:.3f}")
    finally:
        dv.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
