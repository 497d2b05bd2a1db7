"""The benchmark's workloads, and popgate started for them (the test mail
is tests/e2e/corpus.py's, the launcher tests/e2e/popgate.py's).

Every workload function talks POP3 to one port (Dovecot's own POP3 or
popgate) and returns a ``Sample``: the figure of merit plus the wall time
and the client's own CPU time for the timed part, so the report can show
that the client was not the bottleneck.
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field

from dovecot import free_port  # tests/e2e, on the path bench/run.py sets
from popgate import Popgate, PortInUse
from pop3client import HOST, Conn, Pop3Error

# --------------------------------------------------------------- measuring


def cpu_seconds() -> float:
    """CPU time of this process, all threads, user + system."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Sample:
    value: float            # the figure of merit (MB/s, messages/s, s, ...)
    wall: float             # seconds of the timed part
    client_cpu: float       # client CPU seconds during the timed part
    octets: int = 0         # octets received during the timed part
    server_cpu: float | None = None   # popgate CPU seconds (popgate side only)
    busy: float = 0.0       # share of all the machine's cores busy (any process)
    extra: dict = field(default_factory=dict)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores together, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    total = sum(fields[:8])          # user nice system idle iowait irq softirq steal
    idle = fields[3] + fields[4]
    return total - idle, total


class Timer:
    """Wall time, this process's CPU time and the machine's busy share over
    a block."""

    def __enter__(self) -> "Timer":
        self.cpu0 = cpu_seconds()
        self.m0 = machine_ticks()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = cpu_seconds() - self.cpu0
        m1 = machine_ticks()
        total = m1[1] - self.m0[1]
        self.busy = (m1[0] - self.m0[0]) / total if total > 0 else 0.0


# ---------------------------------------------------------------- popgate


def start_popgate(binary: str, upstream_port: int, *, log_level: str = "warn",
                  max_connections: int = 1000, extra: str = "",
                  limits_extra: str = "", shipped_defaults: bool = False) -> Popgate:
    """The popgate binary (the end-to-end tests' launcher) on a free port
    picked here, so any log level works; the default "warn" keeps
    per-session log lines out of the measurement.  All benchmark clients
    are one user from one address, as with Dovecot's raised
    mail_max_userip_connections, so the per-address and per-user limits are
    off, and so is the failed-login penalty with its bound on one user's
    parallel logins, as the reference Dovecot's (no auth failure delay).
    Killed with the benchmark, however it dies.  ``shipped_defaults``: no
    session or limits section at all, every limit as shipped."""
    session = f"session:\n  max_connections: {max_connections}\n{extra}"
    limits = ("  connections_per_ip: 0\n  sessions_per_user: 0\n  auth_penalty_max: 0s\n"
              + limits_extra)
    if shipped_defaults:
        session = limits = ""
    for _attempt in range(5):
        try:
            return Popgate(
                upstream_port, port=free_port(), binary_path=binary, log_level=log_level,
                extra=session, limits=limits, die_with_parent=True)
        except PortInUse:
            continue
    raise RuntimeError("popgate did not start: no free port")


# -------------------------------------------------------------- workloads


def retr_all(port: int, user: str, password: str, count: int, depth: int,
             tls: ssl.SSLContext | None = None) -> Sample:
    """a and b: one session, RETR 1..count with ``depth`` commands in
    flight; the login is not timed.  MB/s of POP3 octets received
    (status lines, dot-stuffed bodies and terminators).  ``tls``: over
    implicit TLS (k)."""
    cmds = [b"RETR %d\r\n" % i for i in range(1, count + 1)]
    with Conn(port, tls=tls) as c:
        c.login(user, password)
        with Timer() as t:
            octets, _ = c.pipeline(cmds, depth)
        c.quit()
    return Sample(octets / t.wall / 1e6, t.wall, t.cpu, octets, busy=t.busy)


