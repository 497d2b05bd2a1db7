"""TLS on both sides of popgate, against a Dovecot with its own TLS.

A module-scoped Dovecot offers IMAPS and STARTTLS with a certificate from
the test CA (certs.py).  popgate listens with STLS and POP3S using another
certificate from that CA, and reaches Dovecot over implicit TLS or STARTTLS,
verifying it against the CA file (``upstream.ca_file``).

Covered here:

- real clients (curl, fetchmail, mpop, getmail, poplib) download a mailbox
  byte for byte over POP3S and STLS while popgate's upstream link is TLS,
  proven from Dovecot's login lines;
- upstream verification: an unknown CA or a wrong name fails the login with
  ``-ERR [SYS/TEMP]`` and no password reaches Dovecot;
  ``dangerous_skip_verify`` logs in and warns;
- certificate reload: new files (written over the old ones, or swapped in
  through a ``..data`` symlink as Kubernetes does) reach new connections
  without a restart; a broken file keeps the old certificate;
- STLS: input pipelined behind STLS is refused, not run inside TLS; state
  from before TLS is forgotten; CAPA after STLS lacks STLS;
- the plaintext policy: passwords without TLS only from trusted networks;
- failed handshakes are counted in popgate_tls_handshakes_total.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import threading
import time
import warnings

import pytest

import certs
from clients import TLS_CLIENTS, assert_fails, download, normalise
from corpus import CLIENT_MESSAGES as MESSAGES
from dovecot import Dovecot, free_port, tls_conf
from imaprelay import ImapRelay
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import Popgate

HOST = "127.0.0.1"
# Clients verify this name (the certificates carry DNS:localhost and
# IP:127.0.0.1; fetchmail only matches DNS names).
NAME = "localhost"
PASSWORD = "tls pw 'q' \\ %"
_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
PLAINTEXT_REFUSED = (b"-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                     b"connections; use STLS or POP3S (port 995).\r\n")


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def pki():
    p = certs.make_pki()
    yield p
    p.cleanup()


@pytest.fixture(scope="module")
def tls_dovecot(pki):
    """Dovecot with ssl=yes (STARTTLS on its IMAP port) and an IMAPS port."""
    imaps = free_port()
    with Dovecot(extra_conf=tls_conf(pki.dovecot.chain, pki.dovecot.key,
                                     imaps_port=imaps)) as dv:
        dv.imaps_port = imaps
        yield dv


def _q(path: str) -> str:
    return json.dumps(str(path))


def upstream_conf(dv: Dovecot, mode: str, ca_file: str | None, *,
                  server_name: str | None = None, skip_verify: bool = False) -> tuple[int, str]:
    """(port, upstream_extra) for popgate's link to ``dv``."""
    port = dv.imaps_port if mode == "implicit" else dv.imap_port
    text = f"  tls: {mode}\n"
    if ca_file:
        text += f"  ca_file: {_q(ca_file)}\n"
    if server_name:
        text += f"  server_name: {server_name}\n"
    if skip_verify:
        text += "  dangerous_skip_verify: true\n"
    return port, text


def tls_gateway(upstream_port: int, *, cert: str | None = None, key: str | None = None,
                listeners=("starttls", "implicit"), reload_interval: str | None = None,
                upstream: str = "", extra: str = "", metrics: bool = False) -> Popgate:
    """A started popgate with one listener per entry of ``listeners``
    ("none", "starttls", "implicit"); ``pg.ports`` lists their ports in
    order.  Each listener is named after its mode (the ``listener`` label in
    metrics): the default label, pop3-<configured port>, would be "pop3-0"
    for all of them."""
    tls = ""
    if cert:
        tls = f"tls:\n  certificate: {_q(cert)}\n  key: {_q(key)}\n"
        if reload_interval:
            tls += f"  reload_interval: {reload_interval}\n"
    pg = Popgate(upstream_port, start=False, upstream_extra=upstream, extra=tls + extra,
                 metrics=metrics)
    with open(pg.config_path) as f:
        cfg = f.read()
    first = '  - address: "127.0.0.1:0"\n'
    assert cfg.count(first) == 1, cfg
    assert len(set(listeners)) == len(listeners)
    cfg = cfg.replace(first, "".join(f"{first}    name: {mode}\n    tls: {mode}\n"
                                     for mode in listeners))
    with open(pg.config_path, "w") as f:
        f.write(cfg)
    pg.start()
    deadline = time.monotonic() + 10
    while len(_LISTENING.findall(pg.log_text())) < len(listeners):
        assert time.monotonic() < deadline, pg.log_text()
        time.sleep(0.02)
    pg.ports = [int(p) for p in _LISTENING.findall(pg.log_text())]
    return pg


