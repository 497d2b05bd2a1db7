#!/usr/bin/env python3
"""popgate against Dovecot's own POP3 on the same mailboxes.

    python3 bench/run.py            # the default run (10-15 minutes)
    python3 bench/run.py --quick    # a smoke run (about 2 minutes)
    python3 bench/run.py --help     # sizes, rounds, selection

Starts a throwaway Dovecot (the end-to-end test harness's), puts popgate in
front of its IMAP port, runs every workload against Dovecot's POP3 port and
popgate's port in interleaved rounds, prints the table and writes
bench/RESULTS.md and bench/ratios.png.  See bench/README.md for the method.
Must run as root (the Dovecot test instance needs it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO / "tests" / "e2e"))

import many_connections  # noqa: E402
import nginx_proxy  # noqa: E402
import report  # noqa: E402
import results  # noqa: E402
import table  # noqa: E402
import shipped_defaults  # noqa: E402
import state_store  # noqa: E402
import tls_workloads  # noqa: E402
import uidl_memory  # noqa: E402
from build import ensure_binary  # noqa: E402
from corpus import (  # noqa: E402
    attachment_message, attachment_messages, small_message, small_messages,
)
from popgate import Popgate  # noqa: E402
from workloads import (  # noqa: E402
    Sample, big_retr, concurrent_sessions, idle_sessions, listing, retr_all,
    seq_sessions, start_popgate, top_all,
)

ALL = "abcdefghijknurx"
DEFAULT = "abcdefghijknur"   # x (10,000 connections) only when asked for
PASSWORD = "bench-pw"

# Sizes: (default, --quick).
PROFILES = {
    "rounds":            (5, 3),
    "retr_msgs":         (1000, 100),
    "retr_size":         (100_000, 100_000),
    "depth":             (32, 32),
    "top_msgs":          (2000, 500),
    "seq_sessions":      (100, 20),
    "clients":           (50, 50),
    "conc_sessions":     (300, 100),
    "listing_msgs":      (100_000, 10_000),
    "big_mb":            (50, 10),
    "idle_sessions":     (5000, 500),
    "idle_msgs":         (10, 10),
    "idle_big_msgs":     (10_000, 10_000),
    "idle_big_sessions": (500, 100),
    "x_idle":            (9000, 9000),
    "x_sessions":        (1000, 1000),
    "x_downloaders":     (50, 50),
    "x_dl_msgs":         (20, 20),
    "x_duration":        (600.0, 60.0),
}



def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark popgate against Dovecot's own POP3.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and 3 rounds: a smoke run of about 2 minutes")
    p.add_argument("--only", default=DEFAULT, metavar="LETTERS",
                   help="workloads to run, e.g. 'abc' or 'a,f,i'; x (10,000 connections) "
                   "runs only when named here")
    p.add_argument("--rounds", type=int, help="interleaved rounds per workload "
                   "(default 5, 3 with --quick)")
    p.add_argument("--retr-msgs", type=int, help="a, b: messages in the mailbox (default 1000; 100 quick)")
    p.add_argument("--retr-size", type=int, help="a, b: size of each message in octets (default 100000)")
    p.add_argument("--depth", type=int, help="b: RETR commands in flight (default 32)")
    p.add_argument("--top-msgs", type=int, help="c: messages for TOP n 0 (default 2000; 500 quick)")
    p.add_argument("--seq-sessions", type=int, help="d: sequential sessions per measurement (default 100; 20 quick)")
    p.add_argument("--clients", type=int, help="e: concurrent clients (default 50)")
    p.add_argument("--conc-sessions", type=int, help="e: sessions per measurement (default 300; 100 quick)")
    p.add_argument("--listing-msgs", type=int, help="f: messages in the big mailbox (default 100000; 10000 quick)")
    p.add_argument("--big-mb", type=int, help="g: size of the big message in MB (default 50; 10 quick)")
    p.add_argument("--idle-sessions", type=int, help="i: idle sessions (default 5000; 500 quick)")
    p.add_argument("--idle-msgs", type=int, help="i: messages in their mailbox (default 10)")
    p.add_argument("--idle-big-msgs", type=int, help="i: messages in the mailbox for the per-message cost (default 10000)")
    p.add_argument("--idle-big-sessions", type=int, help="i: idle sessions on that mailbox (default 500; 100 quick)")
    p.add_argument("--x-duration", type=float, help="x: seconds the downloaders run while "
                   "the connections are held (default 600; 60 quick)")
    p.add_argument("--x-idle", type=int, help="x: connections idle before login (default 9000)")
    p.add_argument("--x-sessions", type=int, help="x: idle logged-in sessions (default 1000)")
    p.add_argument("--x-downloaders", type=int, help="x: clients downloading in a loop (default 50)")
    p.add_argument("--x-dl-msgs", type=int, help="x: messages the downloaders fetch per session, "
                   "of --retr-size octets (default 20)")
    p.add_argument("--dovecot-login", choices=("security", "performance"), default="security",
                   help="Dovecot's login services for a-g: 'security' is the test harness's "
                   "configuration (Dovecot's default: a new login process per connection); "
                   "'performance' reuses login processes (service_count = 0)")
    p.add_argument("--no-embedded", action="store_true",
                   help="r: leave out the reference popgate on the embedded store")
    p.add_argument("--redis-appendfsync", choices=("always", "everysec", "no"), default="always",
                   help="r: redis-server's appendfsync ('always' syncs every write before "
                   "answering, as a production store would)")
    p.add_argument("--no-nginx", action="store_true",
                   help="d, e, h, j: leave out nginx's mail proxy (the second reference)")
    p.add_argument("--popgate-bin", help="use this popgate binary instead of building target/release/popgate")
    p.add_argument("--rev", help="benchmark popgate as of this git revision (e.g. HEAD, a tag): "
                   "its tree is exported to bench/.build/ and built there, away from the "
                   "working tree and target/")
    p.add_argument("--popgate-log-level", default="warn", help="popgate's log.level")
    p.add_argument("--results", default=str(BENCH / "RESULTS.md"), help="results file to write")
    p.add_argument("--plot", default=str(BENCH / "ratios.png"), help="plot to write")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    prof = 1 if args.quick else 0
    for key, vals in PROFILES.items():
        if getattr(args, key) is None:
            setattr(args, key, vals[prof])
    args.only = "".join(ch for ch in args.only.lower() if ch in ALL)
    if not args.only:
        p.error("--only selects no workload (letters: a b c d e f g h i j k u r x)")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


# ------------------------------------------------------------------ setup


def ensure_root_and_dovecot() -> None:
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (the throwaway Dovecot instance needs it)")
    if shutil.which("dovecot") is None:
        deps = REPO / "scripts" / "install-deps.sh"
        if deps.exists():
            log("Dovecot missing: running scripts/install-deps.sh")
            subprocess.run(["bash", str(deps)], check=True)
        if shutil.which("dovecot") is None:
            sys.exit("bench: dovecot is not installed (Debian: apt-get install dovecot-imapd dovecot-pop3d)")


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def login_conf(mode: str) -> str:
    if mode != "performance":
        return ""
    n = max(2, os.cpu_count() or 2)
    return "".join(
        f"service {svc} {{\n  service_count = 0\n  process_min_avail = {n}\n}}\n"
        for svc in ("pop3-login", "imap-login"))


def doveconf(dv, *args: str) -> str:
    return subprocess.run(["doveconf", "-c", dv.conf_path, *args], capture_output=True,
                          text=True).stdout.strip()


# ------------------------------------------------------------- measuring


class Runner:
    def __init__(self, args: argparse.Namespace, binary: str) -> None:
        self.args = args
        self.binary = binary
        self.samples: dict[str, dict[str, list[Sample]]] = {}
        self.notes: list[str] = []
        self.settings: list[str] = []
        self.i_result: dict = {}
        self.u_result: dict = {}
        self.r_result: dict = {}
        self.x_result: dict = {}
        self.n_result: dict = {}

    def interleave(self, key: str, native, popgate, pg: Popgate,
                   warm_native=None, warm_popgate=None, nginx=None, ng=None) -> None:
        """Runs native(), popgate(), native(), popgate() ... for the rounds,
        after one untimed warm-up of each (warm_native/warm_popgate when
        given, else the measurement itself).  popgate's CPU time is recorded
        with each of its samples.  With ``nginx``, a third side in every
        round (native, popgate, nginx), warmed up by its measurement; its
        samples carry nginx's CPU time (``ng``: the NginxMail)."""
        def pg_run() -> Sample:
            c0 = pg.cpu_seconds()
            s = popgate()
            s.server_cpu = pg.cpu_seconds() - c0
            return s

        def ng_run() -> Sample:
            c0 = ng.cpu_seconds() if ng else 0.0
            s = nginx()
            if ng:
                s.extra["nginx_cpu"] = ng.cpu_seconds() - c0
            return s

        (warm_native or native)()
        (warm_popgate or popgate)()
        if nginx:
            nginx()
        res: dict[str, list[Sample]] = {"native": [], "popgate": []}
        if nginx:
            res["nginx"] = []
        for r in range(self.args.rounds):
            res["native"].append(native())
            res["popgate"].append(pg_run())
            if nginx:
                res["nginx"].append(ng_run())
            log(f"  {key} round {r + 1}/{self.args.rounds}: native "
                f"{report.fmt(res['native'][-1].value)}, popgate {report.fmt(res['popgate'][-1].value)}"
                + (f", nginx {report.fmt(res['nginx'][-1].value)}" if nginx else ""))
        self.samples[key] = res

    def main_dovecot(self) -> None:
        from dovecot import Dovecot

        a, only = self.args, self.args.only
        users = {name: PASSWORD for name in ("big", "small", "sess", "giant", "huge")}
        if "n" in only:
            users.update({name: PASSWORD for name in shipped_defaults.users(a.clients)})
        extra = login_extra = login_conf(a.dovecot_login)
        pki = None
        if set(only) & set(tls_workloads.LETTERS):
            # POP3S and IMAPS ports on the same Dovecot (its plaintext
            # ports are unchanged), for h, j, k.
            pki = tls_workloads.make_pki()
            tls_extra, imaps, pop3s = tls_workloads.dovecot_conf(pki)
            extra += tls_extra
        t0 = time.monotonic()
        try:
            dv = Dovecot(users=users, extra_conf=extra)
        except BaseException:
            if pki:
                pki.cleanup()
            raise
        if pki:
            dv.imaps_port, dv.pop3s_port = imaps, pop3s
        ng = None
        try:
            self.settings.append(
                f"Dovecot for a-g: the test harness's configuration (tests/e2e/dovecot.py), "
                f"login services in {a.dovecot_login} mode"
                + (" (service_count = 0, process_min_avail = nproc)" if login_extra else
                   " (Dovecot's default: one login process per connection)")
                + "; mail stored as Maildir on "
                + ("tmpfs" if dv.dir.startswith("/dev/shm") else "disk"))
            # All messages are delivered \Seen, so that RETR changes nothing
            # from one round to the next on either side.
            if set(only) & set("abk"):
                dv.deliver_many("big", attachment_messages(a.retr_msgs, a.retr_size), flags="S")
            if "c" in only:
                dv.deliver_many("small", small_messages(a.top_msgs), flags="S")
            if set(only) & set("dehjnr"):
                dv.deliver_many("sess", small_messages(10), flags="S")
            if "n" in only:
                for name in shipped_defaults.users(a.clients):
                    dv.deliver_many(name, small_messages(10), flags="S")
            if "g" in only:
                dv.deliver_many("giant", [small_message(1),
                                          attachment_message(2, a.big_mb * 1_000_000)], flags="S")
            if "f" in only or "u" in only or "r" in only:
                log(f"writing the {a.listing_msgs:,}-message Maildir for f, u and r")
                dv.deliver_many("huge", small_messages(a.listing_msgs), flags="S")
            log(f"Dovecot ready with test mail in {time.monotonic() - t0:.1f} s")
            ng = self.start_nginx(dv, pki)
            pg = start_popgate(self.binary, dv.imap_port, log_level=a.popgate_log_level)
            try:
                self.run_main(dv, pg, ng)
                if pki:
                    tls_workloads.run(self, log, self.binary, dv, pki, ng, "sess", "big",
                                      PASSWORD)
            finally:
                pg.cleanup()
        finally:
            if ng:
                try:
                    ng.check_no_secret(PASSWORD)
                finally:
                    ng.cleanup()
            dv.stop()
            if pki:
                pki.cleanup()

    def start_nginx(self, dv, pki) -> "nginx_proxy.NginxMail | None":
        """nginx's mail proxy for d, e, h, j, unless left out or missing."""
        a = self.args
        if a.no_nginx or not set(a.only) & set("dehj"):
            return None
        why = nginx_proxy.missing()
        if why:
            self.notes.append(f"nginx: left out, {why}")
            log(f"nginx: left out, {why}")
            return None
        ng = nginx_proxy.NginxMail.with_pki(dv.pop3_port, pki)
        self.settings.append(
            f"nginx {ng.version()} (Debian's nginx and libnginx-mod-mail): mail proxy, "
            "worker_processes auto, pop3_auth plain, auth_http to bench/nginx_auth.py "
            "(a process of its own, answering Dovecot's POP3 port for every login; "
            "Dovecot checks the password when nginx logs in with USER and PASS); "
            "POP3S with the same certificate type as popgate's (EC P-256), TLS 1.2 and 1.3 "
            "(nginx 1.22's default stops at 1.2)")
        return ng

    def run_main(self, dv, pg: Popgate, ng=None) -> None:
        a, only = self.args, self.args.only
        N, P = dv.pop3_port, pg.port
        X = ng.port if ng else 0
        pw = PASSWORD
        if "a" in only:
            log(f"a: RETR of {a.retr_msgs} messages of {a.retr_size:,} octets, one at a time")
            self.interleave("a", lambda: retr_all(N, "big", pw, a.retr_msgs, 1),
                            lambda: retr_all(P, "big", pw, a.retr_msgs, 1), pg)
        if "b" in only:
            log(f"b: the same with {a.depth} RETR in flight")
            self.interleave("b", lambda: retr_all(N, "big", pw, a.retr_msgs, a.depth),
                            lambda: retr_all(P, "big", pw, a.retr_msgs, a.depth), pg)
        if "c" in only:
            log(f"c: TOP n 0 over {a.top_msgs} messages")
            self.interleave("c", lambda: top_all(N, "small", pw, a.top_msgs),
                            lambda: top_all(P, "small", pw, a.top_msgs), pg)
        if "d" in only:
            log(f"d: {a.seq_sessions} sequential sessions USER PASS STAT QUIT")
            self.interleave("d", lambda: seq_sessions(N, "sess", pw, a.seq_sessions),
                            lambda: seq_sessions(P, "sess", pw, a.seq_sessions), pg,
                            lambda: seq_sessions(N, "sess", pw, 5),
                            lambda: seq_sessions(P, "sess", pw, 5),
                            nginx=(lambda: seq_sessions(X, "sess", pw, a.seq_sessions))
                            if X else None, ng=ng)
        if "e" in only:
            log(f"e: {a.conc_sessions} sessions by {a.clients} concurrent clients")

            def e_pg() -> Sample:
                pg.reset_peak()
                s = concurrent_sessions(P, "sess", pw, a.clients, a.conc_sessions)
                s.extra["hwm_kib"] = pg.status_kib("VmHWM")
                return s
            self.interleave("e", lambda: concurrent_sessions(N, "sess", pw, a.clients, a.conc_sessions),
                            e_pg, pg,
                            lambda: concurrent_sessions(N, "sess", pw, a.clients, a.clients),
                            lambda: concurrent_sessions(P, "sess", pw, a.clients, a.clients),
                            nginx=(lambda: concurrent_sessions(X, "sess", pw, a.clients,
                                                               a.conc_sessions))
                            if X else None, ng=ng)
        if "n" in only:
            shipped_defaults.run(self, log, dv, self.binary, "sess", pw)
        if "g" in only:
            log(f"g: RETR of one {a.big_mb} MB message")
            self.interleave("g", lambda: big_retr(N, "giant", pw, None),
                            lambda: big_retr(P, "giant", pw, pg), pg)
        if "f" in only:
            self.run_listing(dv, pg)
        if "r" in only:
            if shutil.which("redis-server") is None:
                self.notes.append("r: skipped, redis-server is not installed "
                                  "(Debian: apt-get install redis-server)")
                log("r: skipped, redis-server is not installed")
            else:
                state_store.run(self, log, dv, pg, "sess", "huge", pw, a.listing_msgs,
                                embedded=not a.no_embedded,
                                appendfsync=a.redis_appendfsync)
        if "u" in only:
            uidl_memory.run_store(self, log, dv, pg, "huge", pw, a.listing_msgs)

    def run_listing(self, dv, pg: Popgate) -> None:
        """f: cold is the first session after every dovecot* file of the
        Maildir (UID list, index, transaction log, cache) was removed:
        Dovecot rescans the Maildir, assigns UIDs and builds its index, as
        for a mailbox just migrated in.  Warm is the same listing two
        sessions later, nothing touched in between (Dovecot writes its main
        index file only in the session after the one that built it)."""
        a = self.args
        n = a.listing_msgs
        md = dv.maildir("huge")
        log(f"f: login, UIDL, LIST on {n:,} messages, cold and warm")

        def clear_index() -> None:
            time.sleep(0.5)   # let the previous session's processes finish
            for name in os.listdir(md):
                if name.startswith("dovecot"):
                    os.unlink(os.path.join(md, name))

        res = {"f-cold": {"native": [], "popgate": []}, "f-warm": {"native": [], "popgate": []}}
        ports = {"native": dv.pop3_port, "popgate": pg.port}
        # Untimed warm-up of both sides.
        listing(ports["native"], "huge", PASSWORD, n)
        listing(ports["popgate"], "huge", PASSWORD, n)
        for r in range(a.rounds):
            for side in ("native", "popgate"):
                c0 = pg.cpu_seconds()
                clear_index()
                cold = listing(ports[side], "huge", PASSWORD, n)
                c1 = pg.cpu_seconds()
                listing(ports[side], "huge", PASSWORD, n)
                c2 = pg.cpu_seconds()
                warm = listing(ports[side], "huge", PASSWORD, n)
                c3 = pg.cpu_seconds()
                if side == "popgate":
                    cold.server_cpu, warm.server_cpu = c1 - c0, c3 - c2
                res["f-cold"][side].append(cold)
                res["f-warm"][side].append(warm)
            log(f"  f round {r + 1}/{a.rounds}: cold native {res['f-cold']['native'][-1].value:.3f} s, "
                f"popgate {res['f-cold']['popgate'][-1].value:.3f} s; warm native "
                f"{res['f-warm']['native'][-1].value:.3f} s, popgate {res['f-warm']['popgate'][-1].value:.3f} s")
        self.samples.update(res)

    def run_idle(self) -> None:
        """i: a Dovecot of its own, configured for thousands of concurrent
        IMAP sessions of one user, and a fresh popgate per measurement."""
        from dovecot import Dovecot

        a = self.args
        nofile = raise_nofile(2 * a.idle_sessions + 1000)
        sessions = a.idle_sessions
        if 2 * sessions + 500 > nofile:
            sessions = max(100, (nofile - 500) // 2)
            self.notes.append(f"i: open-files limit {nofile} allows only {sessions} sessions")
        need = max(sessions, a.idle_big_sessions) + 300
        per_proc = 100
        procs = need // per_proc + 20
        n = max(2, os.cpu_count() or 2)
        extra = (
            f"protocol imap {{\n  mail_max_userip_connections = {2 * need}\n}}\n"
            f"service imap {{\n  service_count = 0\n  client_limit = {per_proc}\n"
            f"  process_limit = {procs}\n}}\n"
            f"service imap-login {{\n  service_count = 0\n  process_min_avail = {n}\n}}\n"
        )
        log(f"i: {sessions} idle sessions ({a.idle_msgs} messages), "
            f"{a.idle_big_sessions} on {a.idle_big_msgs:,} messages")
        dv = Dovecot(users={"idle": PASSWORD, "idlebig": PASSWORD}, extra_conf=extra)
        try:
            userip = int(doveconf(dv, "-f", "protocol=imap", "-h", "mail_max_userip_connections") or 0)
            cl = int(doveconf(dv, "-h", "service/imap/client_limit") or 0)
            pl = int(doveconf(dv, "-h", "service/imap/process_limit") or 0)
            if userip < need or cl * pl < need:
                raise RuntimeError(f"Dovecot for i allows too few sessions: userip {userip}, "
                                   f"imap {pl} processes x {cl} clients, need {need}")
            self.settings.append(
                f"Dovecot for i: a separate instance with mail_max_userip_connections = {userip}, "
                f"service imap {{ service_count = 0, client_limit = {cl}, process_limit = {pl} }} "
                f"(room for {cl * pl} IMAP sessions), imap-login in performance mode "
                f"(service_count = 0); the open-files limit is {nofile}")
            dv.deliver_many("idle", small_messages(a.idle_msgs), flags="S")
            dv.deliver_many("idlebig", small_messages(a.idle_big_msgs), flags="S")
            out = {}
            for label, user, count in (("small", "idle", sessions),
                                       ("big", "idlebig", a.idle_big_sessions)):
                pg = start_popgate(self.binary, dv.imap_port, log_level=a.popgate_log_level,
                                  max_connections=need + 100)
                try:
                    r = idle_sessions(pg, user, PASSWORD, count)
                finally:
                    pg.cleanup()
                out[label] = r
                log(f"  i ({label} mailbox): {count} sessions, VmRSS {r['rss_before_kib']} -> "
                    f"{r['rss_after_kib']} KiB: {r['kib_per_session']:.1f} KiB/session "
                    f"(logins took {r['login_wall']:.1f} s)")
            if "u" in a.only:
                r = uidl_memory.idle_with_store(self, dv, "idle", PASSWORD, sessions, need)
                out["small, store on"] = r
                log(f"  i with the UIDL store: {r['kib_per_session']:.1f} KiB/session")
            self.i_result = out
        finally:
            dv.stop()

# ------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = "python3 bench/run.py" + ("".join(" " + shlex.quote(x) for x in argv))
    ensure_root_and_dovecot()
    binary, build_s = ensure_binary(args, log)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if not args.no_write:
        report.ensure_matplotlib()
    raise_nofile(4096)
    info = report.machine_info(REPO, binary, args.rev, bool(args.popgate_bin))
    t0 = time.monotonic()
    runner = Runner(args, binary)
    if set(args.only) & set("abcdefghjknur"):
        runner.main_dovecot()
    if "i" in args.only:
        runner.run_idle()
    if "x" in args.only:
        many_connections.run(runner, log, binary, PASSWORD)
    run_s = time.monotonic() - t0
    rows = table.rows(runner)
    print()
    print(f"popgate vs Dovecot's own POP3, {args.rounds} interleaved rounds, medians; "
          f"run time {run_s:.0f} s")
    print(report.CONVENTION)
    print()
    print(report.text_table(rows))
    missed = [r for r in rows if r.met is False]
    if missed:
        print()
        print("Targets missed:")
        for r in missed:
            print(f"  {r.key} ({r.title}): {r.shortfall()}")
    for w in results.client_bound_warnings(runner):
        print(f"warning: {w}")
    if not args.no_write:
        results.write_results(args, runner, rows, info, command, run_s, build_s, started, log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
