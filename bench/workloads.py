"""The benchmark's workloads, its test mail, and the popgate process.

Every workload function talks POP3 to one port (Dovecot's own POP3 or
popgate) and returns a ``Sample``: the figure of merit plus the wall time
and the client's own CPU time for the timed part, so the report can show
that the client was not the bottleneck.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import errno
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from dovecot import free_port  # tests/e2e, on the path bench/run.py sets
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


# --------------------------------------------------------------- test mail

DOMAIN = "bench.popgate.test"


def _headers(i: int, subject: str, extra: str = "") -> bytes:
    return (
        f"Return-Path: <sender{i % 97}@{DOMAIN}>\n"
        f"From: Sender {i % 97} <sender{i % 97}@{DOMAIN}>\n"
        f"To: Bench User <user@{DOMAIN}>\n"
        f"Subject: {subject} {i}\n"
        f"Date: Mon, 02 Mar 2026 10:{i % 60:02d}:{(i // 60) % 60:02d} +0000\n"
        f"Message-ID: <bench-{i}-{random.getrandbits(32):08x}@{DOMAIN}>\n"
        f"MIME-Version: 1.0\n{extra}"
    ).encode()


def attachment_message(i: int, size: int, rnd: random.Random | None = None,
                       body: bytes | None = None) -> bytes:
    """A message of about ``size`` octets: a short text part and a base64
    attachment (76-character lines, LF line ends as Maildir stores them)."""
    if body is None:
        rnd = rnd or random.Random(i)
        raw = rnd.randbytes(max(0, size - 600) * 3 // 4)
        body = base64.encodebytes(raw)
    return (
        _headers(i, "Report", 'Content-Type: multipart/mixed; boundary="b1"\n')
        + b"\n--b1\nContent-Type: text/plain; charset=utf-8\n\nSee the attachment.\n"
        + b"--b1\nContent-Type: application/octet-stream; name=\"data.bin\"\n"
        + b"Content-Transfer-Encoding: base64\n\n"
        + body
        + b"--b1--\n"
    )


def attachment_body(size: int, seed: int) -> bytes:
    """The base64 part of attachment_message(), made once and shared."""
    rnd = random.Random(seed)
    return base64.encodebytes(rnd.randbytes(max(0, size - 600) * 3 // 4))


_TEXT = (
    b"Hello,\n\nthis is a short message of the kind a mailbox holds by the\n"
    b"thousand: a notification, a reply, a receipt.  It has a few lines of\n"
    b"plain text and nothing else.\n\n"
    b".a line that starts with a dot, to keep the stuffer honest\n\n"
    b"Regards,\nthe benchmark\n"
)


def small_message(i: int) -> bytes:
    """About 1 KB: headers and a few lines of text."""
    return _headers(i, "Note", "Content-Type: text/plain; charset=utf-8\n") + b"\n" + _TEXT * 2


def small_messages(n: int):
    return (small_message(i) for i in range(1, n + 1))


def attachment_messages(n: int, size: int, seed: int = 1):
    body = attachment_body(size, seed)
    return (attachment_message(i, size, body=body) for i in range(1, n + 1))


# ---------------------------------------------------------------- popgate


_STARTED: "list[PopgateProc]" = []


def _stop_all() -> None:
    for p in list(_STARTED):
        try:
            p.cleanup()
        except Exception:
            pass


atexit.register(_stop_all)


def _die_with_parent() -> None:
    """In the child: SIGKILL when the benchmark process dies, however it
    dies, so an interrupted run leaves no popgate behind."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class PopgateProc:
    """The popgate binary with a minimal config.  It listens on a free port
    picked here (so any log level works; the default is "warn", which keeps
    per-session log lines out of the measurement)."""

    def __init__(self, binary: str, upstream_port: int, *, log_level: str = "warn",
                 max_connections: int = 1000) -> None:
        self.dir = tempfile.mkdtemp(prefix="pgbench-")
        self.config = os.path.join(self.dir, "popgate.yaml")
        self.log_path = os.path.join(self.dir, "popgate.log")
        self.binary = binary
        self.upstream_port = upstream_port
        self.log_level = log_level
        self.max_connections = max_connections
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> "PopgateProc":
        limits = True
        for _attempt in range(5):
            self.port = free_port()
            with open(self.config, "w") as f:
                f.write(
                    "listeners:\n"
                    f'  - address: "{HOST}:{self.port}"\n'
                    "upstream:\n"
                    f'  address: "{HOST}:{self.upstream_port}"\n'
                    "session:\n"
                    f"  max_connections: {self.max_connections}\n"
                    # All benchmark clients are one user from one address,
                    # as with Dovecot's raised mail_max_userip_connections.
                    + ("limits:\n  connections_per_ip: 0\n  sessions_per_user: 0\n"
                       if limits else "")
                    + "log:\n"
                    f'  level: "{self.log_level}"\n'
                )
            log = open(self.log_path, "ab")
            env = dict(os.environ)
            env.pop("RUST_LOG", None)
            self.proc = subprocess.Popen(
                [self.binary, "--config", self.config],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                preexec_fn=_die_with_parent,
            )
            if self not in _STARTED:
                _STARTED.append(self)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection((HOST, self.port), timeout=2) as s:
                        if s.recv(64).startswith(b"+OK"):
                            return self
                except OSError:
                    time.sleep(0.02)
            text = self.log_text()
            self.stop()
            if limits and "limits" in text and "unknown field" in text:
                limits = False      # a popgate from before the limits section
                continue
            if "in use" not in text:
                raise RuntimeError(f"popgate did not start:\n{text[-3000:]}")
        raise RuntimeError("popgate did not start: no free port")

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def status_kib(self, key: str) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def reset_peak(self) -> None:
        """Sets VmHWM back to the current VmRSS."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick

    def threads(self) -> int:
        return self.status_kib("Threads")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in _STARTED:
            _STARTED.remove(self)


# -------------------------------------------------------------- workloads


def retr_all(port: int, user: str, password: str, count: int, depth: int) -> Sample:
    """a and b: one session, RETR 1..count with ``depth`` commands in
    flight; the login is not timed.  MB/s of POP3 octets received
    (status lines, dot-stuffed bodies and terminators)."""
    cmds = [b"RETR %d\r\n" % i for i in range(1, count + 1)]
    with Conn(port) as c:
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


def seq_sessions(port: int, user: str, password: str, count: int) -> Sample:
    """d: ``count`` sessions one after the other: connect, greeting, USER,
    PASS, STAT, QUIT and its answer; sessions/s."""
    u = b"USER " + user.encode() + b"\r\n"
    p = b"PASS " + password.encode() + b"\r\n"
    with Timer() as t:
        for _ in range(count):
            c = Conn(port, bufsize=4096)
            c.command(u)
            c.command(p)
            c.command(b"STAT\r\n")
            c.command(b"QUIT\r\n")
            c.close()
    return Sample(count / t.wall, t.wall, t.cpu, busy=t.busy)


class SessionEngine:
    """Many concurrent POP3 sessions on one thread (epoll): each connection
    reads the greeting, then sends the script one command at a time, each
    after the previous "+OK" line.  With ``keep_open`` the connections stay
    open after the script (idle sessions)."""

    def __init__(self, port: int, script: list[bytes], keep_open: bool = False,
                 timeout: float = 60.0) -> None:
        self.port = port
        self.script = script
        self.keep_open = keep_open
        self.timeout = timeout
        self.kept: list[socket.socket] = []

    def run(self, total: int, concurrency: int) -> float:
        """Runs ``total`` sessions with up to ``concurrency`` under way;
        returns the wall time."""
        sel = selectors.DefaultSelector()
        script, nsteps = self.script, len(self.script)
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
                    sel.register(s, selectors.EVENT_READ, [0, b""])
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
                    buf = st[1] + data
                    while True:
                        i = buf.find(b"\r\n")
                        if i < 0:
                            break
                        line, buf = buf[:i], buf[i + 2:]
                        if not line.startswith(b"+OK"):
                            what = script[st[0] - 1].split()[0] if st[0] else b"greeting"
                            raise Pop3Error(f"{what.decode()}: {line!r}")
                        if st[0] < nsteps:
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


def big_retr(port: int, user: str, password: str, pg: PopgateProc | None) -> Sample:
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


def idle_sessions(pg: PopgateProc, user: str, password: str, sessions: int,
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
