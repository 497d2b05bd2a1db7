"""README guarantees that a plausible change to popgate could break without
any other test noticing: an idle timeout changes nothing, TOP never marks a
message seen, and the plaintext policy judges the client's address from the
PROXY header, not the load balancer's."""

from __future__ import annotations

import socket

from corpus import simple_message
from polling import upstream_session_ended, wait_for
from pop3raw import Pop3Raw, proxy_v2
from popgate import Popgate


def test_idle_timeout_in_transaction_applies_nothing(dovecot, user):
    user.deliver(simple_message(1), simple_message(2), simple_message(3))
    before = user.uids()
    with Popgate(dovecot.imap_port, extra="session:\n  idle_timeout: 1s\n") as pg:
        c = user.pop3(pg.port)
        assert c.answer("RETR 1").startswith(b"+OK")
        assert c.answer("DELE 2").startswith(b"+OK")
        assert c.answer("DELE 3").startswith(b"+OK")
        assert c.closed(timeout=30), "the idle session was not closed"
        wait_for(lambda: "session closed" in pg.log_text(), 10, "popgate to close the session")
        wait_for(lambda: upstream_session_ended(dovecot, user.name), 10, "the upstream session to end")
    assert user.uids() == before
    flags = dovecot.flags(user.name)
    assert all("\\Deleted" not in f for f in flags.values()), flags
    assert all("\\Seen" not in f for f in flags.values()), flags


def test_top_never_marks_seen_while_retr_does(dovecot, gateway, user):
    user.deliver(simple_message(1), simple_message(2), simple_message(3))
    uids = user.uids()
    with user.pop3(gateway.port) as c:
        assert c.answer("TOP 1 5").startswith(b"+OK")
        assert c.answer("TOP 2 0").startswith(b"+OK")
        assert c.answer("RETR 3").startswith(b"+OK")
        assert c.answer("QUIT").startswith(b"+OK")
    wait_for(lambda: upstream_session_ended(dovecot, user.name), 10, "the upstream session to end")
    flags = dovecot.flags(user.name)
    assert "\\Seen" not in flags[uids[0]], flags
    assert "\\Seen" not in flags[uids[1]], flags
    assert "\\Seen" in flags[uids[2]], flags


def proxied_gateway(dovecot) -> Popgate:
    """A PROXY-protocol listener behind a balancer on loopback, with
    plaintext passwords allowed from loopback clients only."""
    pg = Popgate(
        dovecot.imap_port,
        start=False,
        extra='auth:\n  plaintext_networks: ["127.0.0.0/8"]\n',
    )
    with open(pg.config_path) as f:
        cfg = f.read()
    cfg = cfg.replace(
        'address: "127.0.0.1:0"\n',
        'address: "127.0.0.1:0"\n    proxy_protocol: true\n    proxy_trusted: ["127.0.0.0/8"]\n',
        1,
    )
    with open(pg.config_path, "w") as f:
        f.write(cfg)
    return pg.start()


def via_balancer(port: int, client_ip: str) -> Pop3Raw:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(proxy_v2(client_ip, 40100))
    c = Pop3Raw.__new__(Pop3Raw)
    c.sock, c.buf = s, b""
    assert c.line().startswith(b"+OK")
    return c


def test_plaintext_policy_judges_the_proxied_client_not_the_balancer(dovecot, user):
    with proxied_gateway(dovecot) as pg:
        # An internet client behind a balancer on loopback: no plaintext
        # password, and USER is not advertised.
        with via_balancer(pg.port, "203.0.113.7") as c:
            capa = c.answer("CAPA")
            assert b"\r\nUSER\r\n" not in capa, capa
            answer = c.answer(f"USER {user.name}")
            assert answer.startswith(b"-ERR"), answer
            assert user.password.encode() not in c.buf
        # A client inside plaintext_networks, behind the same balancer.
        with via_balancer(pg.port, "127.0.0.77") as c:
            assert b"\r\nUSER\r\n" in c.answer("CAPA")
            assert c.login(user.name, user.password).startswith(b"+OK")
            assert c.answer("QUIT").startswith(b"+OK")
