"""Where a session's CPU goes, machine-wide: e or j's sessions against
native Dovecot POP3 and through popgate, each side alone in its own window,
sampled on every core by ``perf record -a`` and summed by process name.

    .venv/bin/python bench/session_cpu.py            # j: POP3S, IMAPS behind popgate
    .venv/bin/python bench/session_cpu.py --plain    # e: plaintext on both links

Prints CPU milliseconds per session for each process name (Dovecot's
``pop3-login`` and ``pop3`` for native, ``imap-login`` and ``imap`` behind
popgate, popgate's ``tokio-rt-worker``, the client's ``python``), so the
gap between the sides can be laid to the process that adds it; idle time
(``swapper``) is shown but left out of the total.  Beside native and
popgate: for j, popgate with a plaintext upstream (j-plain), and nginx's
mail proxy when it is installed (plaintext POP3 to Dovecot; its auth_http
responder is a ``python`` too).  Dovecot runs in its default login mode,
as in bench/run.py.  Needs root (perf -a).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(1, str(REPO / "tests" / "e2e"))

import nginx_proxy  # noqa: E402
import tls_workloads as tw  # noqa: E402
from corpus import small_messages  # noqa: E402
from dovecot import Dovecot  # noqa: E402
from workloads import concurrent_sessions, start_popgate  # noqa: E402

PASSWORD = "bench-pw"
CLIENTS = 50
SHOWN = 12


def per_process(run, data: str) -> tuple[float, collections.Counter]:
    """``run()``'s wall time, and CPU milliseconds by process name while it
    ran, plus the half second perf is given to start (idle, in practice)."""
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "1000",
                             "-o", data], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf's start-up is not the workload's
    t0 = time.monotonic()
    try:
        run()
    finally:
        wall = time.monotonic() - t0
        perf.send_signal(2)
        perf.wait()
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "comm",
                             "-F", "sample,comm", "-g", "none"],
                            capture_output=True, text=True, check=True).stdout
    ms = collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s+(\d+)\s+(\S.*?)\s*$", line)
        if m:
            ms[m.group(2)] += int(m.group(1))  # one sample per ms at 1000 Hz
    return wall, ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plain", action="store_true", help="e: no TLS on either link")
    ap.add_argument("--sessions", type=int, default=1500, help="per window (default 1500)")
    ap.add_argument("--rounds", type=int, default=2, help="windows per side (default 2)")
    ap.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    ap.add_argument("--popgate-bin", default=str(REPO / "target" / "release" / "popgate"))
    a = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("session_cpu.py: needs perf (Debian's linux-perf; "
                 "scripts/install-bench-deps.sh installs it)")

    pki = None if a.plain else tw.make_pki()
    extra, imaps, pop3s = ("", 0, 0) if pki is None else tw.dovecot_conf(pki)
    dv = Dovecot(users={"sess": PASSWORD}, extra_conf=extra)
    started = []
    try:
        dv.deliver_many("sess", small_messages(10), flags="S")
        ng = None
        if not a.no_nginx and not nginx_proxy.missing():
            ng = nginx_proxy.NginxMail.with_pki(dv.pop3_port, pki)
            started.append(ng)
        if pki is None:
            pg = start_popgate(a.popgate_bin, dv.imap_port)
            started.append(pg)
            ports = {"native": dv.pop3_port, "popgate": pg.port}

            def sessions(port: int, total: int) -> None:
                concurrent_sessions(port, "sess", PASSWORD, CLIENTS, total)
        else:
            pg = tw.start_tls_popgate(a.popgate_bin, imaps, pki, log_level="warn")
            plain_up = tw.start_tls_popgate(a.popgate_bin, dv.imap_port, pki,
                                            log_level="warn", plain_upstream=True)
            started += [pg, plain_up]
            ports = {"native": pop3s, "popgate": pg.port, "popgate, plain IMAP": plain_up.port}
            ctx = tw.client_context(pki)

            def sessions(port: int, total: int) -> None:
                tw.tls_concurrent_sessions(port, "sess", PASSWORD, CLIENTS, total, ctx)

        if ng is not None:
            ports["nginx"] = ng.tls_port if pki else ng.port
        for port in ports.values():
            sessions(port, 200)  # warm every side up
        ms = {side: collections.Counter() for side in ports}
        wall = collections.Counter()
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(a.rounds):
                for side, port in ports.items():
                    w, counts = per_process(lambda p=port: sessions(p, a.sessions),
                                            os.path.join(tmp, "perf.data"))
                    wall[side] += w
                    ms[side] += counts
        total = a.sessions * a.rounds
        print(f"{'j (POP3S, IMAPS behind popgate)' if pki else 'e (plaintext)'}: "
              f"{total} sessions per side, {CLIENTS} clients")
        for side, counts in ms.items():
            busy = sum(v for k, v in counts.items() if k != "swapper") / total
            print(f"{side}: {total / wall[side]:.1f} sessions/s, "
                  f"{busy:.2f} ms of CPU per session")
            for name, v in counts.most_common(SHOWN):
                print(f"  {name:18} {v / total:7.3f} ms")
    finally:
        for proc in started:
            proc.cleanup()
        dv.stop()
        if pki is not None:
            pki.cleanup()


if __name__ == "__main__":
    main()
