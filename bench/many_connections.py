"""x: 10,000 connections held by one popgate for a while, under load.

9,000 connections that connected, read the greeting and stay idle before
login; 1,000 logged-in sessions (USER, PASS) that stay idle; and 50
clients downloading in a loop (log in, RETR every message, QUIT, again)
for ``--x-duration`` seconds.  What it reports, all about popgate (this
workload has no native side):

- KiB per idle connection and per logged-in session, from VmRSS before
  and after each group was opened (the downloaders not started yet);
- VmRSS over time while the downloaders run, sampled every few seconds:
  at minute 2 and at minute 10 of a 10-minute run (generally: at a fifth
  of the duration and at its end), and the growth between the two;
- connections lost: idle connections or sessions the server closed, a
  logged-in session that does not answer NOOP at the end, and downloader
  sessions that failed.

The driver holds the 10,000 sockets in this process (its open-files limit
raised to the hard limit, which popgate inherits) and watches them all
with epoll while it waits between samples; the downloaders run in a
forked process of their own with one thread each, so their work never
delays the watching.  Dovecot is a separate instance with its process and
client limits raised for the sessions (as for i).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import selectors
import socket
import threading
import time

from corpus import attachment_messages, small_messages
from pop3client import Conn, Pop3Error
from workloads import SessionEngine, start_popgate

USER_IDLE, USER_DL = "xidle", "xdl"


def _downloader(port: int, password: str, msgs: int, go, stop, out, n: int) -> None:
    """In the forked process: ``n`` threads, each downloading the whole
    mailbox in a loop from ``go`` until ``stop`` is set; puts (sessions,
    octets, errors, first error) on ``out``."""
    go.wait()
    lock = threading.Lock()
    tot = {"sessions": 0, "octets": 0, "errors": 0, "first_error": ""}
    cmds = [b"RETR %d\r\n" % i for i in range(1, msgs + 1)]

    def loop() -> None:
        while not stop.is_set():
            try:
                with Conn(port, timeout=120) as c:
                    c.login(USER_DL, password)
                    octets, _ = c.pipeline(cmds, 1)
                    c.quit()
                with lock:
                    tot["sessions"] += 1
                    tot["octets"] += octets
            except (OSError, Pop3Error) as e:
                with lock:
                    tot["errors"] += 1
                    tot["first_error"] = tot["first_error"] or repr(e)
                time.sleep(0.5)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(tot)


def dovecot_conf(sessions: int) -> str:
    """Room for ``sessions`` concurrent IMAP sessions of one user from one
    address: 100 sessions per imap process, enough processes, imap-login
    processes reused (performance mode)."""
    per_proc = 100
    n = max(2, os.cpu_count() or 2)
    return (f"protocol imap {{\n  mail_max_userip_connections = {2 * sessions}\n}}\n"
            f"service imap {{\n  service_count = 0\n  client_limit = {per_proc}\n"
            f"  process_limit = {sessions // per_proc + 20}\n}}\n"
            f"service imap-login {{\n  service_count = 0\n  process_min_avail = {n}\n}}\n")


class Watch:
    """Every held socket in one epoll set: a socket that becomes readable
    was closed (or written to) by the server, and counts as lost."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.lost: dict[str, int] = {"idle": 0, "session": 0}
        self.first_lost = ""

    def add(self, socks: list[socket.socket], kind: str) -> None:
        for s in socks:
            self.sel.register(s, selectors.EVENT_READ, kind)

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            for key, _ev in self.sel.select(left):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data = repr(e).encode()
                self.lost[key.data] += 1
                self.first_lost = self.first_lost or f"{key.data}: {data[:80]!r}"
                self.sel.unregister(s)
                s.close()

    def held(self, kind: str) -> list[socket.socket]:
        return [k.fileobj for k in self.sel.get_map().values() if k.data == kind]

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