@pytest.fixture(scope="module", params=["implicit", "starttls"])
def client_gateway(request, pki, tls_dovecot):
    """popgate with STLS and POP3S listeners, plaintext passwords refused
    from everywhere (a client that did not negotiate TLS cannot log in),
    and a verified TLS link to Dovecot: implicit TLS checked against the
    name "localhost", or STARTTLS checked against the address 127.0.0.1
    (the default name: the host of upstream.address)."""
    mode = request.param
    port, upstream = upstream_conf(tls_dovecot, mode, pki.ca.cert,
                                   server_name=NAME if mode == "implicit" else None)
    with tls_gateway(port, cert=pki.popgate.chain, key=pki.popgate.key, upstream=upstream,
                     extra="auth:\n  plaintext_networks: []\n") as pg:
        pg.upstream_mode = mode
        yield pg


@pytest.fixture(scope="module")
def trusting_gateway(pki, tls_dovecot):
    """popgate with the default plaintext policy (loopback is trusted), an
    STLS and a POP3S listener, upstream over implicit TLS."""
    port, upstream = upstream_conf(tls_dovecot, "implicit", pki.ca.cert)
    with tls_gateway(port, cert=pki.popgate.chain, key=pki.popgate.key, upstream=upstream,
                     metrics=True) as pg:
        yield pg


# ------------------------------------------------------------------ helpers

def client_context(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca.cert)


def starttls(c: Pop3Raw, pki) -> None:
    """STLS on a raw connection, then TLS on the same Pop3Raw."""
    assert c.answer("STLS").startswith(b"+OK"), "STLS refused"
    assert c.buf == b""
    c.sock = client_context(pki).wrap_socket(c.sock, server_hostname=NAME)


def pop3s(port: int, pki) -> Pop3Raw:
    """A raw POP3 connection over implicit TLS."""
    c = Pop3Raw.__new__(Pop3Raw)
    sock = socket.create_connection((HOST, port), timeout=15)
    c.sock = client_context(pki).wrap_socket(sock, server_hostname=NAME)
    c.buf = b""
    c.greeting = c.line()
    return c


def peer_cert(port: int, pki, *, stls: bool = False) -> bytes:
    """The DER certificate a new connection to ``port`` is shown (verified
    against the test CA)."""
    if stls:
        with Pop3Raw(port, timeout=15) as c:
            starttls(c, pki)
            return c.sock.getpeercert(binary_form=True)
    with pop3s(port, pki) as c:
        return c.sock.getpeercert(binary_form=True)


def capa(c: Pop3Raw) -> list[bytes]:
    answer = c.answer("CAPA")
    assert answer.startswith(b"+OK"), answer
    return answer.split(b"\r\n")[1:-2]


def metric(pg: Popgate, name: str, **labels: str) -> float:
    """Value of one sample on /metrics (0 when absent)."""
    status, text = pg.http("/metrics")
    assert status == 200
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0



def tls_logins(dv: Dovecot, user: str) -> list[str]:
    """Dovecot's login lines for ``user`` made over TLS (implicit or
    STARTTLS: Dovecot 2.3 writes ", TLS," in both cases, ", secured," for a
    plaintext loopback connection)."""
    pat = re.compile(rf"Login: user=<{re.escape(user)}>, method=\S+, .*, TLS, session=")
    return [l for l in dv.log_text().splitlines() if pat.search(l)]


def all_logins(dv: Dovecot, user: str) -> list[str]:
    return [l for l in dv.log_text().splitlines() if f"Login: user=<{user}>," in l]


def popgate_logins(pg: Popgate, user: str) -> int:
    return len(re.findall(rf"logged in user={re.escape(user)} ", pg.log_text()))


def _message_id(raw: bytes) -> bytes | None:
    m = re.search(rb"^Message-ID:\s*(<[^>\r\n]*>)", raw, re.I | re.M)
    return m.group(1) if m else None


# ------------------------------------------------- 1. real clients over TLS

CLIENT_CASES = [(mode, client) for mode in ("implicit", "starttls")
                for client in TLS_CLIENTS[mode]]


@pytest.mark.parametrize("client_tls,client", CLIENT_CASES,
                         ids=[f"{m}-{c}" for m, c in CLIENT_CASES])