def top_all(port: int, user: str, password: str, count: int) -> Sample:
    """c: one session, ``TOP n 0`` for n = 1..count, one at a time;
    messages/s."""
    cmds = [b"TOP %d 0\r\n" % i for i in range(1, count + 1)]
    with Conn(port) as c:
        c.login(user, password)
        with Timer() as t:
            octets, _ = c.pipeline(cmds, 1)
        c.quit()
    return Sample(count / t.wall, t.wall, t.cpu, octets, busy=t.busy)


def seq_sessions(port: int, user: str, password: str, count: int,
                 tls: ssl.SSLContext | None = None) -> Sample:
    """d: ``count`` sessions one after the other: connect, greeting, USER,
    PASS, STAT, QUIT and its answer; sessions/s.  ``tls``: each session
    over implicit TLS with a full handshake (h)."""
    u = b"USER " + user.encode() + b"\r\n"
    p = b"PASS " + password.encode() + b"\r\n"
    with Timer() as t:
        for _ in range(count):
            c = Conn(port, bufsize=4096, tls=tls)
            c.command(u)
            c.command(p)
            c.command(b"STAT\r\n")
            c.command(b"QUIT\r\n")
            c.close()
    return Sample(count / t.wall, t.wall, t.cpu, busy=t.busy)


class SessionEngine:
    """Many concurrent POP3 sessions on one thread (epoll): each connection
    reads the greeting, then sends its script one command at a time, each
    after the previous "+OK" line; session i follows scripts[i % len] (one
    script per user, for one user per client).  With ``keep_open`` the
    connections stay open after the script (idle sessions)."""

    def __init__(self, port: int, *scripts: list[bytes], keep_open: bool = False,
                 timeout: float = 60.0,
                 refusals: dict[str, int] | None = None) -> None:
        self.port = port
        self.scripts = list(scripts)
        self.keep_open = keep_open
        self.timeout = timeout
        self.kept: list[socket.socket] = []
        # With a dict: an answer other than +OK ends that session and is
        # counted here by its text (after "-ERR "), instead of failing the
        # run.
        self.refusals = refusals

    def run(self, total: int, concurrency: int) -> float:
        """Runs ``total`` sessions with up to ``concurrency`` under way;
        returns the wall time."""
        sel = selectors.DefaultSelector()
        started = done = 0
        inflight = 0
        t0 = time.perf_counter()
        try:
            while done < total:
                while started < total and inflight < concurrency:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.setblocking(False)
                    rc = s.connect_ex((HOST, self.port))
                    if rc not in (0, errno.EINPROGRESS):
                        s.close()
                        raise OSError(rc, os.strerror(rc))
                    sel.register(s, selectors.EVENT_READ,
                                 [0, b"", self.scripts[started % len(self.scripts)]])
                    started += 1
                    inflight += 1
                events = sel.select(self.timeout)
                if not events:
                    raise TimeoutError(
                        f"no answer within {self.timeout}s ({done}/{total} sessions done)")
                for key, _ev in events:
                    s, st = key.fileobj, key.data
                    data = s.recv(4096)
                    if not data:
                        raise Pop3Error(f"server closed a connection at step {st[0]}")
                    buf, script = st[1] + data, st[2]
                    while True:
                        i = buf.find(b"\r\n")
                        if i < 0:
                            break
                        line, buf = buf[:i], buf[i + 2:]
                        if not line.startswith(b"+OK"):
                            if self.refusals is None:
                                what = script[st[0] - 1].split()[0] if st[0] else b"greeting"
                                raise Pop3Error(f"{what.decode()}: {line!r}")
                            key = line[5:85].decode(errors="replace")
                            self.refusals[key] = self.refusals.get(key, 0) + 1
                            sel.unregister(s)
                            s.close()
                            done += 1
                            inflight -= 1
                            break
                        if st[0] < len(script):
                            s.send(script[st[0]])
                            st[0] += 1
                        else:
                            sel.unregister(s)
                            if self.keep_open:
                                self.kept.append(s)
                            else:
                                s.close()
                            done += 1
                            inflight -= 1
                            break
                    st[1] = buf
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()
        return time.perf_counter() - t0

    def close_kept(self) -> None:
        for s in self.kept:
            try:
                s.close()
            except OSError:
                pass
        self.kept.clear()


