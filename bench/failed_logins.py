"""The failed-login bookkeeping under a flood: 100,000 failed logins with
6 KB login names, each from an address of its own (127.0.0.0/8), so every
one adds an entry to the network and the user tables. Prints popgate's
resident memory (VmRSS, and the peak VmHWM) before, midway and after; the
target is below 64 MiB.

    .venv/bin/python bench/failed_logins.py [--count N] [--name-bytes B]

It starts a throwaway Dovecot and popgate (with the penalty at its
defaults) through the end-to-end tests' launchers, and leaves nothing
behind.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from dovecot import Dovecot  # noqa: E402
from popgate import Popgate  # noqa: E402

TARGET_MIB = 64
WORKERS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail_once(port: int, source: str, name: str) -> bytes:
    """One failed login from `source`: the answer to PASS."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"USER {name}\r\n".encode())
        f.readline()
        s.sendall(b"PASS wrong\r\n")
        return f.readline()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--name-bytes", type=int, default=6 * 1024)
    args = ap.parse_args()
    first = int(ipaddress.ip_address("127.1.0.0"))
    limits = "  connections_per_ip: 0\n"  # the penalty at its defaults
    with Dovecot() as dv, Popgate(dv.imap_port, limits=limits, log_level="warn", port=free_port()) as pg:
        before = pg.status_kib("VmRSS")
        done, refused, odd = [0], [0], []
        lock = threading.Lock()
        readings = {}

        def work(k: int) -> None:
            for i in range(k, args.count, WORKERS):
                source = str(ipaddress.ip_address(first + i))
                name = f"{i:08d}-" + "x" * (args.name_bytes - 9)
                answer = fail_once(pg.port, source, name)
                with lock:
                    done[0] += 1
                    if answer.startswith(b"-ERR [AUTH]"):
                        refused[0] += 1
                    elif len(odd) < 5:
                        odd.append(answer)
                    if done[0] == args.count // 2:
                        readings["midway"] = pg.status_kib("VmRSS")

        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(k,)) for k in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        after, peak = pg.status_kib("VmRSS"), pg.status_kib("VmHWM")
    print(f"failed logins: {refused[0]} of {done[0]} answered -ERR [AUTH] in {took:.0f} s"
          f" ({done[0] / took:.0f}/s); names of {args.name_bytes} bytes; other answers: {odd}")
    print(f"popgate VmRSS: {before / 1024:.1f} MiB at start, {readings.get('midway', 0) / 1024:.1f} MiB"
          f" midway, {after / 1024:.1f} MiB after; peak (VmHWM) {peak / 1024:.1f} MiB;"
          f" target below {TARGET_MIB} MiB")
    ok = peak < TARGET_MIB * 1024 and refused[0] == done[0] == args.count
    print("met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
