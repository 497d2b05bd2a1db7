"""Other IMAP clients, and other POP3 sessions of the same user, act on the
mailbox while a session runs: expunges, \\Deleted set by others, flag
changes, APPEND. popgate removes exactly what its client deleted, keeps
everyone else's flags, and answers -ERR only for what is really gone."""

from __future__ import annotations

import pytest

from corpus import simple_message
from faultkit import Pop3Wire, deleted, finished, state
from popgate import Popgate


@pytest.fixture
def pg(dovecot):
    """A gateway per test: a session left open by a failed test cannot
    hold up the next one."""
    with Popgate(dovecot.imap_port, metrics=True) as gateway:
        yield gateway


def three(user):
    user.deliver(*(simple_message(i) for i in range(3)))
    st = state(user.dv, user.name)
    return st, sorted(st)


def quit_(pg, c: Pop3Wire, others: int = 0) -> bytes:
    reply = c.cmd("QUIT")
    finished(pg, c.port, others)
    return reply


def session(pg, user) -> Pop3Wire:
    c = Pop3Wire(pg.port)
    c.login(user.name, user.password)
    return c


def test_message_we_deleted_expunged_by_another_client(pg, user):
    before, u = three(user)
    c = session(pg, user)
    assert c.cmd("DELE 2").startswith(b"+OK")
    user.dv.expunge_uid(user.name, u[1])
    assert quit_(pg, c).startswith(b"+OK")
    assert state(user.dv, user.name) == {u[0]: before[u[0]], u[2]: before[u[2]]}


def test_deleted_flag_set_by_another_client_mid_session_is_theirs(pg, user):
    before, u = three(user)
    c = session(pg, user)
    user.dv.set_flags(user.name, u[0], "\\Deleted")
    # Still there: RETR works, and our QUIT neither expunges nor unflags it.
    assert c.retr(1) == before[u[0]][1]
    assert c.cmd("DELE 3").startswith(b"+OK")
    assert quit_(pg, c).startswith(b"+OK")
    after = state(user.dv, user.name)
    assert sorted(after) == u[:2]
    assert after[u[0]][0] == {"\\Deleted", "\\Seen"}
    assert after[u[1]] == before[u[1]]


def test_deleted_by_another_client_and_by_us_is_removed_once(pg, user):
    before, u = three(user)
    c = session(pg, user)
    user.dv.set_flags(user.name, u[1], "\\Deleted")
    assert c.cmd("DELE 2").startswith(b"+OK")
    assert quit_(pg, c).startswith(b"+OK")
    assert state(user.dv, user.name) == {u[0]: before[u[0]], u[2]: before[u[2]]}


def test_flags_changed_by_others_are_kept(pg, user):
    before, u = three(user)
    user.dv.set_flags(user.name, u[2], "\\Seen")
    c = session(pg, user)
    user.dv.set_flags(user.name, u[0], "\\Flagged \\Answered $Label1")
    user.dv.set_flags(user.name, u[2], "\\Seen", op="-")  # unread again
    assert c.retr(1) == before[u[0]][1]
    assert c.cmd("TOP 2 0").startswith(b"+OK")
    c.skip_body()
    assert quit_(pg, c).startswith(b"+OK")
    after = state(user.dv, user.name)
    assert after[u[0]][0] == {"\\Flagged", "\\Answered", "$Label1", "\\Seen"}
    assert after[u[1]] == before[u[1]]  # TOP marks nothing
    assert after[u[2]][0] == frozenset()  # their change stands
    assert all(after[x][1] == before[x][1] for x in u)


def test_seen_removed_by_another_client_after_our_retr_is_set_again(pg, user):
    before, u = three(user)
    c = session(pg, user)
    assert c.retr(2) == before[u[1]][1]
    user.dv.set_flags(user.name, u[1], "\\Seen", op="-")
    assert quit_(pg, c).startswith(b"+OK")
    assert state(user.dv, user.name)[u[1]][0] == {"\\Seen"}