def noop_all(socks: list[socket.socket], timeout: float = 60.0) -> int:
    """Sends NOOP on every logged-in session; returns how many did not
    answer +OK within the timeout."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.send(b"NOOP\r\n")
        sel.register(s, selectors.EVENT_READ, b"")
    bad = 0
    deadline = time.monotonic() + timeout
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ev in sel.select(left):
            s = key.fileobj
            try:
                data = key.data + s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b"-ERR"
            if b"\r\n" in data or not data:
                bad += not data.startswith(b"+OK")
                sel.unregister(s)
            else:
                sel.modify(s, selectors.EVENT_READ, data)
    bad += len(sel.get_map())
    sel.close()
    return bad


def run(runner, log, binary: str, password: str) -> None:
    """The whole of x; its figures go to ``runner.x_result``."""
    from dovecot import Dovecot

    a = runner.args
    idle, sessions, dls = a.x_idle, a.x_sessions, a.x_downloaders
    total = idle + sessions + dls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < total + 500 or nofile < idle + 2 * (sessions + dls) + 500:
        raise RuntimeError(f"x: the open-files limit is {nofile}, too low for {total} "
                           "connections here and twice the sessions in popgate "
                           "(raise the hard limit: ulimit -Hn)")
    # Timeouts beyond the run: idle connections must stay for its length.
    hold = f"{int(a.x_duration) + 600}s"
    dv = Dovecot(users={USER_IDLE: password, USER_DL: password},
                 extra_conf=dovecot_conf(sessions + dls + 300))
    watch = Watch()
    try:
        dv.deliver_many(USER_IDLE, small_messages(10), flags="S")
        dv.deliver_many(USER_DL, attachment_messages(a.x_dl_msgs, a.retr_size), flags="S")
        pg = start_popgate(binary, dv.imap_port, log_level=a.popgate_log_level,
                           max_connections=total + 200,
                           extra=f"  idle_timeout: {hold}\n",
                           limits_extra=f"  login_timeout: {hold}\n")
        # Forked now, while this process holds few sockets: the child
        # inherits none of the 10,000.
        ctx = multiprocessing.get_context("fork")
        go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_downloader, daemon=True,
                           args=(pg.port, password, a.x_dl_msgs, go, stop, out, dls))
        proc.start()
        runner.settings.append(
            f"x: {idle} idle connections before login, {sessions} idle logged-in sessions "
            f"({USER_IDLE}, 10 messages), {dls} downloaders looping over {a.x_dl_msgs} "
            f"messages of {a.retr_size:,} octets, for {a.x_duration:.0f} s; popgate with "
            f"session.max_connections {total + 200}, session.idle_timeout and "
            f"limits.login_timeout {hold} (beyond the run), the limits of d and e otherwise; "
            f"Dovecot for x: {dovecot_conf(sessions + dls + 300).replace(chr(10), ' ')}; "
            f"the driver's open-files limit {nofile}")
        try:
            x = runner.x_result = _measure(a, log, pg, watch, (proc, go, stop, out), password,
                                           idle, sessions, dls)
            log(f"x: VmRSS {x['early'][1]} KiB at {x['early'][0]:.0f} s, {x['late'][1]} KiB at "
                f"{x['late'][0]:.0f} s, peak {x['hwm_kib']} KiB; lost: idle {x['lost_idle']}, "
                f"sessions {x['lost_sessions']}, NOOP failed {x['noop_failed']}, downloads "
                f"failed {x['dl_errors']}; {x['dl_sessions']} download sessions")
        finally:
            stop.set()
            go.set()
            proc.join(60)
            if proc.is_alive():
                proc.kill()
            pg.cleanup()
    finally:
        watch.close()
        dv.stop()


def _measure(a, log, pg, watch: Watch, downloaders, password: str, idle: int,
             sessions: int, dls: int) -> dict:
    proc, go, stop, out = downloaders
    login = [b"USER " + USER_IDLE.encode() + b"\r\n", b"PASS " + password.encode() + b"\r\n"]
    warm = SessionEngine(pg.port, login, keep_open=True)
    warm.run(200, 32)
    warm.close_kept()
    time.sleep(1)
    rss0 = pg.status_kib("VmRSS")
    log(f"x: opening {idle} connections that stay idle before login")
    eng = SessionEngine(pg.port, [], keep_open=True, timeout=120)
    eng.run(idle, 200)
    watch.add(eng.kept, "idle")
    time.sleep(1)
    rss1 = pg.status_kib("VmRSS")
    log(f"x: logging in {sessions} sessions that stay idle")
    eng = SessionEngine(pg.port, login, keep_open=True, timeout=120)
    eng.run(sessions, 32)
    watch.add(eng.kept, "session")
    time.sleep(1)
    rss2 = pg.status_kib("VmRSS")
    log(f"x: VmRSS {rss0} -> {rss1} KiB (idle) -> {rss2} KiB (sessions); "
        f"{dls} downloaders for {a.x_duration:.0f} s")
    pg.reset_peak()
    t0 = time.monotonic()
    go.set()
    series: list[tuple[float, int]] = []
    interval = max(1.0, min(10.0, a.x_duration / 60))
    while (t := time.monotonic() - t0) < a.x_duration:
        watch.wait(min(interval, a.x_duration - t))
        series.append((time.monotonic() - t0, pg.status_kib("VmRSS")))
        if len(series) % max(1, int(60 / interval)) == 0:
            log(f"  x at {series[-1][0]:.0f} s: VmRSS {series[-1][1]} KiB, lost so far "
                f"{sum(watch.lost.values())}")
    stop.set()
    dl = out.get(timeout=180)
    proc.join(30)
    wall = time.monotonic() - t0
    hwm = pg.status_kib("VmHWM")
    watch.wait(0.5)
    noop_bad = noop_all(watch.held("session"))
    still_idle = len(watch.held("idle"))
    early_t = a.x_duration / 5
    early = min(series, key=lambda p: abs(p[0] - early_t))
    late = series[-1]
    return {
        "idle": idle, "sessions": sessions, "downloaders": dls, "duration": wall,
        "rss_before_kib": rss0, "rss_idle_kib": rss1, "rss_sessions_kib": rss2,
        "kib_per_idle": (rss1 - rss0) / idle, "kib_per_session": (rss2 - rss1) / sessions,
        "early": early, "late": late, "hwm_kib": hwm,
        "growth_pct": (late[1] - early[1]) / early[1] * 100,
        "series": series,
        "lost_idle": watch.lost["idle"], "lost_sessions": watch.lost["session"],
        "noop_failed": noop_bad, "still_idle": still_idle, "first_lost": watch.first_lost,
        "dl_sessions": dl["sessions"], "dl_octets": dl["octets"], "dl_errors": dl["errors"],
        "dl_first_error": dl["first_error"],
        "lost": watch.lost["idle"] + watch.lost["session"] + noop_bad + dl["errors"],
    }


def rows(runner, Row, targets: dict) -> list:
    """The table's rows for x (popgate alone: no native column)."""
    x = runner.x_result
    if not x:
        return []
    e_t, e_kib = x["early"]
    l_t, l_kib = x["late"]
    mb_s = x["dl_octets"] / x["duration"] / 1e6
    return [
        Row("x-idle", f"{x['idle']:,} idle before login", "KiB/conn", None, x["kib_per_idle"],
            "mem", None, "reported", label="idle conn"),
        Row("x-session", f"{x['sessions']:,} idle logged in", "KiB/session", None,
            x["kib_per_session"], "mem", targets["x-session"],
            f"< {targets['x-session']:.1f} KiB (as i)", label="idle session"),
        Row("x-rss", f"VmRSS at {l_t / 60:.1f} min vs {e_t / 60:.1f} min", "%", None,
            x["growth_pct"], "mem", targets["x-rss"], f"< {targets['x-rss']:.0f}% growth",
            note=f"{e_kib / 1024:.1f} -> {l_kib / 1024:.1f} MiB, peak {x['hwm_kib'] / 1024:.1f} MiB",
            label="RSS growth"),
        Row("x-lost", "connections lost", "conns", None, x["lost"], "mem", 1, "0",
            note=(f"idle {x['lost_idle']}, sessions {x['lost_sessions']}, NOOP failed "
                  f"{x['noop_failed']}, downloads failed {x['dl_errors']}"), label="lost"),
        Row("x-dl", f"{x['downloaders']} downloaders, {x['dl_sessions']:,} sessions", "MB/s",
            None, mb_s, "mem", None, "reported", label="downloads"),
    ]