def concurrent_sessions(port: int, user: str, password: str, clients: int,
                        total: int) -> Sample:
    """e: ``total`` sessions (USER, PASS, STAT, QUIT) with ``clients`` of
    them under way at any time; sessions/s."""
    script = [b"USER " + user.encode() + b"\r\n", b"PASS " + password.encode() + b"\r\n",
              b"STAT\r\n", b"QUIT\r\n"]
    eng = SessionEngine(port, script)
    with Timer() as t:
        eng.run(total, clients)
    return Sample(total / t.wall, t.wall, t.cpu, busy=t.busy)


def listing(port: int, user: str, password: str, expect: int) -> Sample:
    """f: connect, USER, PASS, UIDL, LIST, all timed up to the end of the
    LIST answer; seconds.  Checks both listings have ``expect`` lines."""
    with Timer() as t:
        c = Conn(port)
        c.login(user, password)
        c.send(b"UIDL\r\n")
        st = c.line()
        if not st.startswith(b"+OK"):
            raise Pop3Error(f"UIDL: {st!r}")
        o1, n1 = c.count_multi()
        c.send(b"LIST\r\n")
        st = c.line()
        if not st.startswith(b"+OK"):
            raise Pop3Error(f"LIST: {st!r}")
        o2, n2 = c.count_multi()
    c.quit()
    if n1 != expect or n2 != expect:
        raise Pop3Error(f"listing has {n1} UIDL and {n2} LIST lines, expected {expect}")
    return Sample(t.wall, t.wall, t.cpu, o1 + o2, busy=t.busy)


def big_retr(port: int, user: str, password: str, pg: Popgate | None) -> Sample:
    """g: in one session, RETR 1 (a small message: warms buffers), then
    the timed RETR 2 (the big message); MB/s.  With ``pg``, popgate's
    resident memory: VmRSS just before RETR 2, VmHWM (reset before RETR 2)
    just after."""
    with Conn(port) as c:
        c.login(user, password)
        c.pipeline([b"RETR 1\r\n"], 1)
        before = 0
        if pg is not None:
            before = pg.status_kib("VmRSS")
            pg.reset_peak()
        with Timer() as t:
            octets, _ = c.pipeline([b"RETR 2\r\n"], 1)
        extra = {}
        if pg is not None:
            peak = pg.status_kib("VmHWM")
            extra = {"rss_before_kib": before, "hwm_kib": peak, "growth_kib": peak - before}
        c.quit()
    return Sample(octets / t.wall / 1e6, t.wall, t.cpu, octets, extra=extra, busy=t.busy)


def idle_sessions(pg: Popgate, user: str, password: str, sessions: int,
                  concurrency: int = 32, settle: float = 1.0) -> dict:
    """i: VmRSS of popgate before and after ``sessions`` POP3 connections
    were opened and logged in (each one an idle authenticated session
    holding its snapshot and its upstream IMAP connection)."""
    script = [b"USER " + user.encode() + b"\r\n", b"PASS " + password.encode() + b"\r\n"]
    # Warm-up: as many sessions as will be measured at a time open and
    # close once, so the runtime's threads and the allocator's arenas exist.
    warm = SessionEngine(pg.port, script, keep_open=True)
    warm.run(min(sessions, 200), concurrency)
    warm.close_kept()
    time.sleep(settle)
    before = pg.status_kib("VmRSS")
    eng = SessionEngine(pg.port, script, keep_open=True, timeout=120)
    try:
        wall = eng.run(sessions, concurrency)
        time.sleep(settle)
        after = pg.status_kib("VmRSS")
    finally:
        eng.close_kept()
    return {
        "sessions": sessions,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": (after - before) / sessions,
        "login_wall": wall,
    }