def test_client_downloads_over_tls_through_tls_upstream(
        client_gateway, tls_dovecot, pki, client_tls, client, tmp_path):
    """Each client downloads (and deletes) a mailbox over POP3S or STLS,
    verifying popgate's certificate against the test CA; every message is
    exactly what that client must make of the IMAP BODY[]; popgate's
    upstream sessions for the user were all TLS."""
    pg, dv = client_gateway, tls_dovecot
    user = f"tls-{pg.upstream_mode}-{client_tls}-{client}"
    dv.add_user(user, PASSWORD)
    for raw in MESSAGES:
        dv.deliver(user, raw)
    before = dv.bodies(user)
    bodies = [before[uid] for uid in sorted(before)]
    port = pg.ports[0] if client_tls == "starttls" else pg.ports[1]

    got = download(client, NAME, port, user, PASSWORD, keep=False, workdir=tmp_path,
                   timeout=30, tls=client_tls, cafile=pki.ca.cert)

    assert [_message_id(g) for g in got] == [_message_id(b) for b in bodies]
    for raw, body in zip(got, bodies):
        assert raw == normalise(client, body), f"{client}: {_message_id(body)!r} differs"
    assert dv.bodies(user) == {}, "delete mode left messages behind"

    # Plaintext passwords are refused by this gateway, so the client's
    # login itself proves it used TLS.  Upstream: every popgate session of
    # this user shows up as a TLS login in Dovecot's log.
    sessions = popgate_logins(pg, user)
    assert sessions >= 1
    wait_for(lambda: len(tls_logins(dv, user)) >= sessions, 5,
             f"{sessions} TLS logins of {user} in Dovecot's log")
    # Exactly one TLS login per popgate session: none of them went in
    # plaintext (the other, plaintext logins are this test's bodies() calls).
    assert len(tls_logins(dv, user)) == sessions, all_logins(dv, user)


def test_getmail_has_no_stls(tmp_path, pki):
    with pytest.raises(ValueError, match="STLS"):
        download("getmail", NAME, 1, "u", "p", keep=True, workdir=tmp_path,
                 tls="starttls", cafile=pki.ca.cert)


# How each client reports a server certificate it cannot verify.
CERT_REFUSED = {
    "fetchmail": r"certificate verify failed[\s\S]*status=2 \(SOCKET\)",
    "getmail": r"CERTIFICATE_VERIFY_FAILED",
    "mpop": r"TLS certificate verification failed",
    "curl": r"curl: \(60\) SSL certificate problem",
    "poplib": r"SSLCertVerificationError",
}


def test_clients_verify_popgate_certificate(client_gateway, tls_dovecot, pki, tmp_path):
    """Trusting only an unrelated CA, every client refuses popgate's
    certificate before sending the password."""
    user = f"tls-verify-{client_gateway.upstream_mode}"
    tls_dovecot.add_user(user, PASSWORD)
    for mode, port in (("starttls", client_gateway.ports[0]),
                       ("implicit", client_gateway.ports[1])):
        for client in TLS_CLIENTS[mode]:
            assert_fails(client, "failed", CERT_REFUSED[client], lambda: download(
                client, NAME, port, user, PASSWORD, keep=True,
                workdir=tmp_path / f"{mode}-{client}", timeout=20, tls=mode,
                cafile=pki.other_ca.cert))
    assert popgate_logins(client_gateway, user) == 0
    assert f"user={user} " not in client_gateway.log_text()


# ------------------------------------------------ upstream verification

