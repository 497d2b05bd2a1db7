"""What a login meets before its credentials are checked, against the real
Dovecot: per-user session slots counted only for proven users, the
failed-login penalty waited out before the check (per network and per
canonical user, parallel guesses queued), names fit to send upstream and
to log, no client-named master user, one login deadline, digest logins
only under TLS, and client addresses as IPv4 when they are."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import threading
import time


from pop3raw import Pop3Raw, from_address
from popgate import Popgate


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def metric(pg: Popgate, series: str) -> float:
    _, text = pg.http("/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def test_wrong_passwords_neither_take_a_users_slot_nor_tell_it_is_in_use(dovecot, user):
    with Popgate(dovecot.imap_port, limits="  auth_penalty_max: 0s\n  sessions_per_user: 1\n  auth_failures_per_connection: 10\n") as pg:
        owner = from_address(pg.port, "127.0.0.2")
        assert owner.login(user.name, user.password).startswith(b"+OK")
        # A stranger hears what it hears for any wrong password: no [IN-USE].
        stranger = from_address(pg.port, "127.0.0.3")
        assert stranger.login(user.name, "wrong").startswith(b"-ERR [AUTH] Authentication failed.")
        # The user, proven, is told the mailbox is in use.
        second = from_address(pg.port, "127.0.0.4")
        assert second.login(user.name, user.password).startswith(b"-ERR [IN-USE]")
        owner.answer("QUIT")
        # Wrong passwords in flight take no slot: the user still gets in.
        for _ in range(3):
            assert stranger.login(user.name, "wrong").startswith(b"-ERR [AUTH]")
            with from_address(pg.port, "127.0.0.5") as c:
                assert c.login(user.name, user.password).startswith(b"+OK")
                c.answer("QUIT")
        for c in (owner, stranger, second):
            c.close()


GUESSING = ("  auth_penalty_max: 2s\n  connections_per_ip: 0\n"
            "  auth_failures_per_connection: 1000\n")
WINDOW = 12.0


def guess(port: int, source: str, name: str, until: float, checked: list[float]) -> None:
    """Wrong passwords from `source` until `until`; notes when the ones
    checked (answered [AUTH]) were answered in `checked`."""
    c = from_address(port, source)
    n = 0
    try:
        while time.monotonic() < until:
            n += 1
            answer = c.login(name, f"guess-{source}-{n}")
            if answer.startswith(b"-ERR [AUTH]"):
                checked.append(time.monotonic())
            elif answer.startswith(b"-ERR [SYS/TEMP]"):
                time.sleep(0.2)  # the queue is full; a polite client backs off
            else:
                raise AssertionError(answer)
    finally:
        c.close()


def test_guessing_from_eight_addresses_runs_at_one_users_rate(dovecot, user):
    with Popgate(dovecot.imap_port, limits=GUESSING, metrics=True) as pg:
        checked: list[float] = []
        until = time.monotonic() + WINDOW
        threads = [threading.Thread(target=guess, args=(pg.port, f"127.0.1.{i}", user.name, until, checked))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # At most four attempts at one user are in flight, so the first
        # burst is four at most; after that one check per 2 s at most,
        # whatever the number of addresses (a slow machine checks fewer,
        # never more). Without the queue each address has its own pace and
        # about 40 are checked. Attempts queued at the end are answered
        # after the window and not counted.
        in_window = [t for t in checked if t <= until]
        assert len(in_window) <= 4 + WINDOW / 2 + 2, len(in_window)
        assert "login held back" in pg.log_text()
        assert metric(pg, 'popgate_auth_throttled_total{kind="user"}') > 0

        # A correct password from a new address waits out the penalty.
        with from_address(pg.port, "127.0.1.9") as guesser:
            assert guesser.login(user.name, "one more").startswith(b"-ERR [AUTH]")
        with from_address(pg.port, "127.0.1.20") as real:
            start = time.monotonic()
            assert real.login(user.name, user.password).startswith(b"+OK")
            assert time.monotonic() - start >= 1.0  # the 2 s step, less what has passed
            real.answer("QUIT")
        # From there, the user's own address skips the user's queue.
        with from_address(pg.port, "127.0.1.9") as guesser:
            assert guesser.login(user.name, "and more").startswith(b"-ERR [AUTH]")
        held = metric(pg, 'popgate_auth_throttled_total{kind="user"}')
        with from_address(pg.port, "127.0.1.20") as real:
            assert real.login(user.name, user.password).startswith(b"+OK")
            real.answer("QUIT")
        assert metric(pg, 'popgate_auth_throttled_total{kind="user"}') == held


def test_spellings_of_one_user_share_the_penalty(dovecot, user):
    routing = (f'upstreams:\n  east:\n    address: "127.0.0.1:{dovecot.imap_port}"\n'
               "routing:\n  sdps: true\n  domains:\n    dom.example:\n      upstream: default\n"
               "      strip_domain: true\n")
    limits = "  auth_penalty_max: 4s\n  connections_per_ip: 0\n"
    with Popgate(dovecot.imap_port, limits=limits, extra=routing) as pg:
        spellings = [f"{user.name}*master", f"{user.name}+east", f"{user.name.upper()}@dom.example"]
        for i, name in enumerate(spellings):
            with from_address(pg.port, f"127.0.2.{i + 1}") as c:
                assert c.login(name, "wrong").startswith(b"-ERR [AUTH]")
        # Three failures of one user: the fourth attempt, from a fresh
        # address and with the right password, waits the 4 s step first.
        with from_address(pg.port, "127.0.2.9") as c:
            start = time.monotonic()
            assert c.login(user.name, user.password).startswith(b"+OK")
            assert time.monotonic() - start >= 3.0
            c.answer("QUIT")


def bridged_config(dovecot, user, tmp_path, networks: str | None = None) -> str:
    """An auth section with a credentials file (the user's POP3 password
    is "pop-secret") and Dovecot's master user; `networks` sets
    plaintext_networks."""
    creds = tmp_path / "credentials"
    creds.write_text(f"{user.name}:pop-secret\n")
    master = tmp_path / "master"
    master.write_text(dovecot.master_password + "\n")
    creds.chmod(0o600)
    master.chmod(0o600)
    return ("auth:\n" + (f"  plaintext_networks: {networks}\n" if networks is not None else "")
            + f"  credentials_file: {creds}\n"
            f"  master_user: {dovecot.master_user}\n  master_password_file: {master}\n")


def test_unfit_names_are_refused_before_anything_goes_upstream_or_to_the_log(dovecot, user, tmp_path):
    extra = bridged_config(dovecot, user, tmp_path)
    forged = "FORGED logged in user=admin"
    long_name = "n" * 300
    with Popgate(dovecot.imap_port, extra=extra) as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login(long_name, "pw").startswith(b"-ERR [AUTH]")
            # AUTH PLAIN and LOGIN with a line feed in the name.
            plain = b64(f"\0x\n{forged}\0pw")
            assert c.answer(f"AUTH PLAIN {plain}").startswith(b"-ERR [AUTH]")
        with Pop3Raw(pg.port) as c:
            assert c.answer("AUTH LOGIN").startswith(b"+ ")
            assert c.answer(b64(f"y\r\n{forged}")).startswith(b"+ ")
            assert c.answer(b64("pw")).startswith(b"-ERR [AUTH]")
            # CRAM-MD5 with an escape sequence and a line feed.
            challenge = c.answer("AUTH CRAM-MD5")
            assert challenge.startswith(b"+ ")
            ch = base64.b64decode(challenge[2:].strip())
            digest = hmac.new(b"pop-secret", ch, hashlib.md5).hexdigest()
            assert c.answer(b64(f"z\x1b[2J\n{forged} {digest}")).startswith(b"-ERR [AUTH]")
        with Pop3Raw(pg.port) as c:
            stamp = re.search(rb"<[^>]+>", c.greeting).group(0)
            digest = hashlib.md5(stamp + b"pop-secret").hexdigest()
            assert c.answer(f"APOP w\x1b[2JFORGED {digest}").startswith(b"-ERR [AUTH]")
        log = pg.log_text()
        assert "FORGED" not in log and "\x1b" not in log and long_name not in log
        assert long_name not in dovecot.log_text()


def test_clients_cannot_name_the_master_user(dovecot, user):
    master, secret = dovecot.master_user, dovecot.master_password
    as_master = b64(f"{user.name}\0{master}\0{secret}")
    with Popgate(dovecot.imap_port) as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login(f"{user.name}*{master}", secret).startswith(b"-ERR [AUTH]")
            assert c.answer(f"AUTH PLAIN {as_master}").startswith(b"-ERR [AUTH]")
        assert "master user named by the client" in pg.log_text()
    # The key that allows them, for a deployment that wants them.
    with Popgate(dovecot.imap_port, extra="auth:\n  client_master_login: true\n") as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login(f"{user.name}*{master}", secret).startswith(b"+OK")
            c.answer("QUIT")
        with Pop3Raw(pg.port) as c:
            assert c.answer(f"AUTH PLAIN {as_master}").startswith(b"+OK")
            c.answer("QUIT")


def test_the_login_deadline_covers_sasl_exchanges(dovecot):
    limits = "  auth_penalty_max: 0s\n  login_timeout: 2s\n"
    with Popgate(dovecot.imap_port, limits=limits, extra="session:\n  idle_timeout: 120s\n") as pg:
        with Pop3Raw(pg.port) as c:
            assert c.answer("AUTH LOGIN").startswith(b"+ ")
            # Silent inside the exchange: closed at the login deadline, not
            # after the idle timeout.
            assert c.closed(timeout=30)
            assert b"No login within the time allowed" in c.buf


def test_digest_logins_are_offered_only_under_tls_or_to_trusted_networks(dovecot, user, tmp_path):
    with Popgate(dovecot.imap_port, extra=bridged_config(dovecot, user, tmp_path, "[]")) as pg:
        with Pop3Raw(pg.port) as c:
            assert b"<" not in c.greeting, c.greeting  # no APOP timestamp
            assert b"CRAM-MD5" not in c.answer("CAPA")
            assert b"CRAM-MD5" not in c.answer("AUTH")
            assert c.answer(f"APOP {user.name} {'0' * 32}").startswith(b"-ERR [AUTH] Plaintext")
            assert c.answer("AUTH CRAM-MD5").startswith(b"-ERR")
    with Popgate(dovecot.imap_port, extra=bridged_config(dovecot, user, tmp_path, '["127.0.0.0/8"]')) as pg:
        with Pop3Raw(pg.port) as c:
            assert b"<" in c.greeting
            assert b"CRAM-MD5" in c.answer("CAPA")


def listening_on(pg: Popgate, address: str, proxy: str = "") -> Popgate:
    with open(pg.config_path) as f:
        cfg = f.read()
    cfg = cfg.replace('address: "127.0.0.1:0"\n', f'address: "{address}"\n{proxy}', 1)
    with open(pg.config_path, "w") as f:
        f.write(cfg)
    return pg.start()


def test_ipv4_clients_of_a_dual_stack_listener_count_as_ipv4(dovecot, user):
    # Default plaintext_networks: 127.0.0.0/8 and ::1.
    with listening_on(Popgate(dovecot.imap_port, start=False), "[::]:0") as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, user.password).startswith(b"+OK")
            c.answer("QUIT")
        assert "client=127.0.0.1:" in pg.log_text()
    # An IPv4 balancer of a dual-stack PROXY listener is in proxy_trusted.
    proxy = '    proxy_protocol: true\n    proxy_trusted: ["127.0.0.1/32"]\n'
    with listening_on(Popgate(dovecot.imap_port, start=False), "[::]:0", proxy) as pg:
        with socket.create_connection(("127.0.0.1", pg.port), timeout=10) as s:
            s.sendall(b"PROXY TCP4 198.51.100.23 127.0.0.1 40002 110\r\n")
            assert s.recv(100).startswith(b"+OK")
        assert "refused on a PROXY-protocol listener" not in pg.log_text()


def test_proxy_header_without_a_client_is_not_trusted_with_plaintext(dovecot, user):
    proxy = '    proxy_protocol: true\n    proxy_trusted: ["127.0.0.1/32"]\n'
    v2_local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])
    with listening_on(Popgate(dovecot.imap_port, start=False), "127.0.0.1:0", proxy) as pg:
        for header in (b"PROXY UNKNOWN\r\n", v2_local, b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 110\r\n"):
            s = socket.create_connection(("127.0.0.1", pg.port), timeout=10)
            s.sendall(header)
            c = Pop3Raw.__new__(Pop3Raw)
            c.sock, c.buf = s, b""
            assert c.line().startswith(b"+OK")
            # The balancer is on loopback, a trusted network; the client is
            # unknown or public: no password in the clear.
            assert c.answer(f"USER {user.name}").startswith(b"-ERR [AUTH] Plaintext"), header
            c.close()
