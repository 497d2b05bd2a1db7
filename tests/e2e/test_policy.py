"""RFC 2449's EXPIRE and LOGIN-DELAY (`policy`): announced in CAPA before
and after login, LOGIN-DELAY enforced per user (across instances on
Redis), EXPIRE removing retrieved messages past their time at QUIT."""

from __future__ import annotations

import time

import pytest

import folders
from corpus import simple_message
from pop3raw import Pop3Raw
from popgate import Popgate
from redisserver import RedisServer

POLICY = "policy:\n  expire: 30\n  login_delay: 15m\n"
DELAYED = b"-ERR [LOGIN-DELAY] "


def _capa(c) -> list[bytes]:
    return c.answer("CAPA").split(b"\r\n")[1:-2]


def test_capa_shows_expire_and_login_delay_before_and_after_login(dovecot, user):
    with Popgate(dovecot.imap_port, extra=POLICY) as pg, Pop3Raw(pg.port) as c:
        before = _capa(c)
        assert b"EXPIRE 30" in before and b"LOGIN-DELAY 900" in before
        assert c.login(user.name, user.password).startswith(b"+OK")
        after = _capa(c)
        assert b"EXPIRE 30" in after and b"LOGIN-DELAY 900" in after
    with Popgate(dovecot.imap_port) as pg, Pop3Raw(pg.port) as c:
        assert not any(line.startswith((b"EXPIRE", b"LOGIN-DELAY")) for line in _capa(c))


def test_login_delay_refuses_the_same_user_only(dovecot, user):
    other = f"{user.name}-other"
    dovecot.add_user(other, "pw2")
    with Popgate(dovecot.imap_port, extra="policy:\n  login_delay: 1h\n") as pg:
        # A wrong password books nothing: a stranger cannot lock the user out.
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, "wrong").startswith(b"-ERR [AUTH]")
        with user.pop3(pg.port) as c:
            assert c.answer("QUIT").startswith(b"+OK")
        with Pop3Raw(pg.port) as c:
            answer = c.login(user.name, user.password)
            assert answer.startswith(DELAYED), answer
        with Pop3Raw(pg.port) as c:
            assert c.login(other, "pw2").startswith(b"+OK")
    # Without the policy the same logins go through.
    with Popgate(dovecot.imap_port) as pg:
        for _ in range(2):
            with user.pop3(pg.port) as c:
                assert c.answer("QUIT").startswith(b"+OK")


def test_login_delay_counts_across_instances_on_redis(dovecot, user):
    with RedisServer() as r:
        extra = f'state:\n  redis:\n    url: "{r.url}"\npolicy:\n  login_delay: 1h\n'
        with Popgate(dovecot.imap_port, extra=extra) as a, Popgate(dovecot.imap_port, extra=extra) as b:
            with user.pop3(a.port) as c:
                assert c.answer("QUIT").startswith(b"+OK")
            with Pop3Raw(b.port) as c:
                assert c.login(user.name, user.password).startswith(DELAYED)
            booked = r.keys("popgate:login-delay:*")
            assert booked, "the booking is in Redis"
            assert not any(user.name in k for k in booked), "the key names the user by digest"


@pytest.mark.parametrize("action", ["expunge", "move"])
def test_expire_removes_retrieved_messages_past_their_days(dovecot, user, action):
    day = 86400
    old = [simple_message(i) for i in (1, 2)]
    for raw in old:
        folders.append(dovecot, user.name, "INBOX", raw, when=time.time() - 40 * day)
    user.deliver(simple_message(3))
    uids = user.uids()
    extra = f"policy:\n  expire: 30\ndelete:\n  action: {action}\n"
    with Popgate(dovecot.imap_port, extra=extra) as pg, user.pop3(pg.port) as c:
        assert c.answer("RETR 1").startswith(b"+OK")  # old, retrieved: removed
        assert c.answer("RETR 3").startswith(b"+OK")  # new, retrieved: kept
        assert c.answer("TOP 2 0").startswith(b"+OK")  # old, not retrieved: kept
        assert c.answer("QUIT") == b"+OK Logging out, messages %s.\r\n" % (
            b"deleted" if action == "expunge" else b"moved")
        assert "removing retrieved messages past EXPIRE" in pg.log_text()
    assert user.uids() == uids[1:]
    assert "\\Seen" in user.dv.flags(user.name)[uids[2]]
    if action == "move":
        assert len(folders.contents(dovecot, user.name, "Trash")) == 1


def test_expire_zero_removes_every_retrieved_message(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    uids = user.uids()
    with Popgate(dovecot.imap_port, extra="policy:\n  expire: 0\n") as pg, user.pop3(pg.port) as c:
        assert b"EXPIRE 0" in _capa(c)
        assert c.answer("RETR 2").startswith(b"+OK")
        assert c.answer("QUIT").startswith(b"+OK")
    assert user.uids() == [uids[0], uids[2]]


def test_bad_policy_names_the_key(dovecot):
    for text, key in (("policy:\n  login_delay: 1500ms\n", "policy.login_delay"),
                      ("policy:\n  expire: -1\n", "policy.expire")):
        pg = Popgate(dovecot.imap_port, extra=text, start=False)
        try:
            with pytest.raises(RuntimeError) as e:
                pg.start()
            assert key in str(e.value)
        finally:
            pg.cleanup()
