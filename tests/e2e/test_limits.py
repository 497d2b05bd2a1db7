"""The real client address (PROXY protocol, forwarded with IMAP ID) and the
abuse limits: failed-login penalty, attempts per connection, connections per
address, sessions per user, login timeout."""

from __future__ import annotations

import socket
import time

from corpus import simple_message
from polling import wait_for
from pop3raw import Pop3Raw, from_address, proxy_v2
from popgate import Popgate

PENALTY = "  auth_penalty_max: 4s\n  connections_per_ip: 0\n  auth_failures_per_connection: 10\n"


def timed_login(c: Pop3Raw, user: str, password: str) -> tuple[bytes, float]:
    start = time.monotonic()
    answer = c.login(user, password)
    return answer, time.monotonic() - start


def test_failed_logins_slow_down_per_address_and_user_but_not_good_logins(dovecot, user):
    other = "limits-other"
    dovecot.add_user(other, "right")
    with Popgate(dovecot.imap_port, limits=PENALTY, metrics=True) as pg:
        attacker = from_address(pg.port, "127.0.0.5")
        times = []
        for _ in range(3):
            answer, took = timed_login(attacker, user.name, "wrong")
            assert answer.startswith(b"-ERR [AUTH] Authentication failed.")
            times.append(took)
        # Each attempt waits before it is checked: nothing, 1 s, 2 s.
        assert times[2] >= times[0] + 1.5, times
        # An unknown user gets the same answer, delayed the same way.
        answer, took = timed_login(attacker, "no-such-user", "wrong")
        assert answer == b"-ERR [AUTH] Authentication failed.\r\n"
        assert took >= 3.5, took  # after the address's third failure: capped at 4 s
        # A correct login of another user from another address is not held up.
        good = from_address(pg.port, "127.0.0.6")
        answer, took = timed_login(good, other, "right")
        assert answer.startswith(b"+OK")
        assert took < times[2], (took, times)
        # The user under attack is slowed from a fresh address too.
        answer, _ = timed_login(attacker, user.name, "wrong again")
        assert answer.startswith(b"-ERR [AUTH]")
        elsewhere = from_address(pg.port, "127.0.0.7")
        answer, took = timed_login(elsewhere, user.name, "still wrong")
        assert answer.startswith(b"-ERR [AUTH]")
        assert took >= 3.0, took  # the user's 4 s step, less what has passed
        _, text = pg.http("/metrics")
        assert 'popgate_auth_throttled_total{kind="ip"}' in text
        assert 'popgate_auth_throttled_total{kind="user"}' in text
        for c in (attacker, good, elsewhere):
            c.close()


def test_attempts_per_connection_are_capped(dovecot, user):
    with Popgate(dovecot.imap_port, limits="  auth_penalty_max: 0s\n  auth_failures_per_connection: 2\n") as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, "a").startswith(b"-ERR [AUTH]")
            assert c.login(user.name, "b").startswith(b"-ERR [AUTH]")
            assert c.closed()


def test_connections_per_address_make_room_and_sessions_per_user(dovecot, user):
    """An address at its limit of connections not logged in: the newcomer
    is greeted and the oldest such connection closed; logged-in sessions
    do not count; another address is unaffected."""
    limits = "  auth_penalty_max: 0s\n  connections_per_ip: 2\n  sessions_per_user: 1\n"
    with Popgate(dovecot.imap_port, limits=limits) as pg:
        a, b = from_address(pg.port, "127.0.0.8"), from_address(pg.port, "127.0.0.8")
        assert a.greeting.startswith(b"+OK") and b.greeting.startswith(b"+OK")
        c = from_address(pg.port, "127.0.0.8")
        assert c.greeting.startswith(b"+OK"), c.greeting
        assert a.closed(timeout=10), "the oldest connection made room"
        assert b.answer("NOOP").startswith(b"+OK"), "only the oldest was closed"
        d = from_address(pg.port, "127.0.0.9")  # other addresses are unaffected
        assert d.greeting.startswith(b"+OK")
        # b logs in: it no longer counts, so two more may wait beside it.
        assert b.login(user.name, user.password).startswith(b"+OK")
        e = from_address(pg.port, "127.0.0.8")
        assert e.greeting.startswith(b"+OK")
        assert c.answer("NOOP").startswith(b"+OK"), "a login made room without closing anyone"
        assert b.answer("STAT").startswith(b"+OK"), "a logged-in session is never closed for room"
        # One session per user.
        assert d.login(user.name, user.password).startswith(b"-ERR [IN-USE]")
        b.answer("QUIT")
        b.close()
        assert d.login(user.name, user.password).startswith(b"+OK")
        assert pg.log_text().count("closed to make room") == 1
        for x in (a, c, d, e):
            x.close()


