"""The invariants that protect users' mail: nothing is removed before QUIT,
only what this session deleted is removed, numbers stay put."""

from __future__ import annotations

import signal

from corpus import simple_message
from polling import upstream_session_ended, wait_for
from popgate import Popgate



def test_dele_then_dropped_connection_removes_nothing(gateway, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    c = user.pop3(gateway.port)
    assert c.answer("DELE 1").startswith(b"+OK")
    assert c.answer("DELE 2").startswith(b"+OK")
    assert c.answer("RETR 3").startswith(b"+OK")
    c.close()
    wait_for(lambda: upstream_session_ended(user.dv, user.name), 10, "the upstream session to end")
    assert user.uids() == before
    flags = user.dv.flags(user.name)
    assert not any("\\Deleted" in f or "\\Seen" in f for f in flags.values()), flags


def test_dele_rset_quit_removes_nothing(gateway, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    c = user.pop3(gateway.port)
    c.answer("DELE 1")
    c.answer("DELE 3")
    assert c.answer("STAT").startswith(b"+OK 1 ")
    assert c.answer("RSET").startswith(b"+OK")
    assert c.answer("STAT").startswith(b"+OK 3 ")
    assert c.answer("QUIT").startswith(b"+OK")
    assert user.uids() == before


def test_quit_removes_exactly_the_deleted_and_marks_retrieved_seen(gateway, user):
    user.deliver(*(simple_message(i) for i in range(4)))
    uids = user.uids()
    c = user.pop3(gateway.port)
    c.answer("RETR 1")
    c.answer("TOP 2 0")
    c.answer("RETR 3")
    c.answer("DELE 3")
    assert c.answer("QUIT").startswith(b"+OK")
    assert user.uids() == [uids[0], uids[1], uids[3]]
    flags = user.dv.flags(user.name)
    assert "\\Seen" in flags[uids[0]]
    assert "\\Seen" not in flags[uids[1]]  # TOP does not mark
    assert "\\Seen" not in flags[uids[3]]


def test_mark_seen_can_be_turned_off(dovecot, user):
    user.deliver(simple_message(1))
    with Popgate(dovecot.imap_port, extra="session:\n  mark_seen: false\n") as pg:
        c = user.pop3(pg.port)
        c.answer("RETR 1")
        assert c.answer("QUIT").startswith(b"+OK")
    assert "\\Seen" not in user.dv.flags(user.name)[user.uids()[0]]


def test_other_clients_deleted_flags_survive_our_quit(gateway, user):
    user.deliver(*(simple_message(i) for i in range(4)))
    u = user.uids()
    # Flagged before our login: hidden from POP3, and never expunged by us.
    user.dv.set_flags(user.name, u[0], "\\Deleted")
    c = user.pop3(gateway.port)
    assert c.answer("STAT").startswith(b"+OK 3 ")
    # Flagged by another client during our session.
    user.dv.set_flags(user.name, u[3], "\\Deleted")
    assert c.answer("DELE 1").startswith(b"+OK")  # that is u[1]
    assert c.answer("QUIT").startswith(b"+OK")
    assert user.uids() == [u[0], u[2], u[3]]


def test_message_expunged_elsewhere_answers_err_only_for_itself(gateway, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    c = user.pop3(gateway.port)
    uidls = c.answer("UIDL")
    user.dv.expunge_uid(user.name, u[1])
    # UIDLs do not move within the session, the expunged one included.
    assert c.answer("UIDL") == uidls
    # RETR 1 fetches ahead across the gap; the batch must not shift bodies.
    assert b"Message 0" in c.answer("RETR 1")
    assert c.answer("RETR 2").startswith(b"-ERR")
    assert c.answer("TOP 2 0").startswith(b"-ERR")
    # Numbers do not move: message 3 is still message 3.
    assert b"Message 2" in c.answer("RETR 3")
    assert c.answer("STAT").startswith(b"+OK 3 ")
    assert c.answer("DELE 3").startswith(b"+OK")
    assert c.answer("QUIT").startswith(b"+OK")
    assert user.uids() == [u[0]]
    # The next session lists the survivor under the UIDL it had.
    with user.pop3(gateway.port) as again:
        first = uidls.split(b"\r\n")[1]
        assert again.answer("UIDL") == b"+OK\r\n" + first + b"\r\n.\r\n"


def test_mail_delivered_mid_session_waits_for_the_next_one(gateway, user):
    user.deliver(simple_message(1))
    c = user.pop3(gateway.port)
    user.deliver(simple_message(2))
    assert c.answer("STAT").startswith(b"+OK 1 ")
    assert c.answer("RETR 2").startswith(b"-ERR")
    c.answer("QUIT")
    c = user.pop3(gateway.port)
    assert c.answer("STAT").startswith(b"+OK 2 ")
    c.answer("QUIT")


def test_shutdown_mid_session_removes_nothing(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    pg = Popgate(dovecot.imap_port, extra="shutdown:\n  drain_timeout: 1s\n")
    try:
        c = user.pop3(pg.port)
        c.answer("DELE 1")
        c.answer("DELE 2")
        pg.signal(signal.SIGTERM)
        assert pg.wait(30) == 0
        assert c.closed()
        assert b"BYE" not in c.buf
    finally:
        pg.stop()
    assert user.uids() == before
    flags = user.dv.flags(user.name)
    assert not any("\\Deleted" in f or "\\Seen" in f for f in flags.values()), flags
    assert "drain time over" in pg.log_text()
