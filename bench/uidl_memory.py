"""u: what the UIDL memory costs, on the big mailbox of f.  The reference
is popgate itself without a ``state`` section, side by side in the same
run: the warm listing with the store on and off, the store file's size per
message, the first login that fingerprints every message, the re-match
after a UIDVALIDITY change, and an idle session's memory."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from workloads import Sample, idle_sessions, listing, start_popgate

# The file inside state.path (src/state/embedded.rs).
STORE_FILE = "popgate-state.sqlite"


class StoreOn:
    """A popgate with the UIDL memory in a fresh directory of its own."""

    def __init__(self, binary: str, upstream_port: int, log_level: str,
                 max_connections: int = 1000) -> None:
        self.dir = tempfile.mkdtemp(prefix="popgate-bench-state-")
        self.pg = start_popgate(binary, upstream_port, log_level=log_level,
                                max_connections=max_connections,
                                extra=f"state:\n  path: {self.dir}\n")

    def file_bytes(self) -> int:
        return os.path.getsize(os.path.join(self.dir, STORE_FILE))

    def cleanup(self) -> None:
        self.pg.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_store(runner, log, dv, pg_off, user: str, password: str, n: int) -> None:
    """Fills runner.samples["u-warm"] (native = store off, popgate = store
    on) and runner.u_result with the one-off figures."""
    rounds = runner.args.rounds
    on = StoreOn(runner.binary, dv.imap_port, runner.args.popgate_log_level)
    try:
        log(f"u: the UIDL memory on {n:,} messages")
        first = listing(on.pg.port, user, password, n)
        first_file = on.file_bytes()
        listing(pg_off.port, user, password, n)      # untimed warm-up
        listing(on.pg.port, user, password, n)
        res: dict[str, list[Sample]] = {"native": [], "popgate": []}
        for r in range(rounds):
            res["native"].append(listing(pg_off.port, user, password, n))
            c0 = on.pg.cpu_seconds()
            s = listing(on.pg.port, user, password, n)
            s.server_cpu = on.pg.cpu_seconds() - c0
            res["popgate"].append(s)
            log(f"  u round {r + 1}/{rounds}: store off {res['native'][-1].value:.3f} s, "
                f"on {res['popgate'][-1].value:.3f} s")
        runner.samples["u-warm"] = res
        dv.bump_uid_validity(user)
        time.sleep(0.5)
        rematch = listing(on.pg.port, user, password, n)
        runner.u_result = {
            "messages": n,
            "first_s": first.value,
            "first_file_bytes": first_file,
            "rematch_s": rematch.value,
            "file_bytes": on.file_bytes(),
        }
        log(f"  u: first login {first.value:.2f} s, re-match {rematch.value:.2f} s, "
            f"store {on.file_bytes() / n:.1f} B/msg")
    finally:
        on.cleanup()


def idle_with_store(runner, dv, user: str, password: str, sessions: int, need: int) -> dict:
    """i's idle sessions again, with the store on."""
    on = StoreOn(runner.binary, dv.imap_port, runner.args.popgate_log_level,
                 max_connections=need + 100)
    try:
        return idle_sessions(on.pg, user, password, sessions)
    finally:
        on.cleanup()