@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("case", ["unknown-ca", "wrong-name", "system-roots"])
def test_unverified_upstream_refuses_login(tls_dovecot, pki, mode, case):
    """Dovecot's certificate checked against a CA that did not sign it, or
    for another name, or against the system roots: the login answers
    -ERR [SYS/TEMP] and the password never reaches Dovecot."""
    dv = tls_dovecot
    user = f"tls-unverified-{mode}-{case}"
    dv.add_user(user, PASSWORD)
    ca, name = {
        "unknown-ca": (pki.other_ca.cert, None),
        "wrong-name": (pki.ca.cert, "imap.wrong.example"),
        "system-roots": (None, NAME),
    }[case]
    port, upstream = upstream_conf(dv, mode, ca, server_name=name)
    with Popgate(port, upstream_extra=upstream) as pg:
        with Pop3Raw(pg.port) as c:
            answer = c.login(user, PASSWORD)
            assert answer.startswith(b"-ERR [SYS/TEMP]"), answer
        log = pg.log_text()
    assert "upstream TLS handshake failed" in log
    assert ("UnknownIssuer" if case != "wrong-name" else "not valid for name") in log
    assert all_logins(dv, user) == [], "the password reached an unverified upstream"


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_dangerous_skip_verify_logs_in_and_warns(tls_dovecot, pki, mode):
    dv = tls_dovecot
    user = f"tls-skipverify-{mode}"
    dv.add_user(user, PASSWORD)
    dv.deliver(user, MESSAGES[0])
    # Trusting only the unrelated CA would fail; skipping verification does not.
    port, upstream = upstream_conf(dv, mode, pki.other_ca.cert, server_name="imap.wrong.example",
                                   skip_verify=True)
    with Popgate(port, upstream_extra=upstream) as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login(user, PASSWORD).startswith(b"+OK")
            assert c.answer("STAT").startswith(b"+OK 1 ")
            assert c.answer("QUIT").startswith(b"+OK")
        warnings = [l for l in pg.log_text().splitlines() if "dangerous_skip_verify" in l]
    assert warnings and all(" WARN " in l or " ERROR " in l for l in warnings), warnings
    assert "NOT verified" in warnings[0]
    wait_for(lambda: tls_logins(dv, user), 5, "a TLS login in Dovecot's log")


def test_upstream_without_starttls_is_not_used_in_plaintext(tls_dovecot, pki):
    """upstream.tls: starttls and a server (here: a proxy that strips the
    capability) that does not offer STARTTLS: no fallback to plaintext."""
    dv = tls_dovecot
    user = "tls-stripped-starttls"
    dv.add_user(user, PASSWORD)
    with ImapRelay(dv.imap_port, hide=("STARTTLS",)) as proxy:
        _, upstream = upstream_conf(dv, "starttls", pki.ca.cert)
        with Popgate(proxy.port, upstream_extra=upstream) as pg:
            with Pop3Raw(pg.port) as c:
                answer = c.login(user, PASSWORD)
                assert answer.startswith(b"-ERR [SYS/TEMP]"), answer
        assert not any(re.search(rb"^\S+ (LOGIN|AUTHENTICATE)", l, re.I) for l in proxy.seen), (
            "credentials sent over a plaintext link")
    assert all_logins(dv, user) == []


