"""h, j, k: d, e and a over TLS.

Clients speak POP3S (implicit TLS) to both sides: to Dovecot's own POP3S
port, and to a second popgate whose listener is ``tls: implicit`` and whose
link to Dovecot is implicit TLS too (IMAPS), verified against the test CA.
Dovecot's and popgate's certificates come from one throwaway CA
(tests/e2e/certs.py) and have the same key type (EC P-256), so both sides
do the same signature per handshake.  Every client session makes a full
handshake (no resumption), as a new client would.

The concurrent sessions run on one thread with epoll like e's, with the
TLS handshake driven non-blocking (``do_handshake`` until it stops asking
for reads or writes).
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import ssl

import certs  # tests/e2e
from dovecot import free_port, tls_conf
from popgate import Popgate, PortInUse
from pop3client import HOST, TLS_NAME, Pop3Error
from workloads import Sample, Timer, retr_all, seq_sessions

LETTERS = "hjk"


def make_pki() -> certs.Pki:
    return certs.make_pki()


def dovecot_conf(pki: certs.Pki) -> tuple[str, int, int]:
    """(extra_conf, IMAPS port, POP3S port) for the Dovecot of a-g: its
    plaintext ports stay as they are (ssl = yes only adds STARTTLS to
    their capabilities; plaintext logins stay allowed)."""
    imaps, pop3s = free_port(), free_port()
    while pop3s == imaps:
        pop3s = free_port()
    return tls_conf(pki.dovecot.chain, pki.dovecot.key, imaps, pop3s), imaps, pop3s


def client_context(pki: certs.Pki) -> ssl.SSLContext:
    """What a client checks: the test CA and the name localhost."""
    return ssl.create_default_context(cafile=pki.ca.cert)


class TlsPopgate(Popgate):
    """A popgate whose only listener is POP3S: at quiet log levels there is
    no "listening on" line, so readiness is a TLS handshake and a
    greeting."""

    ctx: ssl.SSLContext

    def _greets(self) -> bool:
        try:
            with socket.create_connection((HOST, self.fixed_port), timeout=2) as raw:
                with self.ctx.wrap_socket(raw, server_hostname=TLS_NAME) as s:
                    return s.recv(64).startswith(b"+OK")
        except (OSError, ssl.SSLError):
            return False


def start_tls_popgate(binary: str, imaps_port: int, pki: certs.Pki, *, log_level: str,
                      max_connections: int = 1000, plain_upstream: bool = False) -> Popgate:
    """popgate with one POP3S listener (the test CA's popgate certificate)
    and implicit TLS to Dovecot's IMAPS port, checked against the test CA
    and the name localhost; its limits are start_popgate's (d and e's).
    With ``plain_upstream``, ``imaps_port`` is Dovecot's plaintext IMAP
    port instead, reached without TLS (as nginx reaches Dovecot)."""
    q = json.dumps
    upstream = "" if plain_upstream else (f"  tls: implicit\n  ca_file: {q(pki.ca.cert)}\n"
                                          f"  server_name: {TLS_NAME}\n")
    extra = (f"session:\n  max_connections: {max_connections}\n"
             f"tls:\n  certificate: {q(pki.popgate.chain)}\n  key: {q(pki.popgate.key)}\n")
    for _attempt in range(5):
        port = free_port()
        pg = TlsPopgate(imaps_port, port=port, binary_path=binary, log_level=log_level,
                        upstream_extra=upstream, extra=extra, start=False,
                        limits="  connections_per_ip: 0\n  sessions_per_user: 0\n"
                               "  auth_penalty_max: 0s\n",
                        die_with_parent=True)
        pg.ctx = client_context(pki)
        with open(pg.config_path) as f:
            cfg = f.read()
        first = f'  - address: "127.0.0.1:{port}"\n'
        with open(pg.config_path, "w") as f:
            f.write(cfg.replace(first, first + "    tls: implicit\n", 1))
        try:
            return pg.start()
        except PortInUse:
            pg.cleanup()
            continue
    raise RuntimeError("popgate (POP3S) did not start: no free port")


def negotiated(port: int, ctx: ssl.SSLContext) -> str:
    """Protocol version and cipher suite a client gets on ``port``."""
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=TLS_NAME) as s:
            s.recv(64)
            cipher = s.cipher()
            return f"{s.version()} {cipher[0] if cipher else '?'}"


# ------------------------------------------------------------- concurrent


class _Conn:
    __slots__ = ("sock", "step", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.step = -2      # -2 connecting, -1 TLS handshake, then script steps
        self.buf = b""


def tls_concurrent_sessions(port: int, user: str, password: str, clients: int, total: int,
                            ctx: ssl.SSLContext, timeout: float = 60.0) -> Sample:
    """j: e's sessions (USER, PASS, STAT, QUIT) over POP3S, ``clients``
    under way at any time, each with a full handshake; sessions/s."""
    script = [b"USER " + user.encode() + b"\r\n", b"PASS " + password.encode() + b"\r\n",
              b"STAT\r\n", b"QUIT\r\n"]
    with Timer() as t:
        _run_tls_sessions(port, script, ctx, total, clients, timeout)
    return Sample(total / t.wall, t.wall, t.cpu, busy=t.busy)


def _run_tls_sessions(port: int, script: list[bytes], ctx: ssl.SSLContext, total: int,
                      concurrency: int, timeout: float) -> None:
    sel = selectors.DefaultSelector()
    started = done = inflight = 0
    nsteps = len(script)
    try:
        while done < total:
            while started < total and inflight < concurrency:
                raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                raw.setblocking(False)
                rc = raw.connect_ex((HOST, port))
                if rc not in (0, errno.EINPROGRESS):
                    raw.close()
                    raise OSError(rc, os.strerror(rc))
                sel.register(raw, selectors.EVENT_WRITE, _Conn(raw))
                started += 1
                inflight += 1
            events = sel.select(timeout)
            if not events:
                raise TimeoutError(f"no answer within {timeout}s ({done}/{total} sessions done)")
            for key, _ev in events:
                c: _Conn = key.data
                if c.step == -2:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    # Wrapped only once connected: Python makes the TLS
                    # object of an unconnected socket at connect() time.
                    sel.unregister(c.sock)
                    c.sock = ctx.wrap_socket(c.sock, server_hostname=TLS_NAME,
                                             do_handshake_on_connect=False)
                    c.step = -1
                    sel.register(c.sock, selectors.EVENT_WRITE, c)
                if c.step == -1:
                    try:
                        c.sock.do_handshake()
                    except ssl.SSLWantReadError:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                        continue
                    except ssl.SSLWantWriteError:
                        sel.modify(c.sock, selectors.EVENT_WRITE, c)
                        continue
                    c.step = 0
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                if _on_readable(c, script, nsteps):
                    sel.unregister(c.sock)
                    c.sock.close()
                    done += 1
                    inflight -= 1
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def _on_readable(c: _Conn, script: list[bytes], nsteps: int) -> bool:
    """Reads what TLS has decrypted and answers each "+OK" line with the
    next command; True when the last answer came."""
    try:
        data = c.sock.recv(4096)
        while c.sock.pending():
            data += c.sock.recv(c.sock.pending())
    except ssl.SSLWantReadError:
        return False     # a record that was not application data (a ticket)
    if not data:
        raise Pop3Error(f"server closed a connection at step {c.step}")
    buf = c.buf + data
    while True:
        i = buf.find(b"\r\n")
        if i < 0:
            break
        line, buf = buf[:i], buf[i + 2:]
        if not line.startswith(b"+OK"):
            what = script[c.step - 1].split()[0] if c.step else b"greeting"
            raise Pop3Error(f"{what.decode()}: {line!r}")
        if c.step < nsteps:
            c.sock.send(script[c.step])
            c.step += 1
        else:
            return True
    c.buf = buf
    return False


# ------------------------------------------------------------------ rounds


def run(runner, log, binary: str, dv, pki: certs.Pki, nginx, user_sess: str,
        user_big: str, password: str) -> None:
    """h, j, k in interleaved rounds: Dovecot's POP3S, then popgate's
    (POP3S, IMAPS upstream), then nginx's POP3S when ``nginx`` is given
    (h and j only: k is a popgate/Dovecot comparison of bulk TLS)."""
    a, only = runner.args, runner.args.only
    ctx = client_context(pki)
    N, T = dv.pop3s_port, 0
    pg = start_tls_popgate(binary, dv.imaps_port, pki, log_level=a.popgate_log_level)
    try:
        T = pg.port
        X = nginx.tls_port if nginx is not None else 0
        runner.settings.append(
            f"h, j, k: TLS as negotiated by the client: Dovecot POP3S {negotiated(N, ctx)}, "
            f"popgate POP3S {negotiated(T, ctx)}"
            + (f", nginx POP3S {negotiated(X, ctx)}" if X else "")
            + "; certificates EC P-256 from one test CA (tests/e2e/certs.py); popgate to "
            "Dovecot over IMAPS (verified, server_name localhost)"
            + ("; nginx to Dovecot over plaintext POP3 (its mail proxy has no TLS to backends)"
               if X else ""))
        if "h" in only:
            log(f"h: {a.seq_sessions} sequential sessions over POP3S")
            runner.interleave(
                "h", lambda: seq_sessions(N, user_sess, password, a.seq_sessions, tls=ctx),
                lambda: seq_sessions(T, user_sess, password, a.seq_sessions, tls=ctx), pg,
                lambda: seq_sessions(N, user_sess, password, 5, tls=ctx),
                lambda: seq_sessions(T, user_sess, password, 5, tls=ctx),
                nginx=(lambda: seq_sessions(X, user_sess, password, a.seq_sessions, tls=ctx))
                if X else None, ng=nginx)
        if "j" in only:
            log(f"j: {a.conc_sessions} sessions by {a.clients} concurrent clients over POP3S")

            def conc(port: int, total: int):
                return lambda: tls_concurrent_sessions(port, user_sess, password, a.clients,
                                                       total, ctx)
            runner.interleave("j", conc(N, a.conc_sessions), conc(T, a.conc_sessions), pg,
                              conc(N, a.clients), conc(T, a.clients),
                              nginx=conc(X, a.conc_sessions) if X else None, ng=nginx)
            # Like for like with nginx, which cannot encrypt to a backend:
            # the same popgate with a plaintext upstream, Dovecot doing no
            # TLS at all.
            log("j-plain: j through a popgate whose upstream is plaintext IMAP")
            plain = start_tls_popgate(binary, dv.imap_port, pki, plain_upstream=True,
                                      log_level=a.popgate_log_level)
            try:
                P = plain.port
                runner.interleave("j-plain", conc(N, a.conc_sessions),
                                  conc(P, a.conc_sessions), plain,
                                  conc(N, a.clients), conc(P, a.clients))
            finally:
                plain.cleanup()
        if "k" in only:
            log(f"k: RETR of {a.retr_msgs} messages of {a.retr_size:,} octets over POP3S")
            runner.interleave(
                "k", lambda: retr_all(N, user_big, password, a.retr_msgs, 1, tls=ctx),
                lambda: retr_all(T, user_big, password, a.retr_msgs, 1, tls=ctx), pg)
    finally:
        pg.cleanup()


def rows(runner, row, med, targets: dict) -> list:
    """The table's rows for h, j, k: h and j as d and e (at least native's
    rate), k as a (RETR, at least native's)."""
    S, a = runner.samples, runner.args
    out = []
    for key, title, unit in (("h", "sequential sessions, POP3S", "sessions/s"),
                             ("j", f"{a.clients} concurrent clients, POP3S", "sessions/s"),
                             ("k", "RETR, 1 in flight, POP3S", "MB/s")):
        if key in S:
            ng = S[key].get("nginx")
            t = targets.get(key, targets["a"])
            out.append(row(key, title, unit, med(S[key]["native"]), med(S[key]["popgate"]),
                           "rate", t, f">= {t:.1f}x", label=title.replace(", POP3S", " TLS"),
                           nginx=med(ng) if ng else None))
    if "j-plain" in S:
        out.append(row("j-plain", "j, popgate to Dovecot in plaintext (as nginx)", "sessions/s",
                       med(S["j-plain"]["native"]), med(S["j-plain"]["popgate"]), "rate",
                       None, "reported", note="like for like with nginx's column of j",
                       label="j plain upstream"))
    return out
