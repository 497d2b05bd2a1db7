"""Upstream behaviour a healthy Dovecot never shows, injected with a proxy:
a refused removal at QUIT, and servers without UIDPLUS or SASL-IR."""

from __future__ import annotations

import pytest

from corpus import simple_message
from faulty import FaultyProxy
from pop3raw import Pop3Raw
from popgate import Popgate



def test_refused_removal_makes_quit_fail(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    with FaultyProxy(dovecot.imap_port, refuse=r"^UID STORE .*\\Deleted") as proxy:
        with Popgate(proxy.port) as pg, user.pop3(pg.port) as c:
            c.answer("DELE 2")
            assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
        assert proxy.refused
    assert user.uids() == before


def test_refused_expunge_takes_our_flags_back_for_the_next_session(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    with FaultyProxy(dovecot.imap_port, refuse=r"^UID EXPUNGE") as proxy:
        with Popgate(proxy.port) as pg:
            with user.pop3(pg.port) as c:
                c.answer("DELE 2")
                assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
            assert proxy.refused
            assert user.uids() == before
            assert not any("\\Deleted" in f for f in user.dv.flags(user.name).values())
            with user.pop3(pg.port) as c:
                assert c.answer("STAT").startswith(b"+OK 3 ")


def test_without_uidplus_only_our_messages_are_expunged(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    with FaultyProxy(dovecot.imap_port, hide=("UIDPLUS",)) as proxy:
        with Popgate(proxy.port) as pg, user.pop3(pg.port) as c:
            c.answer("DELE 1")
            assert c.answer("QUIT").startswith(b"+OK")
        sent = b"".join(proxy.seen)
        assert b"UID EXPUNGE" not in sent and b" EXPUNGE\r\n" in sent
    assert user.uids() == u[1:]


def test_without_uidplus_other_deleted_flags_block_the_expunge(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    with FaultyProxy(dovecot.imap_port, hide=("UIDPLUS",)) as proxy:
        with Popgate(proxy.port) as pg:
            with user.pop3(pg.port) as c:
                user.dv.set_flags(user.name, u[2], "\\Deleted")  # another client
                c.answer("DELE 1")
                # QUIT says the removal did not happen, and it did not.
                assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
            assert b" EXPUNGE\r\n" not in b"".join(proxy.seen)
            assert user.uids() == u
            assert "\\Deleted" not in user.dv.flags(user.name)[u[0]], "our flag was taken back"
            # The next session still sees the message and may delete it again.
            with user.pop3(pg.port) as c:
                assert c.answer("STAT").startswith(b"+OK 2 ")


@pytest.mark.parametrize("hidden", [("SASL-IR",), ("AUTH=PLAIN",), ("AUTH=PLAIN", "LITERAL+")])
def test_login_fallbacks_carry_any_password(dovecot, hidden):
    name = "fallback-" + "-".join(h.lower().replace("=", "").replace("+", "plus") for h in hidden)
    password = 'ütf8 "quoted" \\ {3}'
    dovecot.add_user(name, password)
    dovecot.deliver(name, simple_message(1))
    with FaultyProxy(dovecot.imap_port, hide=hidden) as proxy:
        with Popgate(proxy.port) as pg, Pop3Raw(pg.port) as c:
            assert c.login(name, password).startswith(b"+OK")
            assert c.answer("STAT").startswith(b"+OK 1 ")
        sent = b"".join(proxy.seen)
        if "AUTH=PLAIN" in hidden:
            assert b" LOGIN " in sent
            assert (b"+}" in sent) == ("LITERAL+" not in hidden)
        else:
            assert b"AUTHENTICATE PLAIN\r\n" in sent