class FakeStarttlsImap:
    """A scripted IMAP server that offers STARTTLS and, with ``inject``,
    sends an extra response in the same packet as the OK to STARTTLS (the
    bytes an attacker on the path would add before the handshake).  After
    TLS it records every command and refuses any login."""

    def __init__(self, cert: certs.ServerCert, inject: bool) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert.chain, cert.key)
        self.inject = inject
        self.after_tls: list[bytes] = []
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            f = conn.makefile("rb")
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                tag, _, rest = line.partition(b" ")
                verb = rest.split()[0].upper() if rest.split() else b""
                if verb == b"STARTTLS":
                    break
                if verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n"
                                 + tag + b" OK done\r\n")
                else:
                    conn.sendall(tag + b" BAD STARTTLS first\r\n")
            ok = tag + b" OK Begin TLS negotiation now\r\n"
            if self.inject:
                ok += b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR injected\r\n"
            conn.sendall(ok)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            f = tls.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                self.after_tls.append(line)
                tag, _, rest = line.partition(b" ")
                verb = rest.split()[0].upper() if rest.split() else b""
                if verb == b"CAPABILITY":
                    tls.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n"
                                + tag + b" OK done\r\n")
                elif verb == b"LOGOUT":
                    tls.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                else:
                    tls.sendall(tag + b" NO [AUTHENTICATIONFAILED] no\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def logins(self) -> list[bytes]:
        return [l for l in self.after_tls
                if re.match(rb"\S+ (LOGIN|AUTHENTICATE)\b", l, re.I)]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("inject", [False, True], ids=["clean", "injected"])
def test_upstream_data_sent_before_the_handshake_is_refused(pki, inject):
    """The upstream side of the STLS injection: a response smuggled in
    behind the OK to STARTTLS must not be taken as part of the TLS session.
    The clean run shows that the fake server works (the login attempt
    arrives inside TLS and is refused)."""
    fake = FakeStarttlsImap(pki.dovecot, inject)
    try:
        upstream = f"  tls: starttls\n  ca_file: {_q(pki.ca.cert)}\n"
        with Popgate(fake.port, upstream_extra=upstream) as pg:
            with Pop3Raw(pg.port) as c:
                answer = c.login("someone", PASSWORD)
            log = pg.log_text()
        if inject:
            assert answer.startswith(b"-ERR [SYS/TEMP]"), answer
            assert fake.logins() == [], "popgate logged in after injected STARTTLS data"
            assert "data after STARTTLS" in log
        else:
            assert answer.startswith(b"-ERR [AUTH]"), answer
            assert len(fake.logins()) == 1, fake.after_tls
    finally:
        fake.close()


# ------------------------------------------------ 2. certificate reload

def _write_pair(dest_cert: str, dest_key: str, cert: certs.ServerCert) -> None:
    """Replaces both files by rename (each file changes atomically)."""
    chain, key = cert.pem()
    for path, data in ((dest_key, key), (dest_cert, chain)):
        tmp = path + ".new"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def _sees(port: int, pki, want: certs.ServerCert, stls: bool = False) -> bool:
    return peer_cert(port, pki, stls=stls) == want.der


def test_certificate_files_replaced_in_place(tls_dovecot, pki, tmp_path):
    """Writing new files over the configured paths changes the certificate
    of new connections within reload_interval, in the same process; a
    broken certificate file keeps the old one and logs the failure."""
    first, second = pki.popgate, pki.ca.issue("reload-b")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = str(live / "tls.crt"), str(live / "tls.key")
    _write_pair(cert, key, first)
    port, upstream = upstream_conf(tls_dovecot, "implicit", pki.ca.cert)
    with tls_gateway(port, cert=cert, key=key, reload_interval="200ms",
                     upstream=upstream, metrics=True) as pg:
        stls_port, pop3s_port = pg.ports
        pid = pg.proc.pid
        assert _sees(pop3s_port, pki, first) and _sees(stls_port, pki, first, stls=True)
        assert first.serial != second.serial

        _write_pair(cert, key, second)
        wait_for(lambda: _sees(pop3s_port, pki, second), 15, "the new certificate on POP3S")
        assert _sees(stls_port, pki, second, stls=True), "STLS still shows the old certificate"
        assert "certificate reloaded" in pg.log_text()
        assert metric(pg, "popgate_reloads_total", kind="certificate", result="ok") >= 1

        # A broken certificate: garbage where the PEM was.
        failures = pg.log_text().count("certificate reload failed")
        errors = metric(pg, "popgate_reloads_total", kind="certificate", result="error")
        with open(cert, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nthis is not base64 !!!\n"
                    b"-----END CERTIFICATE-----\n")
        wait_for(lambda: pg.log_text().count("certificate reload failed") > failures, 3,
                 '"certificate reload failed" in the log')
        assert metric(pg, "popgate_reloads_total", kind="certificate", result="error") > errors
        for _ in range(3):
            assert _sees(pop3s_port, pki, second), "a broken file replaced the certificate"
            time.sleep(0.1)
        assert _sees(stls_port, pki, second, stls=True)

        # A key that does not belong to the certificate is refused too.
        failures = pg.log_text().count("certificate reload failed")
        with open(cert, "wb") as f:
            f.write(first.pem()[0])  # key file still holds second's key
        wait_for(lambda: pg.log_text().count("certificate reload failed") > failures, 3,
                 "a failed reload of a mismatched pair")
        assert _sees(pop3s_port, pki, second)

        # Good files again: picked up.
        _write_pair(cert, key, first)
        wait_for(lambda: _sees(pop3s_port, pki, first), 3, "the restored certificate")

        # Sessions still work and the process never restarted.
        user = "tls-reload-inplace"
        tls_dovecot.add_user(user, PASSWORD)
        with pop3s(pop3s_port, pki) as c:
            assert c.login(user, PASSWORD).startswith(b"+OK")
        assert pg.proc.poll() is None and pg.proc.pid == pid


def test_certificate_swapped_through_symlinks(tls_dovecot, pki, tmp_path):
    """A Kubernetes Secret volume: tls.crt -> ..data/tls.crt, ..data ->
    ..<timestamp>; an update writes a new timestamped directory and renames
    a new ..data symlink over the old one."""
    first, second = pki.popgate, pki.ca.issue("reload-k8s")
    vol = tmp_path / "secret"
    vol.mkdir()

    def publish(cert: certs.ServerCert, stamp: str) -> None:
        d = vol / f"..{stamp}"
        d.mkdir()
        chain, key = cert.pem()
        (d / "tls.crt").write_bytes(chain)
        (d / "tls.key").write_bytes(key)
        (d / "tls.key").chmod(0o600)
        old = os.readlink(vol / "..data") if (vol / "..data").is_symlink() else None
        os.symlink(d.name, vol / "..data_tmp")
        os.replace(vol / "..data_tmp", vol / "..data")
        if old:
            shutil.rmtree(vol / old)

    publish(first, "2026_11_22_10_00_00.000000001")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", vol / name)
    port, upstream = upstream_conf(tls_dovecot, "implicit", pki.ca.cert)
    with tls_gateway(port, cert=str(vol / "tls.crt"), key=str(vol / "tls.key"),
                     reload_interval="250ms", upstream=upstream) as pg:
        stls_port, pop3s_port = pg.ports
        pid = pg.proc.pid
        assert _sees(pop3s_port, pki, first)
        publish(second, "2026_11_22_11_00_00.000000002")
        wait_for(lambda: _sees(pop3s_port, pki, second), 3, "the swapped-in certificate")
        assert _sees(stls_port, pki, second, stls=True)
        assert pg.proc.poll() is None and pg.proc.pid == pid
        assert "certificate reload failed" not in pg.log_text()


def test_zero_reload_interval_is_refused_naming_the_key(pki):
    """tls.reload_interval: 0s would disable reloading silently (a zero
    period cannot drive a timer): the configuration is refused, naming the
    key, and popgate does not start."""
    with pytest.raises(RuntimeError, match=r"tls\.reload_interval: must be at least 100ms"):
        tls_gateway(1, cert=pki.popgate.chain, key=pki.popgate.key,
                    listeners=("implicit",), reload_interval="0s")


# ------------------------------------------------ 3. STLS cannot be abused

def test_commands_pipelined_behind_stls_are_not_run_inside_tls(trusting_gateway, tls_dovecot, pki):
    user = "tls-pipelined"
    tls_dovecot.add_user(user, PASSWORD)
    stls_port = trusting_gateway.ports[0]
    with Pop3Raw(stls_port) as c:
        # STLS and USER in one write: STLS is refused, TLS never starts ...
        c.send(f"STLS\r\nUSER {user}\r\n")
        answer = c.line()
        assert answer.startswith(b"-ERR"), answer
        # ... and USER is answered in plaintext, on the plaintext stream.
        answer = c.line()
        assert answer.startswith(b"+OK"), answer
        caps = capa(c)
        assert b"STLS" in caps, "the connection should still be plaintext, offering STLS"
        # A clean STLS now works; the USER from before TLS is forgotten.
        starttls(c, pki)
        assert b"STLS" not in capa(c), "CAPA lists STLS inside TLS"
        answer = c.answer(f"PASS {PASSWORD}")
        assert answer.startswith(b"-ERR"), "PASS inside TLS used a USER sent before TLS"
        assert c.login(user, PASSWORD).startswith(b"+OK")
        assert c.answer("STLS").startswith(b"-ERR"), "a second STLS was accepted"
        assert c.answer("QUIT").startswith(b"+OK")


def test_pipelined_bytes_never_reach_the_tls_layer(trusting_gateway, pki):
    """The classic injection: the attacker appends a command to STLS in the
    same packet, hoping it is read as if it came through TLS.  Whatever the
    server does, the next thing it sends must be readable plaintext, and no
    TLS handshake may start on the tainted stream."""
    pg = trusting_gateway
    ok_before = metric(pg, "popgate_tls_handshakes_total", listener="starttls",
                       result="ok")
    with Pop3Raw(pg.ports[0]) as c:
        c.send("STLS\r\nCAPA\r\n")
        assert c.line().startswith(b"-ERR")
        rest = c.read_answer("CAPA")
        assert rest.startswith(b"+OK") and b"\r\nSTLS\r\n" in rest, rest
        assert c.answer("NOOP").startswith(b"+OK")
    assert metric(pg, "popgate_tls_handshakes_total", listener="starttls",
                  result="ok") == ok_before


def test_user_before_stls_is_forgotten(trusting_gateway, tls_dovecot, pki):
    """RFC 2595 section 4: USER given in plaintext (allowed: loopback is
    trusted here), then STLS, then PASS: the USER does not carry over."""
    user = "tls-forget-user"
    tls_dovecot.add_user(user, PASSWORD)
    with Pop3Raw(trusting_gateway.ports[0]) as c:
        assert c.answer(f"USER {user}").startswith(b"+OK")
        assert b"STLS" in capa(c)
        starttls(c, pki)
        caps = capa(c)
        assert b"STLS" not in caps and b"USER" in caps
        assert c.answer(f"PASS {PASSWORD}").startswith(b"-ERR")
        assert c.login(user, PASSWORD).startswith(b"+OK")
        assert c.answer("QUIT").startswith(b"+OK")
    assert popgate_logins(trusting_gateway, user) == 1


def test_only_tls_12_and_13_are_accepted(trusting_gateway, pki):
    port = trusting_gateway.ports[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        versions = [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1,
                    ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
    for version in versions:
        ctx = client_context(pki)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection((HOST, port), timeout=10) as s:
            if version >= ssl.TLSVersion.TLSv1_2:
                with ctx.wrap_socket(s, server_hostname=NAME) as t:
                    assert t.version() == version.name.replace("_", ".")
                    assert t.recv(100).startswith(b"+OK")
            else:
                with pytest.raises(ssl.SSLError):
                    ctx.wrap_socket(s, server_hostname=NAME)


def test_stls_not_offered_on_implicit_listener(trusting_gateway, pki):
    with pop3s(trusting_gateway.ports[1], pki) as c:
        assert b"STLS" not in capa(c)
        assert c.answer("STLS").startswith(b"-ERR")


# ------------------------------------------------ 4. the plaintext policy

@pytest.fixture(scope="module")
def strict_gateway(pki, tls_dovecot):
    port, upstream = upstream_conf(tls_dovecot, "starttls", pki.ca.cert)
    with tls_gateway(port, cert=pki.popgate.chain, key=pki.popgate.key, upstream=upstream,
                     extra="auth:\n  plaintext_networks: []\n") as pg:
        yield pg


def _auth_plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_plaintext_login_refused_and_not_advertised_from_untrusted(strict_gateway, tls_dovecot, pki):
    user = "tls-policy-strict"
    tls_dovecot.add_user(user, PASSWORD)
    with Pop3Raw(strict_gateway.ports[0]) as c:
        caps = capa(c)
        assert b"STLS" in caps
        assert not any(l == b"USER" or l.startswith(b"SASL") for l in caps), caps
        assert c.answer(f"USER {user}") == PLAINTEXT_REFUSED
        assert c.answer(f"PASS {PASSWORD}").startswith(b"-ERR")
        assert c.answer(f"AUTH PLAIN {_auth_plain(user, PASSWORD)}") == PLAINTEXT_REFUSED
        assert c.answer("AUTH LOGIN").startswith(b"-ERR [AUTH]")
        # After STLS: advertised and accepted.
        starttls(c, pki)
        caps = capa(c)
        assert b"USER" in caps and any(l.startswith(b"SASL ") and b"PLAIN" in l for l in caps), caps
        assert c.login(user, PASSWORD).startswith(b"+OK")
        assert c.answer("STAT").startswith(b"+OK 0 ")
        assert c.answer("QUIT").startswith(b"+OK")
    # SASL inside TLS works as well.
    with Pop3Raw(strict_gateway.ports[0]) as c:
        starttls(c, pki)
        assert c.answer(f"AUTH PLAIN {_auth_plain(user, PASSWORD)}").startswith(b"+OK")
        c.answer("QUIT")
    with pop3s(strict_gateway.ports[1], pki) as c:
        caps = capa(c)
        assert b"USER" in caps and b"STLS" not in caps
        assert c.login(user, PASSWORD).startswith(b"+OK")
        c.answer("QUIT")
    assert all_logins(tls_dovecot, user) and all(
        ", TLS, " in l for l in all_logins(tls_dovecot, user))


def test_plaintext_login_works_from_trusted_network(trusting_gateway, tls_dovecot):
    """Default policy: loopback is trusted; USER/PASS and SASL are
    advertised and accepted without TLS."""
    user = "tls-policy-trusted"
    tls_dovecot.add_user(user, PASSWORD)
    with Pop3Raw(trusting_gateway.ports[0]) as c:
        caps = capa(c)
        assert b"USER" in caps and b"STLS" in caps
        assert any(l.startswith(b"SASL ") and b"PLAIN" in l for l in caps), caps
        assert c.login(user, PASSWORD).startswith(b"+OK")
        # STLS belongs to the AUTHORIZATION state only (RFC 2595).
        assert b"STLS" not in capa(c)
        assert c.answer("STLS").startswith(b"-ERR")
        assert c.answer("STAT").startswith(b"+OK 0 ")
        c.answer("QUIT")
    with Pop3Raw(trusting_gateway.ports[0]) as c:
        assert c.answer(f"AUTH PLAIN {_auth_plain(user, PASSWORD)}").startswith(b"+OK")
        c.answer("QUIT")


# ------------------------------------------------ handshake failures counted

def test_failed_handshakes_are_counted(trusting_gateway, pki):
    pg = trusting_gateway
    stls_port, pop3s_port = pg.ports

    def count(port, result):
        name = "starttls" if port == stls_port else "implicit"
        return metric(pg, "popgate_tls_handshakes_total", listener=name, result=result)

    err_before, ok_before = count(pop3s_port, "error"), count(pop3s_port, "ok")
    # Plaintext POP3 on the POP3S port.
    with socket.create_connection((HOST, pop3s_port), timeout=10) as s:
        s.sendall(b"CAPA\r\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"+OK"), data
    wait_for(lambda: count(pop3s_port, "error") == err_before + 1, 5,
             "popgate_tls_handshakes_total{result=error} on the POP3S listener")
    # A client that distrusts the certificate aborts the handshake.
    bad = ssl.create_default_context(cafile=pki.other_ca.cert)
    with socket.create_connection((HOST, pop3s_port), timeout=10) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            bad.wrap_socket(s, server_hostname=NAME)
    wait_for(lambda: count(pop3s_port, "error") == err_before + 2, 5,
             "a second handshake error")
    peer_cert(pop3s_port, pki)
    wait_for(lambda: count(pop3s_port, "ok") == ok_before + 1, 5, "a good handshake counted")

    # After STLS, garbage instead of a ClientHello.
    serr = count(stls_port, "error")
    with Pop3Raw(stls_port) as c:
        assert c.answer("STLS").startswith(b"+OK")
        c.send(b"USER injected\r\n")
        assert c.closed(), "popgate kept the connection after a failed STLS handshake"
    wait_for(lambda: count(stls_port, "error") == serr + 1, 5,
             "a failed STLS handshake counted")


# ------------------------------------------------------------------ secrets in memory

def process_memory(pid: int) -> bytes:
    """Every writable mapping of ``pid`` (heap, anonymous memory, stacks),
    read through /proc: what a core dump or a memory-reading attacker would
    see."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("rw") or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            mem.seek(start)
            try:
                chunks.append(mem.read(end - start))
            except OSError:
                continue
    return b"".join(chunks)


def test_passwords_are_wiped_from_memory_after_the_session(pki, tls_dovecot):
    # POP3S in, IMAPS out: the password passes through both TLS stacks, the
    # POP3 line reader, the SASL decoder and the IMAP command builder.
    user, password = "heap-probe", f"Heap-Probe-{secrets.token_hex(8)}"
    tls_dovecot.add_user(user, password)
    plain = base64.b64encode(f"\0{user}\0{password}".encode())
    port, upstream = upstream_conf(tls_dovecot, "implicit", pki.ca.cert, server_name=NAME)
    with tls_gateway(port, cert=pki.popgate.chain, key=pki.popgate.key, upstream=upstream,
                     listeners=("implicit",), metrics=True) as pg:
        with pop3s(pg.ports[0], pki) as c:
            assert c.login(user, password).startswith(b"+OK"), "USER/PASS refused"
            assert c.answer("STAT").startswith(b"+OK")
            assert c.answer("QUIT").startswith(b"+OK")
        with pop3s(pg.ports[0], pki) as c:
            assert c.answer(f"AUTH PLAIN {plain.decode()}").startswith(b"+OK"), "AUTH PLAIN refused"
            assert c.answer("QUIT").startswith(b"+OK")

        def sessions_open() -> float:
            status, text = pg.http("/metrics")
            assert status == 200
            return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                       if l.startswith("popgate_sessions_open{"))
        wait_for(lambda: sessions_open() == 0, 10, "both sessions to end")
        memory = process_memory(pg.proc.pid)
        # The scan sees the heap: popgate's certificate, loaded at start, is
        # found.
        seen = pki.popgate.der in memory
        assert seen, "the scan does not see popgate's memory"
        for form in (password.encode(), plain):
            left = form in memory
            assert not left, f"{form!r} is still in popgate's memory"
