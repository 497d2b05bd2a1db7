#!/usr/bin/env python3
"""A throwaway Dovecot with a demo mailbox, for scripts/demo.sh.

Starts Dovecot (IMAP on a free 127.0.0.1 port) through the end-to-end test
harness, creates user "demo" with password "demo", delivers a few messages,
prints the IMAP port and waits until SIGINT or SIGTERM, then stops Dovecot
and removes its files.  Must run as root (Dovecot's test instance needs it).

    python3 scripts/demo_dovecot.py [--port-file FILE] [--user demo] [--password demo]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dovecot import Dovecot  # noqa: E402


def demo_messages(user: str) -> list[bytes]:
    to = f"{user}@example.test"
    msgs = [
        ("Welcome to popgate",
         "Hello!\n\n"
         "You are reading this through POP3, but it lives in an IMAP mailbox.\n"
         "popgate translates every POP3 command into IMAP on the fly.\n"),
        ("How deleting works",
         "When your client deletes a message (DELE), nothing happens upstream\n"
         "until it says QUIT. Then the message is flagged and expunged over\n"
         "IMAP. If the connection drops before QUIT, the mailbox is untouched.\n"),
        ("Unique IDs are stable",
         "UIDL values are built from the IMAP UID and UIDVALIDITY, in the\n"
         "same format as Dovecot's own POP3 server, so clients that used\n"
         "Dovecot's POP3 before do not download everything again.\n"),
        ("Grüße aus dem Postfach",
         "8-bit text passes through untouched: Grüße, café, 日本語, 📬.\n"),
        ("Dot-stuffing test",
         "The next line is a single dot; a POP3 client must still see it:\n"
         ".\n"
         "..and this line starts with two dots.\n"),
    ]
    out = []
    for i, (subject, body) in enumerate(msgs, start=1):
        head = (
            f"From: popgate demo <demo-sender@example.test>\n"
            f"To: {to}\n"
            f"Subject: {subject}\n"
            f"Date: Thu, 05 Mar 2026 09:{i:02d}:00 +0000\n"
            f"Message-ID: <demo-{i}@example.test>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n"
        )
        out.append((head + "\n" + body).encode("utf-8"))
    return out


def die_with_parent() -> None:
    """Get SIGTERM when the shell that started us goes away."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", help="write the IMAP port to this file")
    ap.add_argument("--user", default="demo")
    ap.add_argument("--password", default="demo")
    args = ap.parse_args()

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    die_with_parent()

    dv = Dovecot(users={args.user: args.password})
    try:
        for raw in demo_messages(args.user):
            dv.deliver(args.user, raw)
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{dv.imap_port}\n")
            os.replace(tmp, args.port_file)
        print(f"IMAP_PORT={dv.imap_port}", flush=True)
        print(f"demo Dovecot: IMAP on {dv.host}:{dv.imap_port}, user "
              f"{args.user!r}, log {dv.log_path}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if not dv.running():
                print("demo Dovecot exited unexpectedly:\n" + dv.log_text()[-2000:],
                      file=sys.stderr)
                return 1
    finally:
        dv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