def test_append_mid_session_is_left_for_the_next_session(pg, user):
    before, u = three(user)
    c = session(pg, user)
    user.dv.append(user.name, simple_message(9))
    assert c.cmd("STAT").startswith(b"+OK 3 ")
    assert c.retr(4) is None
    assert c.cmd("DELE 1").startswith(b"+OK")
    assert quit_(pg, c).startswith(b"+OK")
    after = state(user.dv, user.name)
    (new,) = set(after) - set(u)
    assert after[new][0] == frozenset() and b"Message 9" in after[new][1]
    assert sorted(after) == [u[1], u[2], new]
    c = session(pg, user)
    assert c.cmd("STAT").startswith(b"+OK 3 ")
    assert b"Message 9" in c.retr(3)
    c.cmd("RSET")
    quit_(pg, c)


def test_two_sessions_delete_the_same_message(pg, user):
    before, u = three(user)
    a, b = session(pg, user), session(pg, user)
    assert a.cmd("DELE 2").startswith(b"+OK")
    assert b.cmd("DELE 2").startswith(b"+OK")
    assert quit_(pg, a, others=1).startswith(b"+OK")
    assert quit_(pg, b).startswith(b"+OK")
    assert state(user.dv, user.name) == {u[0]: before[u[0]], u[2]: before[u[2]]}


def test_two_sessions_delete_different_messages(pg, user):
    before, u = three(user)
    a, b = session(pg, user), session(pg, user)
    assert a.cmd("DELE 1").startswith(b"+OK")
    assert b.cmd("DELE 3").startswith(b"+OK")
    assert b.cmd("RETR 2").startswith(b"+OK")
    b.skip_body()
    assert quit_(pg, b, others=1).startswith(b"+OK")
    assert quit_(pg, a).startswith(b"+OK")
    after = state(user.dv, user.name)
    assert after == {u[1]: (frozenset({"\\Seen"}), before[u[1]][1])}


def test_message_removed_by_another_pop3_session(pg, user):
    before, u = three(user)
    b = session(pg, user)
    a = session(pg, user)
    assert a.cmd("DELE 1").startswith(b"+OK")
    assert quit_(pg, a, others=1).startswith(b"+OK")
    # b still numbers the messages as at its login.
    assert b.retr(1) is None
    assert b.retr(3) == before[u[2]][1]
    assert b.cmd("STAT").startswith(b"+OK 3 ")
    # Deleting what is already gone is harmless, and QUIT still succeeds.
    assert b.cmd("DELE 1").startswith(b"+OK")
    assert quit_(pg, b).startswith(b"+OK")
    after = state(user.dv, user.name)
    assert sorted(after) == u[1:]
    assert after[u[1]] == before[u[1]]
    assert after[u[2]][0] == {"\\Seen"}


def test_everything_expunged_by_another_client(pg, user):
    before, u = three(user)
    c = session(pg, user)
    for uid in u:
        user.dv.expunge_uid(user.name, uid)
    assert c.retr(2) is None
    for n in (1, 2, 3):
        c.cmd(f"DELE {n}")
    assert quit_(pg, c).startswith(b"+OK")
    assert state(user.dv, user.name) == {}


def test_expunge_inside_a_fetched_batch(pg, user):
    """RETR 1 fetches ahead; another client expunges message 2 meanwhile.
    RETR 2 gives the right body or -ERR, never another message's body."""
    before, u = three(user)
    c = session(pg, user)
    assert c.retr(1) == before[u[0]][1]
    user.dv.expunge_uid(user.name, u[1])
    assert c.retr(2) in (None, before[u[1]][1])
    assert c.retr(3) == before[u[2]][1]
    assert c.cmd("DELE 3").startswith(b"+OK")
    assert quit_(pg, c).startswith(b"+OK")
    after = state(user.dv, user.name)
    assert after == {u[0]: (frozenset({"\\Seen"}), before[u[0]][1])}
    assert deleted(after) == []