def test_idle_connections_from_an_address_do_not_keep_its_users_out(dovecot, user):
    """With the shipped defaults, 30 idle connections from one address (an
    attacker's, or a NAT's other customers') do not stop a login from it."""
    user.deliver(simple_message(1))
    with Popgate(dovecot.imap_port, limits="") as pg:
        idle = [from_address(pg.port, "127.0.0.11") for _ in range(30)]
        assert all(c.greeting.startswith(b"+OK") for c in idle)
        c = from_address(pg.port, "127.0.0.11")
        assert c.greeting.startswith(b"+OK")
        assert c.login(user.name, user.password).startswith(b"+OK")
        assert c.answer("STAT").startswith(b"+OK 1 ")
        c.answer("QUIT")
        for x in idle + [c]:
            x.close()


def test_login_timeout_closes_idle_unauthenticated_connections(dovecot):
    with Popgate(dovecot.imap_port, limits="  auth_penalty_max: 0s\n  login_timeout: 1s\n") as pg:
        with Pop3Raw(pg.port) as c:
            assert c.answer("NOOP").startswith(b"+OK")
            assert c.closed(timeout=10)
            assert b"No login within the time allowed" in c.buf


def proxy_gateway(dovecot, trusted: str, limits: str = "") -> Popgate:
    # The clients come from public addresses now: allow their passwords.
    auth = 'auth:\n  plaintext_networks: ["0.0.0.0/0"]\n'
    pg = Popgate(dovecot.imap_port, start=False, extra=auth, **({"limits": limits} if limits else {}))
    with open(pg.config_path) as f:
        cfg = f.read()
    cfg = cfg.replace(
        'address: "127.0.0.1:0"\n',
        f'address: "127.0.0.1:0"\n    proxy_protocol: true\n    proxy_trusted: ["{trusted}"]\n',
        1,
    )
    with open(pg.config_path, "w") as f:
        f.write(cfg)
    return pg.start()


def test_proxy_header_from_trusted_balancer_reaches_dovecot(dovecot, user):
    user.deliver(simple_message(1))
    with proxy_gateway(dovecot, "127.0.0.1/32") as pg:
        for header, ip in [
            (proxy_v2("203.0.113.7", 40001), "203.0.113.7"),
            (b"PROXY TCP4 198.51.100.23 127.0.0.1 40002 110\r\n", "198.51.100.23"),
        ]:
            s = socket.create_connection(("127.0.0.1", pg.port), timeout=10)
            s.sendall(header)
            c = Pop3Raw.__new__(Pop3Raw)
            c.sock, c.buf = s, b""
            assert c.line().startswith(b"+OK")
            assert c.login(user.name, user.password).startswith(b"+OK")
            c.answer("QUIT")
            c.close()
            assert f"client={ip}:" in pg.log_text()
            wait_for(lambda: f"rip={ip}" in dovecot.log_text(), 5, "Dovecot to log the original address")


def test_proxy_header_from_untrusted_peer_is_refused(dovecot, user):
    with proxy_gateway(dovecot, "10.0.0.0/8") as pg:
        s = socket.create_connection(("127.0.0.1", pg.port), timeout=10)
        s.sendall(proxy_v2("203.0.113.99", 40003))
        try:
            assert s.recv(100) == b""  # closed without a greeting
        except ConnectionResetError:
            pass  # closed with the header unread
        s.close()
        assert "203.0.113.99" not in dovecot.log_text()
        assert "refused on a PROXY-protocol listener" in pg.log_text()


def test_connections_per_address_count_the_proxied_client_not_the_balancer(dovecot, user):
    limits = "  auth_penalty_max: 0s\n  connections_per_ip: 1\n"
    with proxy_gateway(dovecot, "127.0.0.1/32", limits) as pg:
        def via_balancer(client_ip: str, port: int) -> Pop3Raw:
            s = socket.create_connection(("127.0.0.1", pg.port), timeout=10)
            s.sendall(proxy_v2(client_ip, port))
            c = Pop3Raw.__new__(Pop3Raw)
            c.sock, c.buf = s, b""
            return c

        first = via_balancer("203.0.113.7", 40001)
        assert first.line().startswith(b"+OK")
        # Another client behind the same balancer has an allowance of its own.
        other = via_balancer("198.51.100.23", 40002)
        assert other.line().startswith(b"+OK")
        # The first client again is at its limit: its oldest connection
        # makes room, the other client's stays.
        again = via_balancer("203.0.113.7", 40003)
        assert again.line().startswith(b"+OK")
        assert first.closed(timeout=30)
        assert other.answer("NOOP").startswith(b"+OK")
        for c in (first, other, again):
            c.close()
