"""Routing by login name to several backends: by domain (with the domain
stripped or kept) and by the SDPS forms user@NAME / user+NAME."""

from __future__ import annotations

import pytest

from corpus import simple_message
from dovecot import Dovecot
from pop3raw import Pop3Raw
from popgate import Popgate


@pytest.fixture(scope="module")
def east():
    with Dovecot(users={"bob": "bob pw", "carol": "carol pw"}) as dv:
        yield dv


@pytest.fixture(scope="module")
def routed(dovecot, east):
    dovecot.add_user("alice", "alice pw")
    dovecot.add_user("dave@keep.example", "dave pw")
    # The fixture may be set up again in a shuffled run: top up, never add.
    for dv, user, n in [(dovecot, "alice", 1), (east, "bob", 2), (east, "carol", 3), (dovecot, "dave@keep.example", 4)]:
        for i in range(len(dv.uids(user)), n):
            dv.deliver(user, simple_message(100 + i))
    extra = (
        "upstreams:\n"
        "  east:\n"
        f'    address: "127.0.0.1:{east.imap_port}"\n'
        "    max_connections: 50\n"
        "routing:\n"
        "  sdps: true\n"
        "  domains:\n"
        "    example.org:\n"
        "      upstream: east\n"
        "      strip_domain: true\n"
        "    keep.example:\n"
        "      upstream: default\n"
    )
    with Popgate(dovecot.imap_port, extra=extra, metrics=True) as pg:
        yield pg


@pytest.mark.parametrize(
    "login,password,count,route",
    [
        ("alice", "alice pw", 1, "default"),
        ("bob@example.org", "bob pw", 2, "east"),  # domain, stripped
        ("carol+east", "carol pw", 3, "east"),  # SDPS
        ("carol@east", "carol pw", 3, "east"),  # SDPS
        ("dave@keep.example", "dave pw", 4, "default"),  # domain kept
    ],
)
def test_logins_reach_their_backend(routed, login, password, count, route):
    with Pop3Raw(routed.port) as c:
        answer = c.login(login, password)
        assert answer.startswith(b"+OK"), answer
        assert c.answer("STAT").startswith(f"+OK {count} ".encode())
        c.answer("QUIT")
    assert f'user={login} mechanism="USER" route={route}' in routed.log_text()


def test_routes_have_their_own_metrics(routed):
    with Pop3Raw(routed.port) as c:
        assert c.login("bob@example.org", "bob pw").startswith(b"+OK")
        c.answer("QUIT")
    _, text = routed.http("/metrics")
    assert 'popgate_upstream_login_duration_seconds_count{route="east"}' in text
    assert 'popgate_upstream_up{route="east"} 1' in text  # checked in the background too


def test_backend_connection_limit(dovecot, east):
    extra = (
        "upstreams:\n"
        "  east:\n"
        f'    address: "127.0.0.1:{east.imap_port}"\n'
        "    max_connections: 1\n"
        "    health_check_interval: 1h\n"
        "routing:\n"
        "  sdps: true\n"
    )
    with Popgate(dovecot.imap_port, extra=extra) as pg:
        import time

        time.sleep(0.5)  # let the first health check release its connection
        with Pop3Raw(pg.port) as a, Pop3Raw(pg.port) as b:
            assert a.login("bob+east", "bob pw").startswith(b"+OK")
            assert b.login("carol+east", "carol pw").startswith(b"-ERR [SYS/TEMP]")
            assert "upstream connection limit reached" in pg.log_text()
